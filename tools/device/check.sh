#!/usr/bin/env bash
# The one prepared run on a lent GPU machine (one NVIDIA H200, 16 cores): the GPU-resident chain (issue 18), the
# streams and pinned-buffer overlap check (issue 18), the GPU kernel checks, then the many-core scaling benchmark
# (meshaios at 1, 4 and 8 nodes against Dask at the same sizes). Prepare here, run there:
#
#   bash tools/device/wheels.sh                                     # here: .whl/ with what the image lacks
#   device run: command "bash tools/device/check.sh chain overlap gpu sched", carry [".whl"], timeout_s 560
#   (steps: chain, overlap, gpu, sched, scaling; none named: all five, about 820 s -- more than one device call
#   may take)
#
# Results land in $OUT (the device tool brings them back): chain.json/chain.log from tools/gpu_check.py
# --chain-only (N = 4096 and 2048), overlap.json/overlap.log from tools/gpu_check.py --overlap-only (N = 4096, 16
# tasks, on 1 and 2 slots), gpu.json/gpu.log from tools/gpu_check.py, sched.log from tools/sched_bench.py --devices
# --real-gpu (issue 18: device choices in the per-task timeline) and scaling.json/scaling.log from
# tools/bench/run.py --sizes 1,4,8. Each step has its own time limit so that one that hangs cannot cost the other.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-/tmp/meshaios-device}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1
python3 - <<'PY' 2>&1 | tee "$OUT/env.log"
import cupy, dask, distributed, numpy, river, zeroconf, zmq
print(f"cupy {cupy.__version__} ({cupy.cuda.runtime.getDeviceCount()} GPU), numpy {numpy.__version__}, "
      f"pyzmq {zmq.__version__}, river {river.__version__}, dask {dask.__version__}")
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee -a "$OUT/env.log"
STEPS="${*:-chain overlap gpu sched scaling}"
if [[ " $STEPS " == *" chain "* ]]; then
    timeout 150 python3 tools/gpu_check.py --chain-only --chain 4096,2048 --json "$OUT/chain.json" 2>&1 \
        | tee "$OUT/chain.log"
    echo "chain exit: ${PIPESTATUS[0]}"
fi
if [[ " $STEPS " == *" overlap "* ]]; then
    timeout 60 python3 tools/gpu_check.py --overlap-only --overlap 4096,16 --json "$OUT/overlap.json" 2>&1 \
        | tee "$OUT/overlap.log"
    echo "overlap exit: ${PIPESTATUS[0]}"
fi
if [[ " $STEPS " == *" gpu "* ]]; then
    timeout 200 python3 tools/gpu_check.py --chain 0 --overlap 0 --json "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu.log"
    echo "gpu_check exit: ${PIPESTATUS[0]}"
fi
if [[ " $STEPS " == *" sched "* ]]; then
    timeout 120 python3 tools/sched_bench.py --devices --real-gpu --n 4096 2>&1 | tee "$OUT/sched.log"
    echo "sched_bench exit: ${PIPESTATUS[0]}"
fi
if [[ " $STEPS " == *" scaling "* ]]; then
    timeout 320 python3 tools/bench/run.py --no-sandbox --sizes 1,4,8 --repeat 1 \
        --only meshaios,dask,dask-tuned,noop,latency,dag,shuffle --json "$OUT/scaling.json" 2>&1 | tee "$OUT/scaling.log"
    echo "scaling exit: ${PIPESTATUS[0]}"
fi
