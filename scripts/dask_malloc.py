"""Seconds per AMG step in a Dask worker, with and without Dask's memory trimming, against a plain process.

    python scripts/dask_malloc.py            (CPU; about 2 minutes on 2 cores)

Each layout runs two processes of one torch thread at once (the grid's default), each with 5 seeds of the
CNN problem (panel c's), one untimed step (compilation) and 8 timed ones; it prints the median per process.
  plain          spawned processes, the environment as it is
  plain+trim     spawned processes started with MALLOC_TRIM_THRESHOLD_=65536 (what a Dask nanny sets)
  dask           two LocalCluster workers, Dask's defaults
  dask+undone    the same, each calling grid.malloc_as_usual first (what grid.run_task does)
Measured on 2026-11-30 (nbs/03d_grid, "One task, on a worker"): 1.24 / 2.65 / 2.97 / 1.30 s (first process).
"""
import json, os, sys, time

def steps(undo:bool, threads:int=1, S:int=5, n:int=8) -> float:
    import torch
    from metaguard_nb.grid import malloc_as_usual
    from metaguard_nb.guards import GuardConfig, get_method, init_state
    from metaguard_nb.reference import BENCH_SETTINGS, bench_batches
    from metaguard_nb.runner import make_problem, setting_checkpoint
    if undo: malloc_as_usual()
    torch.set_num_threads(threads)
    p = make_problem(BENCH_SETTINGS['cnn'], list(range(S)), 'cpu', setting_checkpoint(BENCH_SETTINGS['cnn']))
    bs = bench_batches(p, n + 1)
    step, st, cfg = get_method('amg').step, init_state('amg', p.eta0, p.theta), GuardConfig()
    st, _ = step(cfg, p.lstm_cfg, p.optimizee, st, bs[0])
    ts = []
    for b in bs[1:]:
        t0 = time.perf_counter(); st, _ = step(cfg, p.lstm_cfg, p.optimizee, st, b); ts.append(time.perf_counter() - t0)
    return round(sorted(ts)[len(ts)//2], 3)

def plain(trim:bool) -> list:
    import multiprocessing as mp
    before = os.environ.pop('MALLOC_TRIM_THRESHOLD_', None)  # the spawned children read it at their start
    if trim: os.environ['MALLOC_TRIM_THRESHOLD_'] = '65536'
    try:
        with mp.get_context('spawn').Pool(2) as pool: return pool.map(steps, [False, False])
    finally:
        os.environ.pop('MALLOC_TRIM_THRESHOLD_', None)
        if before is not None: os.environ['MALLOC_TRIM_THRESHOLD_'] = before

def dask(undo:bool) -> list:
    from dask.distributed import Client, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address='127.0.0.1:0', silence_logs=40) as c, Client(c) as cl:
        return cl.gather([cl.submit(steps, undo, pure=False, key=f'steps-{i}') for i in range(2)])

if __name__ == '__main__':
    out = {}
    for name, f in (('plain', lambda: plain(False)), ('plain+trim', lambda: plain(True)), ('dask', lambda: dask(False)), ('dask+undone', lambda: dask(True))):
        out[name] = f(); print(name, out[name], flush=True)
    json.dump(out, sys.stdout); print()
