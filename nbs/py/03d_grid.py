# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The grid: Figure 1's seed-runs as independent tasks on Dask
#
# > Every (panel, method, seed shard) that the results store lacks, farmed out to a Dask cluster: a LocalCluster here, an existing cluster by address.

# %% [markdown]
# The paper's protocol is 4 panels x 7 methods (the six of Figure 1 and safe AMG) x 25 seeds of
# independent work, 2,000 steps each: about 30 CPU-hours on a 2-core machine. This chapter cuts it
# into tasks of a few seeds each, asks the results store which seeds are already in (they are never
# computed again), and hands the rest to a `dask.distributed` cluster, cheapest methods first:
#
# ```bash
# make figure1-paper                                  # the whole grid here, on a LocalCluster, then the report
# make figure1-paper SCHEDULER=tcp://host:8786        # the same tasks on an existing cluster
# python -m metaguard_nb.grid --settings c --methods amg --seeds 25 --steps 2000   # any part of it
# ```
#
# Each task calls `runner.run`, which writes every finished seed into the store (and keeps an
# unfinished task's resume state on the worker's disk); the task also returns its seeds, and the
# client writes any that its own store lacks, so a remote cluster without a shared filesystem works
# too, and nothing is written twice. A worker that dies loses only its task, which Dask runs again.
#
# **Starting an existing cluster.** On the machines of a cluster, with this project's environment
# installed: `dask scheduler` on one (it prints its address, port 8786), `dask worker tcp://HOST:8786
# --nworkers N --nthreads 1` on each of the others (one task per worker process at a time; the task
# sets torch's threads to `--threads`). On Slurm, `dask-jobqueue` starts the workers as jobs:
# `SLURMCluster(cores=2, processes=2, memory='8GB', walltime='04:00:00').scale(jobs=10)` in Python,
# then `run_grid(..., scheduler=cluster.scheduler_address)`. Keep one device type per panel: CPU and
# GPU round differently, and the store keys them apart.

# %%
#| default_exp grid

# %%
#| export
import argparse, builtins, ctypes, logging, os, time
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import dask
import torch
from dask.distributed import Client, LocalCluster, as_completed
from fastprogress.fastprogress import progress_bar

from metaguard_nb.guards import METHODS, GuardConfig, get_method
from metaguard_nb.runner import PROTOCOLS, check_device, figure_setting, run, setting_checkpoint, variant as get_variant
from metaguard_nb.store import find_seed, result_folder, run_key, save_seed

# %%
from fastcore.test import test_eq, test_fail

# %% [markdown]
# ## Which seeds are missing, as tasks
#
# A task is one panel, one method and a shard of seeds, run as one seed-batched call. The order is
# the order of the long runs: the four cheap baselines on every panel first (about an hour in all),
# then AMG, SMG and safe AMG, so that the figure fills in from the methods that cost least.

# %%
#| export
PAPER = PROTOCOLS['paper']  # the grid's defaults: the paper's protocol

class Task(NamedTuple):
    "One piece of the grid: some seeds of one method on one panel."
    setting: str
    method: str
    seeds: tuple

def missing(setting:str, # a registered Figure 1 panel, e.g. 'c'
            method:str, # a registered method's name (`guards.METHODS`), e.g. 'amg'
            seeds, # seeds to compute
            steps:int, # steps per seed-run
            eval_every:int=PAPER.eval_every, # monitor-set evaluation every this many steps
            guard:GuardConfig|None=None, # guard settings (None: the variant's)
            device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
            store=None, # root folder of the results store (None: outputs/results of this checkout)
            variant:str='paper', # a registered variant's name (`runner.VARIANTS`)
           )->list:
    "The seeds of (setting, method) that the store cannot serve for a `steps`-step run of `variant` (the runner's default test_every)."
    V = get_variant(variant)
    key = run_key(method, setting, eval_every, guard or V.guard_config(), setting_checkpoint(setting, V.checkpoint(setting))[2], device)
    return [s for s in seeds if find_seed(result_folder(key, store), s, steps, eval_every, key['test_every']) is None]

def plan(settings=PAPER.panels, # the panels
         methods=PAPER.methods, # registered methods
         seeds=range(PAPER.seeds), # seeds to compute
         steps:int=PAPER.steps, # steps per seed-run
         eval_every:int=PAPER.eval_every, # monitor-set evaluation every this many steps
         guard:GuardConfig|None=None, # guard settings (None: the variant's)
         device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
         store=None, # root folder of the results store (None: outputs/results of this checkout)
         shard:int=5, # seeds per Dask task
         variant:str='paper', # a registered variant's name (`runner.VARIANTS`)
        )->list:
    "The tasks that compute every missing seed (the paper protocol's by default): methods in the registry's order, then panels, `shard` seeds per task."
    for s in settings: figure_setting(s)
    methods = [get_method(m).name for m in methods]  # one line for an unknown name
    if not isinstance(shard, int) or shard <= 0: raise ValueError(f'shard={shard!r}: use a positive number of seeds per task')
    check_device(device)
    tasks = []
    for m in sorted(methods, key=list(METHODS).index):  # the registry's order: the cheap baselines first
        for s in settings:
            todo = missing(s, m, [int(x) for x in seeds], steps, eval_every, guard, device, store, variant)
            tasks += [Task(s, m, tuple(todo[i:i + shard])) for i in range(0, len(todo), shard)]
    return tasks


# %% [markdown]
# ## One task, on a worker
#
# The worker runs the task with `threads` torch threads (one task per worker process at a time:
# two multi-threaded torch jobs on the same cores slow each other down many times over here), writes
# its seeds into the store, and returns them.
#
# **Dask's memory trimming slows the step severalfold here, so a task undoes it.** A Dask nanny starts its worker
# with `MALLOC_TRIM_THRESHOLD_=65536` (a `distributed.nanny.pre-spawn-environ` default, meant to give
# memory back to the system sooner). Setting it fixes glibc's thresholds, which also stops glibc's
# dynamic mmap threshold: every tensor above 128 KiB is then mapped and unmapped again at each use,
# and the page faults dominate the step. `python scripts/dask_malloc.py` measures it (AMG, panel (c)'s
# CNN, 5 seeds, one thread, median of 8 steps, two processes at once): a Dask worker's step took more
# than twice a plain process's, the same worker after `malloc_as_usual` within a few percent of the
# plain process, and a plain process started with the variable set as slow as the worker. The grid's
# CPU runs before this change ran at the slow rate (their numbers are unchanged: only where memory
# comes from differs). `malloc_as_usual` puts back the largest thresholds glibc's own adjustment
# reaches on 64-bit machines (mmap 32 MiB, trim 64 MiB), and does it in the task, so that workers
# of an existing cluster, started however their owner likes, get it too.
#

# %%
#| export
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)

def malloc_as_usual() -> bool:
    "Undo a `MALLOC_TRIM_THRESHOLD_` in this process's environment (a Dask nanny sets one): glibc's large thresholds again. True when it did."
    if 'MALLOC_TRIM_THRESHOLD_' not in os.environ: return False
    try: libc = ctypes.CDLL('libc.so.6')
    except OSError: return False  # not glibc: the variable meant nothing
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 64 << 20))

def run_task(task:Task, # the task: panel, method and its seeds
             steps:int, # steps per seed-run
             eval_every:int, # monitor-set evaluation every this many steps
             guard:dict, # guard settings as a dict (what travels to a Dask worker)
             device:str, # torch device to run on, e.g. 'cpu' or 'cuda'
             store, # root folder of the results store (None: outputs/results of this checkout)
             threads:int|None, # torch threads per worker
             variant:str='paper', # a registered variant's name (`runner.VARIANTS`)
            )->dict:
    "Run one task with `threads` torch threads; return its seeds' results, its wall time and whether it undid Dask's trimming."
    malloc = malloc_as_usual()
    if threads: torch.set_num_threads(threads)
    t0 = time.perf_counter()
    r = run(task.method, task.setting, steps, task.seeds, device, eval_every, checkpoint=get_variant(variant).checkpoint(task.setting),
            guard=GuardConfig(**guard), store=store, progress=False)
    evidence = lambda i: {} if r['candidates'] is None else dict(candidates=r['candidates'][i], candidate_names=r['candidate_names'],
                                                                 candidate_score=r['candidate_score'])
    seeds = {s: dict(record=r['record'][i], evals=r['evals'][i], eval_steps=r['eval_steps'], wall=r['wall'][i], info=r['info'][i], **evidence(i))
             for i, s in enumerate(task.seeds)}
    return dict(task=task, key=r['key'], seeds=seeds, seconds=time.perf_counter() - t0, worker=os.getpid(), malloc=malloc)


# %% [markdown]
# ## The grid
#
# `run_grid` plans, starts a `LocalCluster` (or connects to `scheduler`), submits every task with a
# priority that keeps the grid's order, and shows one bar over the seed-runs. The default layout,
# `workers` processes of `threads` torch threads, is the one measured fastest on this 2-core machine
# (nbs/A3_bench, "Layout": two processes of one thread over seed halves against one process of two).

# %%
#| export
LAYOUT = dict(workers=2, threads=1)  # measured in nbs/A3_bench on this 2-core machine

def run_grid(settings=PAPER.panels, # registered Figure 1 panels
             methods=PAPER.methods, # registered methods' names
             seeds=range(PAPER.seeds), # seeds to compute
             steps:int=PAPER.steps, # steps per seed-run
             eval_every:int=PAPER.eval_every, # monitor-set evaluation every this many steps
             device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
             shard:int=5, # seeds per Dask task
             scheduler:str|None=None, # address of an existing Dask scheduler (None: a LocalCluster here)
             workers:int|None=None, # LocalCluster worker processes (None: the default)
             threads:int|None=None, # torch threads per worker
             store=None, # root folder of the results store (None: outputs/results of this checkout)
             guard:GuardConfig|None=None, # guard settings (None: the variant's)
             progress:bool=True, # show a progress bar
             log=print, # where progress lines go
             variant:str='paper', # a registered variant's name (`runner.VARIANTS`)
            )->list:
    "Compute every missing seed of the grid (of `variant`) on Dask; return one summary per finished task."
    guard = guard or get_variant(variant).guard_config()
    tasks = plan(settings, methods, seeds, steps, eval_every, guard, device, store, shard, variant)
    n = sum(len(t.seeds) for t in tasks)
    if not tasks: log('nothing to run: the store has every seed'); return []
    workers, threads = workers or LAYOUT['workers'], threads or LAYOUT['threads']
    dask.config.set({'distributed.scheduler.worker-ttl': None})  # a worker busy in one long step (or paused) is not dead
    # the workers' own log stays silent, errors included: the grid reports each failed task itself, in one line
    cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                  dashboard_address='127.0.0.1:0', silence_logs=logging.CRITICAL)
    client = Client(scheduler or cluster)
    log(f'{len(tasks)} tasks, {n} seed-runs of {steps} steps on {scheduler or f"a LocalCluster of {workers} x {threads} threads"}; '
        f'Dask dashboard: {client.dashboard_link}')
    done, failed, bar = [], [], progress_bar(range(n), display=progress)
    try:
        futures = [client.submit(run_task, t, steps, eval_every, asdict(guard), device, store, threads, variant, priority=len(tasks) - i,
                                 key=f'{t.setting}-{t.method}-{"-".join(map(str, t.seeds))}-{steps}', retries=2, pure=False)
                   for i, t in enumerate(tasks)]
        if progress: bar.update(0)
        for fut in as_completed(futures):
            if fut.status == 'error':  # this task alone is lost (after Dask's retries); the others run on
                failed.append(fut.key); log(f'task {fut.key} failed: ' + (repr(fut.exception()).splitlines() or [''])[0]); continue
            res = fut.result()
            folder = result_folder(res['key'], store)
            for s, r in res['seeds'].items():
                save_seed(folder, s, r)  # a worker without the client's filesystem (where the worker wrote it, nothing is written)
            done.append(dict(setting=res['task'].setting, method=res['task'].method, seeds=res['task'].seeds,
                             seconds=round(res['seconds'], 1), worker=res['worker'], malloc=res['malloc']))
            if progress:
                bar.update(sum(len(d['seeds']) for d in done)); bar.comment = f"{done[-1]['setting']} {done[-1]['method']} {done[-1]['seeds']}"
    finally:
        client.close()
        if cluster is not None: cluster.close()
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(tasks)} tasks failed ({', '.join(failed)}); the other tasks' seeds are stored: "
                           'mend the cause and run the grid again (it computes only what is missing)')
    return done


# %% [markdown]
# ## A tiny grid, as the test suite runs it
#
# Two panels' SGD and L2O, two seeds, three steps, on a real `LocalCluster` of two workers of one
# thread, one seed per task, into a temporary store. The numbers equal the in-process runner's run
# the same way (one seed, one thread: how many seeds share a call and how many threads sum a
# reduction change the float rounding, which is why each stored seed records both), and a second plan
# finds nothing missing. Every worker undid Dask's memory trimming before its task (above).
#

# %%
import tempfile
from metaguard_nb.runner import run as run_here

# %%
with tempfile.TemporaryDirectory() as d:
    done = run_grid(settings='bc', methods=('sgd', 'l2o'), seeds=range(2), steps=3, shard=1, store=d, workers=2, threads=1, progress=False)
    test_eq(len(done), 8)
    test_eq({d['malloc'] for d in done}, {True})  # the nanny set MALLOC_TRIM_THRESHOLD_; each task undid it
    test_eq(plan('bc', ('sgd', 'l2o'), range(2), 3, store=d), [])
    threads = torch.get_num_threads(); torch.set_num_threads(1)
    try:
        for s in 'bc':
            for m in ('sgd', 'l2o'):
                there = run_here(m, s, 3, range(2), store=d, progress=False)
                for i in range(2):
                    here = run_here(m, s, 3, [i], store=False, progress=False)
                    test_eq(there['record'][i], here['record'][0]); test_eq(there['evals'][i], here['evals'][0])
    finally: torch.set_num_threads(threads)
test_fail(lambda: plan('e'), contains='use one of a, b, c, d')
test_fail(lambda: plan('c', methods=('adam',)), contains="use one of 'sgd'")

# %% [markdown]
# A task that fails loses only itself: the grid stores what the other tasks finish and then stops
# with one line that names the failed tasks. Here panel (b)'s folder in the store is a file, so its
# tasks compute and then cannot write; panel (c)'s seeds are stored.

# %%
with tempfile.TemporaryDirectory() as d:
    (Path(d)/'b').write_text('not a folder')
    failures = []
    try: run_grid(settings='bc', methods=('sgd',), seeds=range(2), steps=3, shard=1, store=d, workers=2, threads=1, progress=False, log=failures.append)
    except RuntimeError as e: msg = str(e)
    else: raise AssertionError('the grid did not report its failed tasks')
    assert msg.startswith('2 of 4 tasks failed (b-sgd-0-3, b-sgd-1-3)') or msg.startswith('2 of 4 tasks failed (b-sgd-1-3, b-sgd-0-3)'), msg
    test_eq(len(failures), 3)  # the plan's line and one per failed task
    test_eq(plan('c', ('sgd',), range(2), 3, store=d), [])

# %% [markdown]
# ## On a GPU, and the CPU against the GPU
#
# The same grid runs on a CUDA machine with `--device cuda`. The machine this project was lent (one
# H200, 16 cores, no network, its own PyTorch) ran it through `scripts/device_grid.sh`, which brings
# the wheels and data the image lacks, checks every method for 3 steps, then runs `python -m
# metaguard_nb.grid --device cuda --shard 25 --workers 14 --threads 1` (one task per panel and method,
# 25 seeds in one call, eager LSTM step) for a fixed time. The four cheap baselines of all four panels
# came from that one call; AMG, SMG and safe AMG did not finish in it, because their step is bound by
# the host, not the GPU. `scripts/gpu_time_step.py` timed one process alone there (25 seeds, panel (c),
# `outputs/gpu_time_step.json`); beside it, the seconds a step that the store recorded for the CPU's
# paper-protocol runs (every seed file keeps its step times; the median over a panel's seeds and
# steps, with how many seeds shared a call):

# %%
import json
import numpy as np
import pandas as pd
from IPython.display import Markdown, display
from metaguard_nb.data import checkout
from metaguard_nb.report import collect, markdown_table
from metaguard_nb.runner import PROTOCOLS

# %%
gpu = json.loads((checkout() or Path.cwd()).joinpath('outputs', 'gpu_time_step.json').read_text())
paper = PROTOCOLS['paper']
rows = []
for m in paper.methods:
    row = dict(method=m, **{f'GPU {k}': gpu.get(f'{m} {k}', {}).get('s_per_step') for k in ('eager', 'compiled')})
    for s in paper.panels:
        r = collect(s, m, range(paper.seeds), paper.steps, device='cpu', compile=True)
        row[f'CPU ({s})'] = None if r is None else float(np.median(r['wall'].numpy()))
    rows.append(row)
times = pd.DataFrame(rows).set_index('method')
calls = sorted({i['seeds_in_call'] for s in paper.panels for m in paper.methods
                if (r := collect(s, m, range(paper.seeds), paper.steps, device='cpu', compile=True)) for i in r['info']})
display(Markdown(f"Seconds a step (the CPU's seeds ran {' or '.join(map(str, calls))} to a call; the GPU's 25):\n\n"
                 + markdown_table(times)))

# %% [markdown]
# The store keys the GPU's seeds apart (`device` in the key), and the report reads each panel from
# one device and one kind of LSTM step (`report.panel_results`). The cell below shows why, on the
# seeds that both devices ran: on the sigmoid CNN the same seed agrees to float32 rounding for
# hundreds of steps, and then the step at which a seed leaves SGD's plateau depends on that rounding,
# so single seeds end far apart while the medians stay close; on the MLP of panel (b) the two devices
# part within the first hundred steps and their means stay close. Mixed within a panel, such seeds
# would compare two devices as well as two methods.

# %%
rows = []
for s, m in (('a', 'sgd'), ('b', 'sgd'), ('c', 'sgd'), ('d', 'sgd'), ('b', 'l2o')):
    cpu, gpu = collect(s, m, range(25), 2000, device='cpu', compile=True), collect(s, m, range(25), 2000, device='cuda', compile=False)
    if cpu is None or gpu is None: continue
    both = [x for x in cpu['seeds'] if x in gpu['seeds']]
    c = cpu['evals'][[cpu['seeds'].index(x) for x in both]][..., 0].double().numpy()
    g = gpu['evals'][[gpu['seeds'].index(x) for x in both]][..., 0].double().numpy()
    steps = list(cpu['eval_steps'].numpy())
    row = dict(panel=s, method=m, seeds=len(both))
    for k in (100, 200, 1000, 2000):
        d = np.abs(c[:, steps.index(k)] - g[:, steps.index(k)])
        row[f'median |cpu-gpu| @{k}'], row[f'max @{k}'] = f'{np.median(d):.1e}', f'{d.max():.1e}'
    row['mean cpu @2000'], row['mean gpu @2000'] = round(c[:, -1].mean(), 3), round(g[:, -1].mean(), 3)
    rows.append(row)
pd.DataFrame(rows)


# %% [markdown]
# ## The command

# %%
#| export
def main(argv=None, # command-line arguments (default: the process arguments)
        ):
    ap = argparse.ArgumentParser(prog='python -m metaguard_nb.grid', description='Compute the missing seeds of the Figure 1 grid on Dask.')
    ap.add_argument('--settings', nargs='+', default=list(PAPER.panels), help=f"panels (default: {' '.join(PAPER.panels)})")
    ap.add_argument('--methods', nargs='+', default=list(PAPER.methods), help=f"registered methods (default: {' '.join(PAPER.methods)})")
    ap.add_argument('--seeds', type=int, default=PAPER.seeds, help=f'seeds 0..N-1 (default {PAPER.seeds})')
    ap.add_argument('--steps', type=int, default=PAPER.steps, help=f'steps (default {PAPER.steps})')
    ap.add_argument('--shard', type=int, default=5, help='seeds per task')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--scheduler', default=None, help='address of an existing Dask scheduler (default: a LocalCluster here)')
    ap.add_argument('--workers', type=int, default=None, help=f"LocalCluster worker processes (default {LAYOUT['workers']})")
    ap.add_argument('--threads', type=int, default=None, help=f"torch threads per worker (default {LAYOUT['threads']})")
    ap.add_argument('--variant', default='paper', help="a registered variant (runner.VARIANTS): guard settings and optimizers")
    ap.add_argument('--store', default=None, help='the results store (default: outputs/results of this checkout)')
    ap.add_argument('--dry-run', action='store_true', help='print the missing tasks and stop')
    a = ap.parse_args(argv)
    try:
        if a.dry_run:
            for t in plan(a.settings, a.methods, range(a.seeds), a.steps, device=a.device, shard=a.shard, store=a.store, variant=a.variant): print(*t)
            return
        run_grid(a.settings, a.methods, range(a.seeds), a.steps, device=a.device, shard=a.shard, scheduler=a.scheduler,
                 workers=a.workers, threads=a.threads, store=a.store, variant=a.variant)
    except (ValueError, RuntimeError) as e: raise SystemExit(f'error: {e}')

if __name__ == '__main__' and not hasattr(builtins, '__IPYTHON__'): main()  # not when a notebook runs this cell

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.grid`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('grid')
