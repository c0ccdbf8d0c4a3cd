#!/usr/bin/env bash
# Here, before a device run: downloads into .whl/ (ignored by git) the wheels the GPU machine's image lacks, for
# its Python 3.12 on x86-64: meshaios's own dependencies that are not there, and Dask for the scaling comparison.
# (Ray's wheel alone is larger than what may travel to the device, so the scaling run compares with Dask only.)
#
#   bash tools/device/wheels.sh        # then: device run "bash tools/device/check.sh", carry [".whl"]
#
# meshaios itself runs there from the tree (PYTHONPATH) as pure Python: its mypyc-compiled modules (*.so, built for
# this box's Python by `pip install -e .`) are ignored by git and do not travel (docs/guide.md, "Compiled modules").
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p .whl
PLAT=()
for n in 2_28 2_27 2_24 2_17 2_5; do PLAT+=(--platform "manylinux_${n}_x86_64"); done
PLAT+=(--platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
# meshaios's dependencies absent from the image (numpy, scipy, pandas, msgpack, uvloop, cloudpickle, rich are there)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
    -d .whl pyzmq==27.3.0 river==0.26.1 zeroconf==0.154.0 ifaddr==0.2.0
# Dask distributed and what it needs beyond the image (toolz, cloudpickle, fsspec, pyyaml, click, jinja2, psutil,
# sortedcontainers, packaging, urllib3 are there)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${PLAT[@]}" \
    -d .whl dask distributed partd locket tblib zict tornado
du -sh .whl
ls .whl
