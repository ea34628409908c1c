#!/usr/bin/env bash
# The paper protocol's grid on a lent GPU machine, in one prepared call (issue 13, item 3).
#
#   [SETTINGS="c a d b"] [METHODS="sgd ... safe_amg"] [WORKERS=14] bash scripts/device_grid.sh SECONDS [OUT]
#
# run in the repository root of a machine with CUDA whose python3 has PyTorch but neither our venv nor a
# network. What the image lacks travels with the call: .whl/ (the wheels of dask, distributed, fastcore,
# fastprogress and their missing dependencies) and .gpu/data/ (both datasets' IDX files, gzipped).
# fastprogress 1.1.6 imports fasthtml for its notebook bar only; a console run gets an empty stand-in.
# Both folders are ignored by git; they were made on a machine with the project's venv and data:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux1_x86_64 -d .whl \
#     dask==2026.8.0 distributed==2026.8.0 fastcore==1.14.5 fastprogress==1.1.6 locket==1.0.0 partd==1.4.2 \
#     tblib==3.2.2 zict==3.0.0 tornado==6.6.1
#   for d in MNIST FashionMNIST; do mkdir -p .gpu/data/$d/raw; for f in data/$d/raw/*; do gzip -c $f > .gpu/$f.gz; done; done
#
# 1. a smoke test: every method, 3 steps, 2 seeds, panels c and b, store=False: a method that fails
#    here is left out of the grid (one failing task would stop the grid);
# 2. `python -m metaguard_nb.grid --device cuda` over every panel and method, 25 seeds per task (one
#    vmapped call), stopped after SECONDS in all; each task writes its seeds to outputs/results when it
#    finishes (the store keys device='cuda' apart from the CPU seeds);
# 3. OUT/results.tgz: the seed files this call wrote; OUT/partial.tgz: unfinished runs' resume files
#    (they show how far each got); OUT/grid.log.
set -u
T=${1:-480}; OUT=${2:-${OUT:-/tmp/device_out}}; START=$(date +%s)
mkdir -p "$OUT"
# the eager LSTM step: the committed GPU seeds are eager, and a panel is read from one source
export PYTHONUNBUFFERED=1 METAGUARD_COMPILE=${METAGUARD_COMPILE:-0} PYTHONPATH=$PWD:/tmp/site
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  python3 -c 'import fasthtml' 2>/dev/null || { mkdir -p /tmp/site/fasthtml; touch /tmp/site/fasthtml/__init__.py /tmp/site/fasthtml/common.py; }
fi
if [ -d .gpu/data ]; then
  (cd .gpu && find data -name '*.gz') | while read -r f; do mkdir -p "$(dirname "$f")"; gunzip -c ".gpu/$f" > "${f%.gz}"; done
fi
touch /tmp/device_grid.start
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 - ${METHODS:-} <<'EOF' 2>&1 | tee "$OUT/smoke.log"
import sys, time, traceback, torch
from metaguard_nb.grid import GRID_METHODS
from metaguard_nb.runner import run
print('torch', torch.__version__, torch.cuda.get_device_name())
ok = []
for m in sys.argv[1:] or GRID_METHODS:
    try:
        for s in 'cb':
            t0 = time.perf_counter(); r = run(m, s, steps=3, seeds=range(2), device='cuda', store=False, progress=False)
            print(f'smoke {m} {s}: loss {r["record"][:, -1, 1].tolist()} in {time.perf_counter() - t0:.1f} s', flush=True)
        ok.append(m)
    except Exception: traceback.print_exc()
open('/tmp/device_grid.methods', 'w').write(' '.join(ok))
EOF
METHODS=$(cat /tmp/device_grid.methods 2>/dev/null)
[ -n "$METHODS" ] || { echo "no method passed the smoke test"; exit 1; }
LEFT=$(( T - ($(date +%s) - START) ))
echo "grid: methods $METHODS, $LEFT s left"
timeout -s INT -k 20 $LEFT python3 -m metaguard_nb.grid --device cuda --shard 25 --workers ${WORKERS:-14} --threads 1 \
  --settings ${SETTINGS:-c a d b} --methods $METHODS 2>&1 | tee "$OUT/grid.log"
find outputs/results -newer /tmp/device_grid.start -type f ! -path '*/partial/*' | tar czf "$OUT/results.tgz" -T -
find outputs/results/partial -newer /tmp/device_grid.start -type f 2>/dev/null | tar czf "$OUT/partial.tgz" -T -
tar tzf "$OUT/results.tgz" | grep -c npz; echo "done in $(( $(date +%s) - START )) s"
