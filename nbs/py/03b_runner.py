# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The experiment runner: a method, a test setting, S seeds, resumable
#
# > run(method, setting, ...) runs one method on one Figure 1 setting for S seeds in one call, with a per-seed cache.

# %% [markdown]
# The runner is where a guard meets an experiment. It loads the meta-trained optimizer a setting
# names, draws each seed's optimizee initialisation and batches (identical for every method of that
# seed: common random numbers across methods too), steps the method, and every `eval_every` steps
# measures the loss on the seed's fixed monitor set of 2,048 training examples and the loss and
# accuracy on the test split (METHOD.md section 7). Finished seeds are cached one file each; an
# interrupted run saves its whole state and resumes from it, computing the same numbers.

# %%
#| default_exp runner

# %%
#| export
import hashlib, json, time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from fastprogress.fastprogress import progress_bar

from metaguard_nb.data import Sampler, checkout, load
from metaguard_nb.guards import GuardConfig, init_state, method_step, step_batches
from metaguard_nb.lstm import Theta
from metaguard_nb.metatrain import _save, load_checkpoint, monitor_set
from metaguard_nb.optimizees import Optimizee, batched_loss, optimizee

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
    problem: Optimizee
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

def make_problem(setting:str, seeds:list, device:str='cpu', ck:tuple|None=None) -> Problem:
    "A run's problem; `ck` is `setting_checkpoint(setting, ...)`, loaded here when not given."
    name, net, data = figure_setting(setting)
    dev = check_device(device)
    cfg, theta, _ = ck if ck is not None else setting_checkpoint(setting)
    problem = optimizee(net, act=cfg.act, **({'padding': cfg.padding} if net == 'cnn' else {}))
    train, test = load(data), load(data, train=False)
    mx, my = monitor_set(data, seeds, device=dev)
    return Problem(problem, cfg.lstm, theta, Sampler(train, seeds, device=dev), Sampler(train, seeds, device=dev, stream='eval'),
                   (mx, my), (test.x.to(dev), test.y.to(dev)), problem.init(seeds, device=dev))


# %% [markdown]
# ## Evaluation: monitor-set loss, test loss and accuracy
#
# The test split (10,000 images) goes through every seed's optimizee in chunks, so memory stays
# small for 25 seeds.

# %%
#| export
@torch.no_grad()
def evaluate(p:Problem, eta:torch.Tensor, chunk:int=2500) -> torch.Tensor:
    "[S, 3]: monitor-set loss, test loss, test accuracy."
    S = eta.shape[0]
    mon = batched_loss(p.problem, eta, *p.monitor)
    tx, ty = p.test
    loss, correct = torch.zeros(S, device=eta.device), torch.zeros(S, device=eta.device)
    logits = torch.vmap(p.problem.logits, in_dims=(0, None))
    for i in range(0, len(ty), chunk):
        x, y = tx[i:i + chunk].unsqueeze(1).float().div(255), ty[i:i + chunk]
        out = logits(eta, x)
        loss += torch.nn.functional.cross_entropy(out.flatten(0, 1), y.repeat(S), reduction='none').view(S, -1).sum(1)
        correct += (out.argmax(-1) == y).sum(1)
    return torch.stack([mon, loss/len(ty), correct/len(ty)], 1)


# %% [markdown]
# ## The run
#
# Step k (k = 1..steps) draws its batches, calls the method's step, and appends the record. The
# records stay on the device between evaluations (no host round trip per step); at every
# evaluation they move to the CPU.

# %%
#| export
RUN_SEED_OFFSET = 10_000  # run seed s uses generator streams of 10_000 + s: disjoint from meta-training's

def _cache_key(method, setting, eval_every, gcfg:GuardConfig, ckpt_cfg:dict) -> str:
    # `compile` is part of the key: compiled and eager steps round differently, and over hundreds of
    # steps a learned optimizer's trajectory amplifies rounding (a change of summation order in the
    # LSTM step alone moved panel b's 3-seed SMG mean at step 300 from 1.19 to 1.76)
    blob = json.dumps([method, setting, eval_every, asdict(gcfg), ckpt_cfg], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]

def cache_dir() -> Path: return (checkout() or Path.cwd())/'outputs'/'cache'

def _check_run_args(method, steps, seeds, eval_every):
    method_step(method)
    if not isinstance(steps, int) or steps <= 0: raise ValueError(f'steps={steps!r}: use a positive integer')
    if len(seeds) == 0: raise ValueError('seeds is empty: give at least one seed, e.g. seeds=range(3)')
    if not isinstance(eval_every, int) or eval_every <= 0: raise ValueError(f'eval_every={eval_every!r}: use a positive integer')

def _rows(records:list) -> list:
    "Step records -> CPU rows [S, 5]: branch, l(eta; B_e), the step's three counters."
    return [torch.stack([q.branch.float(), q.loss, *q.counters.float().T], 1).cpu() for q in records]

def _run_batch(method, p:Problem, steps, eval_every, gcfg, partial:Path, save_every, bar_parent=None, progress=True):
    "Run the seeds of `p` from scratch or from `partial`; return per-step and per-evaluation tensors."
    step = method_step(method)
    st, k, rec, evals, wall = init_state(method, p.eta0, p.theta), 0, [], [], []
    if partial.exists():
        rs = torch.load(partial, map_location=p.eta0.device, weights_only=False)
        st, k, rec, evals, wall = rs['state'], rs['k'], rs['rec'], rs['evals'], rs['wall']
        p.inner.set_state(rs['inner']); p.evals.set_state(rs['evals_sampler'])
    if k == 0 and not evals: evals.append(torch.cat([evaluate(p, st.eta), st.counters.float()], 1).cpu())
    def save(kk, samplers):
        _save({'state': st, 'k': kk, 'rec': rec, 'evals': evals, 'wall': wall, 'inner': samplers[0],
               'evals_sampler': samplers[1]}, partial)
    pending, bar = [], progress_bar(range(k, steps), parent=bar_parent, display=progress)
    try:
        for k in bar:
            samplers = (p.inner.state(), p.evals.state())  # as they were before step k drew its batches
            t0 = time.perf_counter()
            st, r = step(gcfg, p.lstm_cfg, p.problem, st, step_batches(p.inner, p.evals, gcfg.T))
            pending.append(r)
            wall.append(time.perf_counter() - t0)
            if (k + 1) % eval_every == 0 or k + 1 == steps:
                rec += _rows(pending)
                pending = []
                evals.append(torch.cat([evaluate(p, st.eta), st.counters.float()], 1).cpu())
                if progress: bar.comment = f'{method}: monitor loss {evals[-1][:, 0].mean():.3f}'
                if (k + 1) % save_every == 0: save(k + 1, (p.inner.state(), p.evals.state()))
    except KeyboardInterrupt:
        rec += _rows(pending)
        save(k, samplers); print(f'interrupted at step {k}: state saved to {partial}; run again to resume'); raise
    return torch.stack(rec, 1), torch.stack(evals, 1), wall


# %% [markdown]
# `run` is the entry point. The result is a dict of tensors with a leading seed dimension:
#
# - `record` `[S, steps, 5]`: per step, the chosen branch, l(eta; B_e) after the step, and the
#   step's counters (gradient evaluations, forward evaluations, LSTM steps);
# - `evals` `[S, steps // eval_every + 1, 6]`: at step 0 and every `eval_every` steps: monitor loss,
#   test loss, test accuracy, and the cumulative counters;
# - `eval_steps`, `seeds`, `method`, `setting`, `wall` (seconds per step, for the batch that ran it).

# %%
#| export
def run(method:str, # one of guards.METHODS
        setting:str, # Figure 1 panel: a, b, c, d
        steps:int=300, # steps of the method
        seeds=range(3), # run seeds
        device:str='cpu', # 'cpu' or 'cuda'
        eval_every:int=10, # steps between monitor/test evaluations
        checkpoint:str|Path|None=None, # meta-trained optimizer (default: the setting's shipped checkpoint)
        guard:GuardConfig|None=None, # the guards' hyper-parameters (default GuardConfig())
        cache:str|Path|None=None, # per-seed result cache (default outputs/cache); False disables it
        save_every:int=50, # steps between resume saves of an unfinished run
        progress:bool=True, bar_parent=None) -> dict:
    "Run `method` on Figure 1 setting `setting` for `seeds`, reusing cached seeds and resuming interrupted runs."
    seeds, guard = [int(s) for s in seeds], guard or GuardConfig()
    _check_run_args(method, steps, seeds, eval_every)
    check_device(device)
    ck = setting_checkpoint(setting, checkpoint)
    folder = Path(cache if cache else cache_dir())/setting/method/_cache_key(method, setting, eval_every, guard, ck[2]['config'])
    done = {}
    for s in seeds:
        f = folder/f'seed{s}.pt'
        if cache is not False and f.exists():
            r = torch.load(f, weights_only=False)
            if r['record'].shape[0] >= steps: done[s] = r
    todo = [s for s in seeds if s not in done]
    if todo:
        p = make_problem(setting, [RUN_SEED_OFFSET + s for s in todo], device, ck)
        partial = folder/f"partial_{'-'.join(map(str, todo))}_{steps}.pt"
        folder.mkdir(parents=True, exist_ok=True)
        rec, evals, wall = _run_batch(method, p, steps, eval_every, guard, partial, save_every, bar_parent, progress)
        for i, s in enumerate(todo):
            done[s] = {'record': rec[i], 'evals': evals[i], 'wall': torch.tensor(wall)}
            if cache is not False: _save(done[s], folder/f'seed{s}.pt')
        partial.unlink(missing_ok=True)
    n_eval = steps//eval_every + 1 + (steps % eval_every > 0)
    return {'method': method, 'setting': setting, 'seeds': seeds,
            'record': torch.stack([done[s]['record'][:steps] for s in seeds]),
            'evals': torch.stack([done[s]['evals'][:n_eval] for s in seeds]),
            'eval_steps': torch.tensor(sorted({*range(0, steps, eval_every), steps})),
            'wall': torch.stack([done[s]['wall'][:steps] for s in seeds])}


# %% [markdown]
# A short run of AMG on setting (c), two seeds, and the same run again: the second comes from the
# cache.

# %%
import tempfile
with tempfile.TemporaryDirectory() as d:
    t0 = time.time()
    r = run('amg', 'c', steps=4, seeds=[0, 1], eval_every=2, cache=d, progress=False)
    t1 = time.time()
    r2 = run('amg', 'c', steps=4, seeds=[0, 1], eval_every=2, cache=d, progress=False)
    t2 = time.time()
test_eq(r['record'].shape, (2, 4, 5)); test_eq(r['evals'].shape, (2, 3, 6)); test_eq(r['eval_steps'].tolist(), [0, 2, 4])
test_eq(r['record'], r2['record'])
print(f'first run {t1 - t0:.1f}s, cached {t2 - t1:.2f}s; branches {r["record"][..., 0].tolist()}')

# %% [markdown]
# Bad input fails before any compute, with one line naming the valid values:

# %%
test_fail(lambda: run('adam', 'c'), contains="use one of 'sgd'")
test_fail(lambda: run('amg', 'c', steps=0), contains='positive integer')
test_fail(lambda: run('amg', 'c', seeds=[]), contains='seeds is empty')
test_fail(lambda: run('amg', 'z'), contains='use one of a, b, c, d')
test_fail(lambda: run('amg', 'd', checkpoint='cnn_fashionmnist'), contains="net='cnn', expected 'mlp'")
