# seconds per step of the guards on CUDA at S = 25, panel c, eager and compiled, one process alone on the GPU
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
