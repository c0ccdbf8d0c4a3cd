#!/usr/bin/env bash
# Creates the benchmark's own environment, .bench-venv/ at the repository root: meshaios (editable) plus the
# peers it is measured against. Dask and Ray live here only -- never in meshaios's own dependencies.
#
#   bash tools/bench/setup.sh            # then: .bench-venv/bin/python tools/bench/run.py --quick
#
# PYTHON=python3.11 picks the interpreter; BENCH_VENV=path puts the environment elsewhere.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
VENV="${BENCH_VENV:-.bench-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e .
"$VENV/bin/python" -m pip install -q "dask[distributed]" ray numpy pyzmq msgpack uvloop psutil py-spy
"$VENV/bin/python" - <<'PY'
import dask, distributed, msgpack, numpy, psutil, ray, zmq
import meshaios
print(f"bench env ready: numpy {numpy.__version__}, pyzmq {zmq.__version__} / libzmq {zmq.zmq_version()}, "
      f"msgpack {'.'.join(map(str, msgpack.version))}, dask {dask.__version__}, distributed {distributed.__version__}, "
      f"ray {ray.__version__}, psutil {psutil.__version__}, meshaios from {meshaios.__file__}")
PY
