"""Seconds per step on CUDA at S = 25 seeds, panel (c), eager and compiled LSTM step, one process alone on the GPU.

    python scripts/gpu_time_step.py OUT.json      (on a CUDA machine; set up as scripts/device_grid.sh does)

Each method runs 10 steps (warm-up and compilation), then 110 steps with evaluations only at the ends;
the second time over 110 is the rate. Measured on an H200 on 2026-11-29: outputs/gpu_time_step.json.
"""
import json, sys, time, torch
from metaguard_nb.guards import GuardConfig
from metaguard_nb.runner import run
out = {}
for comp in (False, True):
    for m in ('amg', 'smg', 'lgl2o', 'sgd'):
        g = GuardConfig(compile=comp)
        t0 = time.perf_counter(); run(m, 'c', steps=10, seeds=range(25), device='cuda', store=False, progress=False, guard=g); warm = time.perf_counter() - t0
        t0 = time.perf_counter(); run(m, 'c', steps=110, seeds=range(25), device='cuda', store=False, progress=False, guard=g, eval_every=110, test_every=None); s = time.perf_counter() - t0
        out[f"{m} {'compiled' if comp else 'eager'}"] = dict(first_10_steps_s=round(warm, 2), s_per_step=round(s/110, 4))
        print(m, comp, out[f"{m} {'compiled' if comp else 'eager'}"], flush=True)
        json.dump(out, open(sys.argv[1], 'w'), indent=1)
