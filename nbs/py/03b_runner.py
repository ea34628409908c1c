# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The experiment runner: a method, a test setting, S seeds, resumable, and the results store
#
# > run(method, setting, ...) runs one method on one Figure 1 setting for S seeds in one call; finished seeds go to the results store.

# %% [markdown]
# The runner is where a guard meets an experiment. It loads the meta-trained optimizer a setting
# names, draws each seed's optimizee initialisation and batches (identical for every method of that
# seed: common random numbers across methods too), steps the method, every `eval_every` steps
# measures the loss on the seed's fixed monitor set of 2,048 training examples, and every
# `test_every` steps the loss and accuracy on the test split ([decisions](decisions.md), section 7).
# Finished seeds go to the results store, one small committed file each; an interrupted run saves its
# whole state and resumes from it, computing the same numbers.

# %%
#| default_exp runner

# %%
#| export
import hashlib, json, math, time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from fastprogress.fastprogress import progress_bar

from metaguard_nb.data import Sampler, checkout, load
from metaguard_nb.guards import NUMERICS, GuardConfig, init_state, inner_batches, method_step, step_batches
from metaguard_nb.lstm import Theta
from metaguard_nb.metatrain import load_checkpoint, monitor_set
from metaguard_nb.persist import deferred_interrupt, save_atomic
from metaguard_nb.optimizees import Optimizee, optimizee

# %%
from fastcore.test import test_close, test_eq, test_fail

# %% [markdown]
# ## The four settings of Figure 1
#
# | setting | meta-train (checkpoint) | meta-test |
# |---|---|---|
# | a | CNN & FashionMNIST | CNN & FashionMNIST |
# | b | CNN & FashionMNIST | MLP & FashionMNIST |
# | c | CNN & FashionMNIST | CNN & MNIST |
# | d | MLP & MNIST | CNN & FashionMNIST |

# %%
#| export
FIGURE_SETTINGS = {'a': ('cnn_fashionmnist', 'cnn', 'fashionmnist'), 'b': ('cnn_fashionmnist', 'mlp', 'fashionmnist'),
                   'c': ('cnn_fashionmnist', 'cnn', 'mnist'), 'd': ('mlp_mnist', 'cnn', 'fashionmnist')}
FIGURE_METHODS = ('sgd', 'l2o', 'lgl2o', 'lgl2o_no_update', 'smg', 'amg')

def figure_setting(setting:str) -> tuple:
    "(checkpoint name, test optimizee, test dataset) of a Figure 1 panel."
    if setting not in FIGURE_SETTINGS:
        raise ValueError(f"setting={setting!r} is not a Figure 1 panel: use one of {', '.join(FIGURE_SETTINGS)}")
    return FIGURE_SETTINGS[setting]

def check_device(device:str) -> torch.device:
    "A device that exists here, or a one-line error."
    try: dev = torch.device(device)
    except RuntimeError: raise ValueError(f"device={device!r} is not a device: use 'cpu' or 'cuda'") from None
    if dev.type == 'cuda' and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device={device!r} does not exist here ({torch.cuda.device_count()} CUDA devices): use 'cpu'")
    if dev.type not in ('cpu', 'cuda'): raise ValueError(f"device={device!r} is not supported: use 'cpu' or 'cuda'")
    return dev


# %%
test_eq(figure_setting('c'), ('cnn_fashionmnist', 'cnn', 'mnist'))
test_fail(lambda: figure_setting('e'), contains='use one of a, b, c, d')
test_fail(lambda: check_device('tpu'), contains="use 'cpu'")


# %% [markdown]
# ## A run's data per seed
#
# Each seed has its own streams: optimizee initialisation (`'init'`), inner batches
# (`'batches'`), evaluation batches B_e (`'eval'`), and its monitor set (`'monitor'`). Run seeds
# are offset from the meta-training seeds, so no test trajectory replays a training one.

# %%
#| export
@dataclass
class Problem:
    "Everything a run needs besides the method: optimizee, data samplers, evaluation sets, the meta-trained theta."
    optimizee: Optimizee
    lstm_cfg: object
    theta: Theta
    inner: Sampler
    evals: Sampler
    monitor: tuple
    test: tuple
    eta0: torch.Tensor

def setting_checkpoint(setting:str, checkpoint:str|Path|None=None) -> tuple:
    "(MetaTrainConfig, Theta, checkpoint dict) of a panel: its shipped optimizer, or `checkpoint` if it was trained on the same setting."
    name = figure_setting(setting)[0]
    train_net, train_data = name.split('_')
    return load_checkpoint(checkpoint if checkpoint is not None else name, expect={'net': train_net, 'dataset': train_data})

def make_problem(setting:str, seeds:list, device:str='cpu', ck:tuple|None=None, eval_batch_size:int=128) -> Problem:
    "A run's problem; `ck` is `setting_checkpoint(setting, ...)`, loaded here when not given; B_e has `eval_batch_size` examples."
    name, net, data = figure_setting(setting)
    dev = check_device(device)
    cfg, theta, _ = ck if ck is not None else setting_checkpoint(setting)
    problem = optimizee(net, act=cfg.act, **({'padding': cfg.padding} if net == 'cnn' else {}))
    train, test = load(data), load(data, train=False)
    mx, my = monitor_set(data, seeds, device=dev)
    return Problem(problem, cfg.lstm, theta, Sampler(train, seeds, device=dev), Sampler(train, seeds, eval_batch_size, dev, stream='eval'),
                   (mx, my), (test.x.to(dev), test.y.to(dev)), problem.init(seeds, device=dev))


# %% [markdown]
# ## Evaluation: monitor-set loss, test loss and accuracy
#
# The test split (10,000 images) goes through every seed's optimizee in chunks, so memory stays
# small for 25 seeds. It is five times the monitor set, and on the protocol's shapes it was most of
# a cheap method's time (measured, 25 seeds on the CNN: one evaluation of both sets 4.3 s, 80% of an
# SGD protocol step and 57% of an LGL2O one when every tenth step evaluated both; nbs/A3_bench), so
# the runner measures it every `test_every` steps (default 100) and the monitor loss, which Figure 1
# draws, every `eval_every` steps; in between the test columns hold NaN. Both run seed by seed.

# %%
#| export
@torch.no_grad()
def evaluate(p:Problem, eta:torch.Tensor, chunk:int=2500, test:bool=True) -> torch.Tensor:
    "[S, 3]: monitor-set loss, test loss, test accuracy (NaN without `test`)."
    S = eta.shape[0]
    mx, my = p.monitor
    # seed by seed: without the seed dimension a convolution is an ordinary one (measured, CNN, 25 seeds: 1.0-1.5 s
    # for both sets against 4.2-4.6 s through vmap, whose batched weights make it a grouped convolution)
    mon = torch.stack([p.optimizee.loss(eta[s], mx[s], my[s]) for s in range(S)])
    if not test: return torch.stack([mon, torch.full_like(mon, math.nan), torch.full_like(mon, math.nan)], 1)
    tx, ty = p.test
    loss, correct = torch.zeros(S, device=eta.device), torch.zeros(S, device=eta.device)
    for i in range(0, len(ty), chunk):
        x, y = tx[i:i + chunk].unsqueeze(1).float().div(255), ty[i:i + chunk]
        for s in range(S):
            out = p.optimizee.logits(eta[s], x)
            loss[s] += torch.nn.functional.cross_entropy(out, y, reduction='sum')
            correct[s] += (out.argmax(-1) == y).sum()
    return torch.stack([mon, loss/len(ty), correct/len(ty)], 1)


# %% [markdown]
# ## The results store
#
# Every finished seed is one small file under `outputs/results/<setting>/<method>/<key>/`: its step
# records and its evaluations, no optimizer state (tens of KB; they are committed, so a fresh clone
# on another machine continues from the seeds that are in). The key is a hash of everything that
# changes the numbers, written out beside the files in `run.json`: method, setting, `eval_every`,
# the guard's settings, the checkpoint (its config and a hash of its weights), the device type (a GPU
# rounds differently), and `guards.NUMERICS`, the version of what the methods compute, which is
# bumped whenever a change of the code alters trajectories. A learned optimizer's trajectory
# amplifies float rounding over hundreds of steps (a change of summation order in the LSTM step alone
# once moved panel b's 3-seed SMG mean at step 300 from 1.19 to 1.76), so anything that rounds
# differently must not share a key.
#
# Each length of a seed's run is its own file, `seed<N>_<steps>.npz`: the quick protocol's 300 steps
# and the paper's 2,000 live apart, and no run ever replaces another. A run reads the file of its own
# length, or else the first `steps` steps of a longer one that holds all of its evaluations (a
# multiple of `eval_every` and `test_every`: a 2,000-step seed serves a 300-step run; the same
# numbers up to how many seeds shared the call, which each file records).
# An unfinished run's resume state lives in the store's `partial/` folder (not committed): it resumes
# on the same machine, and is not written at all when the run keeps nothing (`store=False`).

# %%
#| export
RUN_SEED_OFFSET = 10_000  # run seed s uses generator streams of 10_000 + s: disjoint from meta-training's

def weights_hash(ck:dict) -> str:
    "A short sha256 of a checkpoint's learned weights and memory."
    h = hashlib.sha256()
    for k in sorted(ck['W']): h.update(k.encode()); h.update(ck['W'][k].float().contiguous().numpy().tobytes())
    h.update(ck['h'].float().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]

def run_key(method:str, setting:str, eval_every:int, gcfg:GuardConfig, ck:dict, device, test_every:int|None=100) -> dict:
    "Everything that changes a run's numbers (see above)."
    return dict(method=method, setting=setting, eval_every=eval_every, test_every=test_every, guard=asdict(gcfg), checkpoint=ck['config'],
                checkpoint_weights=weights_hash(ck), device=torch.device(device).type, numerics=NUMERICS)

def key_hash(key:dict) -> str: return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

def store_dir() -> Path: return (checkout() or Path.cwd())/'outputs'/'results'

def seed_file(folder:Path, seed:int, steps:int) -> Path: return folder/f'seed{seed}_{steps}.npz'

def save_seed(folder:Path, seed:int, r:dict):
    "One finished seed, atomically: step records, evaluations, wall time, how it was computed (`r['info']`); never over an existing file."
    f = seed_file(folder, seed, r['record'].shape[0])
    if f.exists(): return  # nothing is written twice
    f.parent.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.name + '.tmp')
    rec = r['record'].numpy()
    with open(tmp, 'wb') as out:
        np.savez_compressed(out, branch=rec[:, 0].astype(np.int8), loss=rec[:, 1].astype(np.float32),
                            counters=rec[:, 2:].astype(np.int32), evals=r['evals'].numpy(), eval_steps=r['eval_steps'].numpy(),
                            wall=r['wall'].numpy().astype(np.float32), info=np.array(json.dumps(r.get('info', {}))))
    tmp.replace(f)

def load_seed(f:Path) -> dict:
    "A stored seed file as tensors (record [steps, 5], evals [K, 6], eval_steps [K], wall [steps], info)."
    with np.load(f) as z:
        record = np.concatenate([z['branch'][:, None], z['loss'][:, None], z['counters']], 1).astype(np.float32)
        return dict(record=torch.from_numpy(record), evals=torch.from_numpy(z['evals']), eval_steps=torch.from_numpy(z['eval_steps']),
                    wall=torch.from_numpy(z['wall']), info=json.loads(str(z['info'])))

def stored_lengths(folder:Path, seed:int) -> list:
    "The run lengths stored for `seed`, shortest first."
    return sorted(int(f.stem.split('_')[1]) for f in folder.glob(f'seed{seed}_*.npz'))

def find_seed(folder:Path, seed:int, steps:int, eval_every:int, test_every:int|None=100) -> dict|None:
    "The stored run of `seed` that serves a `steps`-step run, cut to it: its own length, else the shortest longer one that holds its evaluations."
    for n in stored_lengths(folder, seed):
        if n == steps or (n > steps and steps % eval_every == 0 and (test_every is None or steps % test_every == 0)):
            return cut(load_seed(seed_file(folder, seed, n)), steps, eval_every)
    return None

def _eval_steps(steps:int, eval_every:int) -> list: return sorted({*range(0, steps, eval_every), steps})

def cut(r:dict, steps:int, eval_every:int) -> dict:
    "The first `steps` steps of stored seed `r` (see `find_seed`)."
    k = len(_eval_steps(steps, eval_every))
    assert r['eval_steps'][:k].tolist() == _eval_steps(steps, eval_every)
    return dict(record=r['record'][:steps], evals=r['evals'][:k], eval_steps=r['eval_steps'][:k], wall=r['wall'][:steps], info=r['info'])


# %% [markdown]
# ## The run
#
# Step k (k = 1..steps) draws its batches, calls the method's step, and appends the record. The
# records stay on the device between evaluations (no host round trip per step); at every evaluation
# they move to the CPU. A Ctrl-C never leaves a step half recorded: a finished step is committed
# (state, record, sampler position) with interrupts held back for those few statements, and an
# interrupted evaluation is done again on resume, so no step is replayed or recorded twice.

# %%
#| export
def _check_run_args(method, steps, seeds, eval_every, test_every=None):
    method_step(method)
    if not isinstance(steps, int) or steps <= 0: raise ValueError(f'steps={steps!r}: use a positive integer')
    if len(seeds) == 0: raise ValueError('seeds is empty: give at least one seed, e.g. seeds=range(3)')
    if not isinstance(eval_every, int) or eval_every <= 0: raise ValueError(f'eval_every={eval_every!r}: use a positive integer')
    if test_every is not None and (not isinstance(test_every, int) or test_every <= 0 or test_every % eval_every):
        raise ValueError(f'test_every={test_every!r}: use a positive multiple of eval_every={eval_every}, or None (test at every evaluation)')

def _rows(records:list) -> list:
    "Step records -> CPU rows [S, 5]: branch, l(eta; B_e), the step's three counters."
    return [torch.stack([q.branch.float(), q.loss, *q.counters.float().T], 1).cpu() for q in records]

def _run_batch(method, p:Problem, steps, eval_every, gcfg, partial:Path|None, save_every, bar_parent=None, progress=True, test_every=None):
    "Run the seeds of `p` from scratch or from `partial` (None: no resume state); return records, evaluations, wall times."
    step, due = method_step(method), lambda k: k % eval_every == 0 or k == steps
    tested = lambda k: test_every is None or k % test_every == 0 or k == steps
    used = inner_batches(method, gcfg.T)
    st, done, rec, evals, wall = init_state(method, p.eta0, p.theta), 0, [], [], []
    if partial is not None and partial.exists():
        rs = torch.load(partial, map_location=p.eta0.device, weights_only=False)
        st, done, rec, evals, wall = rs['state'], rs['k'], rs['rec'], rs['evals'], rs['wall']
        p.inner.set_state(rs['inner']); p.evals.set_state(rs['evals_sampler'])
    samplers, pending = (p.inner.state(), p.evals.state()), []
    def evaluate_now():
        evals.append(torch.cat([evaluate(p, st.eta, test=tested(done)), st.counters.float()], 1).cpu())
    def save(k):
        if partial is not None:
            save_atomic({'state': st, 'k': k, 'rec': rec, 'evals': evals, 'wall': wall, 'inner': samplers[0],
                         'evals_sampler': samplers[1]}, partial)
    bar = progress_bar(range(done, steps), parent=bar_parent, display=progress)
    try:
        if len(evals) < sum(k <= done for k in _eval_steps(steps, eval_every)): evaluate_now()  # step 0, or an interrupted evaluation
        for k in bar:
            t0 = time.perf_counter()
            new, r = step(gcfg, p.lstm_cfg, p.optimizee, st, step_batches(p.inner, p.evals, gcfg.T, used))
            with deferred_interrupt():  # the step is committed whole or not at all
                st, done, samplers = new, k + 1, (p.inner.state(), p.evals.state())
                pending.append(r); wall.append(time.perf_counter() - t0)
                if due(done): rec, pending = rec + _rows(pending), []
            if due(done):
                evaluate_now()
                if progress: bar.comment = f'{method}: monitor loss {evals[-1][:, 0].mean():.3f}'
                if done % save_every == 0: save(done)
    except KeyboardInterrupt:
        rec += _rows(pending)
        save(done)
        print(f'interrupted after step {done}' + (f': state saved to {partial}; run again to resume' if partial else '')); raise
    return torch.stack(rec, 1), torch.stack(evals, 1), wall


# %% [markdown]
# `run` is the entry point. The result is a dict of tensors with a leading seed dimension:
#
# - `record` `[S, steps, 5]`: per step, the chosen branch, l(eta; B_e) after the step, and the
#   step's counters (gradient evaluations, forward evaluations, LSTM steps);
# - `evals` `[S, K, 6]` at the K evaluation steps `eval_steps` (step 0, every `eval_every` steps and
#   the last step): monitor loss, test loss, test accuracy, and the cumulative counters;
# - `eval_steps`, `seeds`, `method`, `setting`, `key` (what keyed the store), `wall` (seconds per
#   step, for the batch that ran it), `info` (per seed: how many seeds shared its call, torch's threads,
#   the CPU's vector instructions as torch uses them, and the GPU's name on CUDA).

# %%
#| export
def run(method:str, # one of guards.METHODS
        setting:str, # Figure 1 panel: a, b, c, d
        steps:int=300, # steps of the method
        seeds=range(3), # run seeds
        device:str='cpu', # 'cpu' or 'cuda'
        eval_every:int=10, # steps between monitor-set evaluations
        test_every:int|None=100, # steps between test-split evaluations (a multiple of eval_every; None: at every evaluation)
        checkpoint:str|Path|None=None, # meta-trained optimizer (default: the setting's shipped checkpoint)
        guard:GuardConfig|None=None, # the guards' hyper-parameters (default GuardConfig())
        store:str|Path|bool|None=None, # results store (default outputs/results); False: read and write no file
        save_every:int=50, # steps between resume saves of an unfinished run
        progress:bool=True, bar_parent=None) -> dict:
    "Run `method` on Figure 1 setting `setting` for `seeds`: stored seeds are read, the others computed (resuming an interrupted run) and stored."
    seeds, guard = [int(s) for s in seeds], guard or GuardConfig()
    _check_run_args(method, steps, seeds, eval_every, test_every)
    dev = check_device(device)
    ck = setting_checkpoint(setting, checkpoint)
    key = run_key(method, setting, eval_every, guard, ck[2], dev, test_every)
    keep = store is not False
    root = Path(store if store not in (None, True, False) else store_dir())
    folder = root/setting/method/key_hash(key)
    done = {}
    for s in seeds:
        r = find_seed(folder, s, steps, eval_every, test_every) if keep else None
        if r is not None: done[s] = r
    todo = [s for s in seeds if s not in done]
    if todo:
        p = make_problem(setting, [RUN_SEED_OFFSET + s for s in todo], device, ck, guard.eval_batch_size)
        partial = root/'partial'/setting/method/key_hash(key)/f"seeds{'-'.join(map(str, todo))}_{steps}.pt" if keep else None
        rec, evals, wall = _run_batch(method, p, steps, eval_every, guard, partial, save_every, bar_parent, progress, test_every)
        if keep:
            folder.mkdir(parents=True, exist_ok=True)
            (folder/'run.json').write_text(json.dumps(key, indent=1, sort_keys=True))
        # how many seeds shared the call, how many threads summed its reductions and which CPU (its vector
        # instructions) or GPU ran it change the float rounding: recorded, not keyed
        info = dict(seeds_in_call=len(todo), torch_threads=torch.get_num_threads(), torch=torch.__version__, steps=steps,
                    cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    **({'gpu': torch.cuda.get_device_name(dev)} if dev.type == 'cuda' else {}))
        for i, s in enumerate(todo):
            done[s] = dict(record=rec[i], evals=evals[i], eval_steps=torch.tensor(_eval_steps(steps, eval_every)), wall=torch.tensor(wall), info=info)
            if keep: save_seed(folder, s, done[s])
        if partial is not None: partial.unlink(missing_ok=True)
    return {'method': method, 'setting': setting, 'seeds': seeds, 'key': key,
            'record': torch.stack([done[s]['record'] for s in seeds]),
            'evals': torch.stack([done[s]['evals'] for s in seeds]),
            'eval_steps': torch.tensor(_eval_steps(steps, eval_every)),
            'wall': torch.stack([done[s]['wall'] for s in seeds]), 'info': [done[s]['info'] for s in seeds]}


# %% [markdown]
# A short run of AMG on setting (c), two seeds, and the same run again: the second comes from the
# store.

# %%
import tempfile

# %%
with tempfile.TemporaryDirectory() as d:
    t0 = time.time()
    r = run('amg', 'c', steps=4, seeds=[0, 1], eval_every=2, store=d, progress=False)
    t1 = time.time()
    r2 = run('amg', 'c', steps=4, seeds=[0, 1], eval_every=2, store=d, progress=False)
    t2 = time.time()
test_eq(r['record'].shape, (2, 4, 5)); test_eq(r['evals'].shape, (2, 3, 6)); test_eq(r['eval_steps'].tolist(), [0, 2, 4])
test_eq(r['record'], r2['record'])
test_eq(r2['info'][0]['cpu_capability'], torch.backends.cpu.get_cpu_capability())  # stored with the seed, read back
print(f'first run {t1 - t0:.1f}s, cached {t2 - t1:.2f}s; branches {r["record"][..., 0].tolist()}')

# %% [markdown]
# Bad input fails before any compute, with one line naming the valid values:

# %%
test_fail(lambda: run('adam', 'c'), contains="use one of 'sgd'")
test_fail(lambda: run('amg', 'c', steps=0), contains='positive integer')
test_fail(lambda: run('amg', 'c', seeds=[]), contains='seeds is empty')
test_fail(lambda: run('amg', 'z'), contains='use one of a, b, c, d')
test_fail(lambda: run('amg', 'd', checkpoint='cnn_fashionmnist'), contains="net='cnn', expected 'mlp'")
