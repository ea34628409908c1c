"""The GPU checks of issue 6, in one script: no host sync per step, the benchmark, the paper protocol's time.

Usage (on a machine with CUDA, after `make setup data`):
    .venv/bin/python scripts/gpu_check.py [--steps 100] [--full]

1. Every method steps 25 seeds on setting (a) with device='cuda' under
   torch.cuda.set_sync_debug_mode('error'): any operation that waits for the GPU (a .item(), a
   blocking copy, a data-dependent shape) raises, so a pass means no CPU round trip per step.
2. `python -m metaguard_nb.bench --device cuda` -> outputs/bench_cuda.json (ours and the reference).
3. The paper protocol of panel (c) (25 seeds x 2,000 steps x 6 methods): each method runs --steps
   steps through runner.run (evaluations every 10 steps included) and the time is projected to
   2,000 steps; --full runs the whole panel instead (make figure1 SETTING=c PRESET=paper DEVICE=cuda).
Everything it measures is printed and written to outputs/gpu_check.json.
"""
import argparse, json, subprocess, sys, tempfile, time
from pathlib import Path

import torch

from metaguard_nb.guards import METHODS, GuardConfig, get_method, init_state, step_batches
from metaguard_nb.runner import make_problem, paper_methods, run, setting_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def no_sync_check(method, S=25, steps=3):
    p = make_problem('a', list(range(S)), 'cuda', setting_checkpoint('a'))
    step, cfg, st = get_method(method).step, GuardConfig(), init_state(method, p.eta0, p.theta)

    def one(st):
        return step(cfg, p.lstm_cfg, p.optimizee, st, step_batches(p.inner, p.evals, cfg.T))[0]
    for _ in range(2): st = one(st)  # compilation happens here, outside the check
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode('error')
    try:
        t0 = time.perf_counter()
        for _ in range(steps): st = one(st)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    torch.cuda.synchronize()
    return (time.perf_counter() - t0)/steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=100, help='steps per method for the projection of the paper protocol')
    ap.add_argument('--full', action='store_true', help='run the whole paper-protocol panel (c) instead')
    a = ap.parse_args()
    if not torch.cuda.is_available(): sys.exit('error: no CUDA device here: run this script on a GPU machine')
    out = {'gpu': torch.cuda.get_device_name(), 'torch': torch.__version__, 'no_sync': {}, 'paper_panel_c': {}}
    for m in METHODS:
        try: out['no_sync'][m] = dict(ok=True, seconds_per_step=no_sync_check(m))
        except RuntimeError as e: out['no_sync'][m] = dict(ok=False, error=str(e).splitlines()[0])
        print('no-sync', m, out['no_sync'][m], flush=True)
    subprocess.run([sys.executable, '-m', 'metaguard_nb.bench', '--device', 'cuda', '--out',
                    str(ROOT/'outputs'/'bench_cuda.json')], check=False)
    if a.full:
        t0 = time.perf_counter()
        subprocess.run(['make', 'figure1', 'SETTING=c', 'PRESET=paper', 'DEVICE=cuda'], cwd=ROOT, check=True)
        out['paper_panel_c'] = {'measured_minutes': (time.perf_counter() - t0)/60}
    else:
        total = 0.0
        for m in paper_methods():
            with tempfile.TemporaryDirectory() as store:
                t0 = time.perf_counter()
                run(m, 'c', steps=a.steps, seeds=range(25), device='cuda', store=store, progress=False)
                s = time.perf_counter() - t0
            out['paper_panel_c'][m] = dict(steps=a.steps, seconds=s, projected_minutes_2000_steps=s*2000/a.steps/60)
            total += s*2000/a.steps/60
            print('paper protocol (c)', m, out['paper_panel_c'][m], flush=True)
        out['paper_panel_c']['projected_minutes_total'] = total
    (ROOT/'outputs'/'gpu_check.json').write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))
    if not all(v['ok'] for v in out['no_sync'].values()): sys.exit('error: a method waits for the GPU within a step')


if __name__ == '__main__':
    main()
