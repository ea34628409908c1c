# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Meta Guard on your own model
#
# > One entry point, `MetaGuard(model, loss_fn)`, that takes a torch model, a loss and any iterable of batches (a DataLoader).

# %% [markdown]
# After the paper's MLP and CNN, the next model is yours. `MetaGuard` wraps everything the earlier
# chapters build (the flat seed-batched parameters of chapter 01, a shipped learned optimizer of
# chapter 02, a method's step of chapter 03) behind three things a PyTorch user already knows: a
# model, a loss, and batches.
#
# ```python
# from metaguard_nb.meta_guard import MetaGuard
# mg = MetaGuard(model, torch.nn.functional.cross_entropy, method='amg', lr_eta=0.3)
# for k in range(100):
#     info = mg.step(train_loader)        # draws the T inner batches and the judging batch B_e it needs
# trained = mg.model                      # your model class, with the method's current weights
# ```

# %%
#| default_exp meta_guard

# %%
#| export
import copy, hashlib, inspect, itertools, json, logging, re, time
from dataclasses import fields
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from dask.distributed import Client, LocalCluster, as_completed
from fastcore.basics import patch
from fastprogress.fastprogress import progress_bar

from metaguard_nb.guards import Batches, GuardConfig, get_method, init_state
from metaguard_nb.lstm import LSTMConfig, Theta
from metaguard_nb.metatrain import SETTINGS, load_checkpoint
from metaguard_nb.optimizees import Optimizee

# %%
import math, tempfile, time
from fastcore.test import test_close, test_eq, test_fail, test_ne


# %% [markdown]
# ## The learned optimizer: a shipped checkpoint, a file, or a Theta
#
# `optimizer` names one of the shipped meta-trained optimizers (`'cnn_fashionmnist'`, `'mlp_mnist'`),
# a checkpoint file, or is a `Theta` (with its `LSTMConfig`). Its LSTM must read the inputs the
# library feeds it: a checkpoint of another input size is refused in one line.

# %%
#| export
def learned_optimizer(optimizer, # a shipped name, a checkpoint path, or a Theta
                      lstm_cfg:LSTMConfig|None=None, # the architecture of a Theta (default LSTMConfig())
                     ) -> tuple:
    "(LSTMConfig, Theta) of a learned optimizer, checked for the input size its weights expect."
    if isinstance(optimizer, Theta): cfg, theta = lstm_cfg or LSTMConfig(), optimizer
    elif isinstance(optimizer, (str, Path)):
        if not str(optimizer).endswith('.pt') and str(optimizer) not in SETTINGS:
            raise ValueError(f"unknown optimizer {str(optimizer)!r}: use a shipped one ({', '.join(map(repr, SETTINGS))}), a .pt checkpoint or a Theta")
        ck_cfg, theta, _ = load_checkpoint(optimizer)
        cfg = ck_cfg.lstm
    else: raise ValueError(f'optimizer={optimizer!r}: use a shipped name, a .pt checkpoint path or a Theta')
    got = theta.W['w_ih1'].shape[-1]
    if got != cfg.n_in:
        raise ValueError(f"the optimizer's LSTM reads {got} input features, its config says {cfg.n_in} "
                         f"(use_loss_input={cfg.use_loss_input}): pass the LSTMConfig it was trained with")
    return cfg, theta


# %%
test_eq(learned_optimizer('cnn_fashionmnist')[0], LSTMConfig())
test_fail(lambda: learned_optimizer('resnet_imagenet'), contains="use a shipped one ('cnn_fashionmnist'")
test_fail(lambda: learned_optimizer(learned_optimizer('mlp_mnist')[1], LSTMConfig(use_loss_input=False)), contains='reads 4 input features')


# %% [markdown]
# ## Models with buffers
#
# The functional core treats a model's *parameters* as data (`eta`, one row per seed) and calls the
# model with `torch.func.functional_call`. Buffers stay in the template module. A BatchNorm layer in
# training mode with running statistics would update them in place, from inside `vmap`, once per
# loss evaluation (an AMG step evaluates the loss dozens of times, on batches of several seeds):
# the statistics would be shared by all seeds and updated by every candidate the guard rejects, so
# they could not be right. `MetaGuard` refuses such a model, in one line that names the fix:
# normalisation from batch statistics only (`nn.BatchNorm2d(..., track_running_stats=False)`),
# `GroupNorm` or `LayerNorm`, which are pure functions of the batch and work under the functional
# core as they are.

# %%
#| export
def check_model(model:nn.Module, # the user's model
               ):
    "A one-line error for a model Meta Guard cannot optimize; nothing for one it can."
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f'{type(model).__name__} has no trainable parameters: Meta Guard optimizes a model\'s parameters')
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats:
            raise ValueError(f"{name or 'the model'} ({type(m).__name__}) keeps running statistics, which a functional, seed-batched "
                             f"step cannot update correctly: use {type(m).__name__}(..., track_running_stats=False), GroupNorm or LayerNorm")


# %%
test_fail(lambda: check_model(nn.ReLU()), contains='has no trainable parameters')
test_fail(lambda: check_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))), contains='track_running_stats=False')
check_model(nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)))


# %% [markdown]
# ## MetaGuard
#
# A step needs T inner batches and one judging batch $B_e$ per seed: `T + 1` batches, drawn in that
# order from the iterable it is given. A re-iterable source (a DataLoader, a list) is read on from
# where the last step stopped, and starts a new pass when it is exhausted; a one-shot iterator that
# runs out in the middle of a step is an error that says how many batches a step needs. Batches are
# checked before any compute: every batch must have the first batch's shapes (a DataLoader's last,
# short batch is dropped with `drop_last=True`), and the loss must be a scalar.

# %%
#| export
class StepInfo(NamedTuple):
    "What one step did, per seed."
    branch: list # the chosen candidate's name (see its `guards.Method.branches`), or 'none finite'
    loss: torch.Tensor # l(eta_new; B_e) [S]
    counters: torch.Tensor # this step's gradient evaluations, forward evaluations, LSTM steps [S, 3]
    candidates: torch.Tensor|None # the guard's candidate losses on B_e [S, K]

class MetaGuard:
    "Meta Guard (or any registered method, guards.METHODS) on a user's model: `step(batches)` makes one step, `model` gives the weights back."
    def __init__(self,
                 model:nn.Module, # the model to train; its current parameters are the starting point
                 loss_fn=nn.functional.cross_entropy, # loss(model(x), y) -> scalar
                 method:str='amg', # a registered method (guards.METHODS)
                 optimizer='cnn_fashionmnist', # the learned optimizer: a shipped name, a .pt checkpoint, or a Theta
                 lr_eta:float=GuardConfig.lr_eta, # lambda_eta: the fallback's SGD step on your model (see "Which lambda_eta" below)
                 lr_theta:float=GuardConfig.lr_theta, # lambda_theta: the fallback's step on the learned optimizer
                 T:int=GuardConfig.T, # unroll length
                 seeds:int=1, # independent copies run side by side (each from the model's weights, each on its own batches)
                 device:str|torch.device='cpu', # where the seeds run
                 lstm_cfg:LSTMConfig|None=None, # the architecture, when `optimizer` is a Theta
                 **guard, # further `GuardConfig` fields, e.g. backtrack=0.5
                ):
        self.step_fn = get_method(method).step
        check_model(model)
        if not isinstance(seeds, int) or seeds <= 0: raise ValueError(f'seeds={seeds!r}: use a positive integer')
        self.method, self.S, self.device = method, seeds, torch.device(device)
        self.lstm_cfg, theta = learned_optimizer(optimizer, lstm_cfg)
        self.cfg = GuardConfig(lr_eta=lr_eta, lr_theta=lr_theta, T=T, **guard)
        self.template = copy.deepcopy(model)
        self.optimizee = Optimizee(self.template, loss_fn=loss_fn, name=type(model).__name__)
        self.template.to(self.device)  # buffers (and the template's own parameters) on the step's device
        eta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()]).to(self.device)
        self.state = init_state(method, eta0.expand(seeds, -1).clone(), theta)
        self._source, self.steps = None, 0  # (the re-iterable source of the last step, its iterator)


# %% [markdown]
# Drawing a step's `T + 1` batches per seed from the source, and checking them before any compute:

# %%
#| export
@patch
def _draw(self:MetaGuard, batches) -> list:
    "S x (T + 1) batches from `batches`, or a one-line error."
    need = self.S*(self.cfg.T + 1)
    ran_out = lambda k: ValueError(f'the batches ran out after {k} of the {need} a step needs (T + 1 = {self.cfg.T + 1} per seed, '
                                   f'{self.S} seed(s)): pass a DataLoader or another re-iterable source, or more batches')
    if iter(batches) is batches:  # a one-shot iterator
        out = list(itertools.islice(batches, need))
        if len(out) < need: raise ran_out(len(out))
        return out
    src, it = self._source if self._source is not None and self._source[0] is batches else (batches, iter(batches))
    out, fresh = [], False
    while len(out) < need:
        b = next(it, None)
        if b is None:  # the end of a pass: read on from a new one, unless the source is empty
            if fresh: raise ran_out(len(out))
            it, fresh = iter(batches), True
            continue
        out.append(b); fresh = False
    self._source = (batches, it)
    return out

@patch
def _batches(self:MetaGuard, drawn:list) -> Batches:
    "Stack S x (T + 1) (x, y) pairs into Batches, checking their shapes."
    if not all(isinstance(b, (tuple, list)) and len(b) == 2 for b in drawn):
        raise ValueError('each batch must be a pair (x, y), as a DataLoader of a supervised dataset gives them')
    x0, y0 = drawn[0]
    for x, y in drawn:
        if x.shape != x0.shape or y.shape != y0.shape:
            raise ValueError(f'batches of different shapes: {tuple(x0.shape)}, {tuple(y0.shape)} and then {tuple(x.shape)}, '
                             f'{tuple(y.shape)}: give equal batches (DataLoader(..., drop_last=True))')
    T, S = self.cfg.T, self.S
    x = torch.stack([b[0] for b in drawn]).to(self.device).view(S, T + 1, *x0.shape)
    y = torch.stack([b[1] for b in drawn]).to(self.device).view(S, T + 1, *y0.shape)
    return Batches(x[:, :T], y[:, :T], x[:, T], y[:, T])

@patch
def _check_loss(self:MetaGuard, b:Batches):
    with torch.no_grad():
        try: out = self.optimizee.loss(self.state.eta[0], b.xe[0], b.ye[0])
        except Exception as e: raise ValueError(f'the model and loss fail on a batch of shape {tuple(b.xe.shape[1:])}: {type(e).__name__}: {e}') from None
    if out.dim() != 0: raise ValueError(f'the loss must be a scalar (the mean over the batch); it has shape {tuple(out.shape)}')


# %% [markdown]
# A step, and the trained model back as the user's own class:

# %%
#| export
@patch
def step(self:MetaGuard,
         batches, # an iterator of (x, y) batches; the step takes S x (T + 1) of them
        )->StepInfo:
    "One step of the method on S x (T + 1) batches drawn from `batches`; returns what the step did."
    b = self._batches(self._draw(batches))
    if self.steps == 0: self._check_loss(b)
    self.state, rec = self.step_fn(self.cfg, self.lstm_cfg, self.optimizee, self.state, b)
    self.steps += 1
    names = list(get_method(self.method).branches) + ['none finite']
    return StepInfo([names[i] for i in rec.branch.tolist()], rec.loss, rec.counters, rec.candidates)

@patch
def module(self:MetaGuard,
           seed:int=0, # which of the side-by-side copies (0 to seeds - 1)
          )->nn.Module:
    "A copy of the user's model with seed `seed`'s current parameters."
    m = copy.deepcopy(self.template)
    with torch.no_grad(): nn.utils.vector_to_parameters(self.state.eta[seed].detach().clone(), m.parameters())
    return m

@patch(as_prop=True)
def model(self:MetaGuard) -> nn.Module: return self.module(0)
@patch
def state_dict(self:MetaGuard,
               seed:int=0, # which of the side-by-side copies (0 to seeds - 1)
              )->dict: return self.module(seed).state_dict()
@patch
def __repr__(self:MetaGuard): return f'MetaGuard({self.method}, {self.optimizee.name}, m={self.optimizee.m}, seeds={self.S}, steps={self.steps})'


# %% [markdown]
# ## A first check: the paper's CNN, through MetaGuard and through the runner
#
# On panel (a)'s problem (the sigmoid CNN on FashionMNIST, the CNN-trained optimizer), `MetaGuard`
# fed with the runner's own batches makes the runner's numbers: the same eta after three AMG steps.

# %%
from metaguard_nb.guards import step_batches
from metaguard_nb.runner import RUN_SEED_OFFSET, make_problem, setting_checkpoint

# %%
p = make_problem('a', [RUN_SEED_OFFSET], ck=setting_checkpoint('a'))
mg = MetaGuard(p.optimizee.module, method='amg', optimizer='cnn_fashionmnist', compile=False)
mg.state = mg.state._replace(eta=p.eta0.clone())  # the runner's initialisation of seed 0
st = init_state('amg', p.eta0, p.theta)
for k in range(3):
    b = step_batches(p.inner, p.evals)
    pairs = [(b.xs[0, t], b.ys[0, t]) for t in range(10)] + [(b.xe[0], b.ye[0])]
    info = mg.step(iter(pairs))
    st, rec = get_method('amg').step(GuardConfig(compile=False), p.lstm_cfg, p.optimizee, st, b)
    test_eq(info.branch, [get_method('amg').branches[int(rec.branch[0])]])
test_close(mg.state.eta, st.eta, eps=1e-6)
test_eq(torch.cat([q.detach().reshape(-1) for q in mg.model.parameters()]), mg.state.eta[0])
mg


# %% [markdown]
# ## Comparing methods on your model: seeds, pairs, resume
#
# `seeds_run` runs one method on several seeds side by side, in one `MetaGuard` of that many
# copies (a seed-batched step costs far less than the same seeds one after another): seed `s`
# starts from the weights of `make_model(s)` and reads the batches of `batches(s)`, T + 1 of them
# per step whatever the method, and the run gives back each seed's monitor-set loss every
# `eval_every` steps and its branch at every step. `compare` runs a dict of such runs on the same
# seeds, so the methods can be compared seed by seed, as the Figure 1 panels are. The runs go to a
# Dask `LocalCluster` (an existing cluster by address, or this process with `workers=0`), one task
# per run and `shard` seeds, and each finished seed is kept in a JSON file under `folder`, named by
# the run's label and a hash of its settings: call `compare` again and it reads what is there and
# computes only what is missing, as the grid does ([03d_grid](03d_grid.ipynb)).

# %%
#| export
def seed_streams(batches, # seed -> an iterable of (x, y) batches
                 seeds:list, # the seeds, in the order of MetaGuard's copies
                 per_step:int, # batches a step takes per seed (T + 1)
                ):
    "One stream for seeds side by side: at each step `per_step` batches of each seed's own source in turn; a source starts a new pass when it ends."
    sources = [batches(s) for s in seeds]
    its = [iter(b) for b in sources]
    while True:
        for i, s in enumerate(seeds):
            for _ in range(per_step):
                b = next(its[i], None)
                if b is None:  # the end of a pass
                    its[i] = iter(sources[i]); b = next(its[i], None)
                    if b is None: raise ValueError(f'batches({s}) gave no batches: give each seed a non-empty, re-iterable source (a DataLoader)')
                yield b

def seeds_run(make_model, # seed -> a fresh model (its initialisation drawn from the seed)
              batches, # seed -> an iterable of (x, y) batches; every run of a seed reads the same ones
              monitor, # model -> its monitor-set loss, a float
              seeds:list, # the seeds, run side by side
              steps:int, # steps of the run
              eval_every:int, # the monitor-set loss every this many steps
              run:dict, # MetaGuard's keyword arguments: method, lr_eta, GuardConfig fields, ...
              threads:int|None=None, # torch threads (None: as this process has them)
              progress:bool=False, # show a progress bar
             )->list:
    "Per seed: the monitor-set loss at step 0 and every `eval_every` steps, the optimizee gradient evaluations spent by then, the branch of every step, and the run's wall time."
    if threads: torch.set_num_threads(threads)
    t0, seeds = time.perf_counter(), list(seeds)
    mg = MetaGuard(make_model(seeds[0]), seeds=len(seeds), **run)
    eta = [torch.cat([p.detach().reshape(-1) for p in make_model(s).parameters()]) for s in seeds]
    mg.state = mg.state._replace(eta=torch.stack(eta).to(mg.device))
    data = seed_streams(batches, seeds, mg.cfg.T + 1)
    watch = torch.no_grad()(lambda i: monitor(mg.module(i)))  # the monitor-set loss of seed i's model, no graph kept
    curves, grads, branches = [[watch(i)] for i in range(len(seeds))], [[0] for _ in seeds], [[] for _ in seeds]
    spent = torch.zeros(len(seeds), dtype=torch.long)
    for k in progress_bar(range(steps), leave=False, display=progress):
        info = mg.step(data)
        spent += info.counters[:, 0].cpu()  # this step's optimizee gradient evaluations
        for i, b in enumerate(info.branch): branches[i].append(b)
        if (k + 1) % eval_every == 0:
            for i, (c, g) in enumerate(zip(curves, grads)): c.append(watch(i)); g.append(int(spent[i]))
    return [dict(curve=c, grads=g, branches=b, seconds=time.perf_counter() - t0) for c, g, b in zip(curves, grads, branches)]

def run_path(folder, # the comparison's folder
             label:str, # the run's label
             run:dict, # its MetaGuard keyword arguments
             steps:int, # steps of the run
             eval_every:int, # monitor-set loss every this many steps
             seed:int, # the seed
            )->Path:
    "Where `compare` keeps one seed of one run: a folder per label and settings (a hash of their JSON text), a file per seed."
    settings = json.dumps(dict(run=run, steps=steps, eval_every=eval_every), sort_keys=True, default=str)
    slug = re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')
    return Path(folder)/f'{slug}-{hashlib.sha1(settings.encode()).hexdigest()[:8]}'/f'seed{seed}.json'


# %% [markdown]
# Bad settings are refused in one line before anything runs; a run that fails on a worker stops the
# comparison with its label and seed, and the seeds already finished stay in their files.

# %%
#| export
def _check_runs(runs:dict):
    "A one-line error for a run whose settings MetaGuard would refuse."
    if not runs: raise ValueError('runs is empty: pass {label: MetaGuard keyword arguments}, e.g. {"AMG": dict(method="amg")}')
    known = set(inspect.signature(MetaGuard.__init__).parameters) - {'self', 'model', 'guard'} | {f.name for f in fields(GuardConfig)}
    for label, run in runs.items():
        bad = sorted(set(run) - known)
        if bad: raise ValueError(f"run {label!r}: unknown setting {bad[0]!r}: use MetaGuard's arguments or GuardConfig's fields")
        get_method(run.get('method', 'amg'))  # one line for an unknown method

def compare(make_model, # seed -> a fresh model (its initialisation drawn from the seed)
            batches, # seed -> an iterable of (x, y) batches, read on the worker (so open datasets there)
            monitor, # model -> its monitor-set loss, a float
            runs:dict, # label -> MetaGuard keyword arguments, e.g. {'AMG': dict(method='amg', lr_eta=0.3)}
            seeds, # the seeds
            steps:int, # steps per seed-run
            eval_every:int, # monitor-set loss every this many steps
            folder, # where the seed files go (one folder per model)
            workers:int=2, # LocalCluster worker processes (0: run here, one seed after another)
            threads:int=1, # torch threads per worker
            shard:int|None=None, # seeds per task, run side by side (None: all)
            scheduler:str|None=None, # address of an existing Dask scheduler (None: a LocalCluster here)
            progress:bool=True, # show a progress bar
           )->dict:
    "Every run of `runs` on every seed, computed (`shard` seeds side by side) where its file is missing and read back from `folder`: {label: [seeds_run's dict per seed]}."
    _check_runs(runs)
    seeds = [int(s) for s in seeds]
    path = lambda label, s: run_path(folder, label, runs[label], steps, eval_every, s)
    missing = {label: [s for s in seeds if not path(label, s).exists()] for label in runs}
    shard = shard or len(seeds)
    if not isinstance(shard, int) or shard <= 0: raise ValueError(f'shard={shard!r}: use a positive number of seeds per task')
    todo = [(label, tuple(ss[i:i + shard])) for label, ss in missing.items() for i in range(0, len(ss), shard)]
    def keep(label, shard_seeds, results):
        for s, r in zip(shard_seeds, results):
            p = path(label, s); p.parent.mkdir(parents=True, exist_ok=True)
            p.with_suffix('.tmp').write_text(json.dumps(dict(label=label, seed=s, run=runs[label], steps=steps, eval_every=eval_every, **r), default=str))
            p.with_suffix('.tmp').replace(p)  # a file is whole or absent
    bar = progress_bar(range(len(todo)), display=progress and bool(todo))
    tick = bar.update if progress and todo else (lambda i: None)
    tick(0)
    if todo and not (workers or scheduler):
        for i, (label, ss) in enumerate(todo):
            keep(label, ss, seeds_run(make_model, batches, monitor, ss, steps, eval_every, runs[label])); tick(i + 1)
    elif todo:
        cluster = None if scheduler else LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                                      dashboard_address='127.0.0.1:0', silence_logs=logging.CRITICAL)
        client = Client(scheduler or cluster)
        try:
            futures = {client.submit(seeds_run, make_model, batches, monitor, ss, steps, eval_every, runs[label], threads, pure=False): (label, ss)
                       for label, ss in todo}
            for i, fut in enumerate(as_completed(futures)):
                label, ss = futures[fut]
                if fut.status == 'error':
                    raise RuntimeError(f'{label!r} seeds {list(ss)} failed: {(repr(fut.exception()).splitlines() or [""])[0]}; the finished seeds '
                                       f'are kept in {folder}: mend the cause and call compare again (it computes only what is missing)')
                keep(label, ss, fut.result()); tick(i + 1)
        finally:
            client.close()
            if cluster is not None: cluster.close()
    return {label: [json.loads(path(label, s).read_text()) for s in seeds] for label in runs}



# %% [markdown]
# On a toy problem (a linear model on random data), SGD and AMG on two seeds, here in this process:
# every run of a seed starts from the same loss and the seeds from different ones; the two seeds
# side by side give what each gives alone (the same batches, the same weights, to float rounding);
# and a second call reads the files back instead of computing.

# %%
def toy_model(seed): torch.manual_seed(seed); return nn.Linear(5, 3)
def toy_batches(seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(22)]
toy_x, toy_y = torch.randn(64, 5, generator=torch.Generator().manual_seed(9)), torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(9))
def toy_monitor(m): return float(nn.functional.cross_entropy(m(toy_x), toy_y))

toy_runs = {'SGD': dict(method='sgd', lr_eta=0.5), 'AMG': dict(method='amg', lr_eta=0.5)}
with tempfile.TemporaryDirectory() as d:
    toy = compare(toy_model, toy_batches, toy_monitor, toy_runs, range(2), steps=2, eval_every=1, folder=d, workers=0, progress=False)
    test_eq([len(r['curve']) for r in toy['AMG']], [3, 3])
    test_eq(toy['SGD'][0]['grads'], [0, 1, 2])  # SGD: one gradient evaluation a step
    assert toy['AMG'][0]['grads'][1] > 1  # AMG: the unroll's gradients and the candidates' too
    test_eq(toy['SGD'][0]['curve'][0], toy['AMG'][0]['curve'][0])
    test_ne(toy['SGD'][0]['curve'][0], toy['SGD'][1]['curve'][0])
    one = compare(toy_model, toy_batches, toy_monitor, toy_runs, range(2), steps=2, eval_every=1, folder=Path(d)/'alone', shard=1, workers=0, progress=False)
    for label in toy_runs:
        for a, b in zip(toy[label], one[label]): test_close(a['curve'], b['curve'], eps=1e-5); test_eq(a['branches'], b['branches'])
    test_eq(compare(toy_model, toy_batches, toy_monitor, toy_runs, range(2), steps=2, eval_every=1, folder=d, workers=0, progress=False), toy)
    test_fail(lambda: compare(toy_model, toy_batches, toy_monitor, {'AMG': dict(method='amg', lr=0.5)}, [0], 2, 1, d), contains="unknown setting 'lr'")
    test_fail(lambda: compare(toy_model, toy_batches, toy_monitor, {'A': dict(method='adam')}, [0], 2, 1, d), contains="use one of 'sgd'")

# %% [markdown]
# ## A model the paper does not use: a ReLU MLP on FashionMNIST, from a DataLoader
#
# The model a user is likely to bring: 784 -> 64 -> 32 -> 10 with ReLUs (52,714 parameters, three
# times the paper's MLP), trained from a plain `torch.utils.data.DataLoader` of FashionMNIST. The
# parameters below are the chapter's; under the test suite the run is four steps long.

# %%
import os
import matplotlib.pyplot as plt
import torchvision
from fastprogress.fastprogress import progress_bar
from torch.utils.data import DataLoader
from metaguard_nb.data import data_dir
from metaguard_nb.prepare import prepare

# %%
steps = 4 if os.environ.get('IN_TEST') else 150  # steps per method
eval_every = 2 if os.environ.get('IN_TEST') else 10

prepare('fashionmnist')
train = torchvision.datasets.FashionMNIST(str(data_dir()), train=True, download=False, transform=torchvision.transforms.ToTensor())
def loader(seed):
    "FashionMNIST's training set in batches of 128, shuffled by `seed`; opened where it runs (a Dask worker reads it from disk)."
    data = torchvision.datasets.FashionMNIST(str(data_dir()), train=True, download=False, transform=torchvision.transforms.ToTensor())
    return DataLoader(data, batch_size=128, shuffle=True, drop_last=True, generator=torch.Generator().manual_seed(seed))
monitor = next(iter(DataLoader(train, batch_size=2048, shuffle=True, generator=torch.Generator().manual_seed(99))))

def relu_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

@torch.no_grad()
def monitor_loss(model): return float(nn.functional.cross_entropy(model(monitor[0]), monitor[1]))

def train_curve(make_model, method, lr_eta, steps=steps, **kw):
    "Monitor-set loss every eval_every steps of `method` on a fresh model (seed 0), the same batches for every method."
    r, = seeds_run(make_model, loader, monitor_loss, [0], steps, eval_every, dict(method=method, lr_eta=lr_eta, **kw), progress=True)
    return r['curve'], r['branches']



# %% [markdown]
# **Which lambda_eta for my model?** The guards fall back to SGD with step size $\lambda_\eta$, and
# the paper's $\lambda_\eta = 3$ was chosen for sigmoid networks (LGL2O's). A guard can only help
# where its fallback is a reasonable optimizer: if SGD at $\lambda_\eta$ diverges or stalls, the guard
# either never takes the fallback or takes a bad one. So the rule this chapter uses: **sweep SGD's
# step size on the model for a few dozen steps, and give the guard the best one.** On the ReLU MLP:

# %%
sweep = {lr: train_curve(relu_mlp, 'sgd', lr)[0] for lr in (0.03, 0.1, 0.3, 1.0, 3.0)}
best_lr = min(sweep, key=lambda lr: sweep[lr][-1] if math.isfinite(sweep[lr][-1]) else math.inf)
for lr, c in sweep.items(): print(f'SGD lambda_eta = {lr:<5}: monitor loss {c[0]:.3f} -> {c[-1]:.3f}')
print('best:', best_lr)

# %% [markdown]
# Then SGD, LGL2O and AMG on the same batches, AMG with the paper's $\lambda_\eta = 3$ and with the
# swept one (each method from the same initialisation; one seed here, so read the curves as an
# example, not as a measurement of the methods):

# %%
runs = {('SGD', best_lr): train_curve(relu_mlp, 'sgd', best_lr), ('LGL2O', best_lr): train_curve(relu_mlp, 'lgl2o', best_lr),
        ('AMG', 3.0): train_curve(relu_mlp, 'amg', 3.0), ('AMG', best_lr): train_curve(relu_mlp, 'amg', best_lr)}
fig, ax = plt.subplots(figsize=(6, 3.5))
for (name, lr), (c, br) in runs.items():
    ax.plot([k*eval_every for k in range(len(c))], c, label=f'{name}, lambda_eta = {lr}')
ax.set(xlabel='step', ylabel='monitor-set loss', yscale='log', title='ReLU MLP 784-64-32-10, FashionMNIST'); ax.legend(fontsize=8)
plt.tight_layout()
for (name, lr), (c, br) in runs.items():
    if name != 'SGD': print(f'{name} (lambda_eta = {lr}): branches', {k: br.count(k) for k in dict.fromkeys(br)})


# %% [markdown]
# **A model with normalisation.** A small CNN with BatchNorm: with running statistics it is refused
# (see "Models with buffers"); with `track_running_stats=False` it trains like any other model (the
# statistics of each batch, in training and in evaluation alike).

# %%
def bn_cnn(seed=0, track=False):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 5, 2), nn.BatchNorm2d(8, track_running_stats=track), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, 2), nn.BatchNorm2d(16, track_running_stats=track), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16*5*5, 10))
test_fail(lambda: MetaGuard(bn_cnn(track=True)), contains='track_running_stats=False')
bn_sweep = {lr: train_curve(bn_cnn, 'sgd', lr)[0][-1] for lr in (0.1, 0.3, 1.0, 3.0)}
bn_lr = min(bn_sweep, key=lambda lr: bn_sweep[lr] if math.isfinite(bn_sweep[lr]) else math.inf)
bn_runs = {name: train_curve(bn_cnn, m, bn_lr)[0] for name, m in (('SGD', 'sgd'), ('LGL2O', 'lgl2o'), ('AMG', 'amg'))}
print('SGD sweep (final monitor loss):', {k: round(v, 3) for k, v in bn_sweep.items()}, '-> lambda_eta =', bn_lr)
print({k: f'{c[0]:.3f} -> {c[-1]:.3f}' for k, c in bn_runs.items()})

# %% [markdown]
# **What the two models show** (the outputs above, saved with the notebook: one seed, 150 steps, the
# shipped CNN/FashionMNIST optimizer; under the tests the same cells run 4 steps), read from them:

# %%
from IPython.display import Markdown, display

def what_they_show() -> str:
    "The two models' runs above, in words."
    n = len(runs[('AMG', 3.0)][1])
    (s, _), (l, _), (a3, b3), (a, b) = runs[('SGD', best_lr)], runs[('LGL2O', best_lr)], runs[('AMG', 3.0)], runs[('AMG', best_lr)]
    above = next((k*eval_every for k in range(1, len(s)) if l[k] > s[k]), None)
    lines = [f"On the ReLU MLP the paper's lambda_eta = 3 leaves SGD at {sweep[3.0][-1]:.3f} after {n} steps (chance is ln 10) and "
             f"AMG at {a3[-1]:.3f}: its learned candidate won {b3.count('learned')} of {n} steps, but a fallback that cannot train "
             f"cannot lift it. With the swept lambda_eta = {best_lr}, SGD ends at {s[-1]:.3f} and LGL2O (a fresh SGD candidate every "
             f"step) at {l[-1]:.3f}" + (f", above SGD from step {above} on" if above else ', never above SGD')
             + f"; AMG ends at {a[-1]:.3f}, choosing 'stay' at {b.count('stay')} of {n} steps and its learned candidate at "
             f"{b.count('learned')}: once no candidate beats the current parameters on B_e, AMG keeps them, the stall that some "
             "seeds of the paper's protocol show too. With BatchNorm the sweep picks lambda_eta = "
             f"{bn_lr}; SGD ends at {bn_runs['SGD'][-1]:.3f}, LGL2O at {bn_runs['LGL2O'][-1]:.3f} and AMG at {bn_runs['AMG'][-1]:.3f}."]
    return '\n'.join(lines)

display(Markdown(what_they_show()))

# %% [markdown]
# So on models unlike the one it was meta-trained on, the shipped optimizer helps, if at all, in the
# first few dozen steps; the guard keeps AMG from diverging, not from stalling, and it can only be as
# good as the better of its candidates. Tune $\lambda_\eta$ first (the sweep above), and read a stall
# on "stay" in `StepInfo.branch` as the sign that the learned optimizer has nothing more to offer
# this model, or that the fallback's step is too long for the loss's curvature there: beyond the
# paper, `MetaGuard(..., backtrack=0.5)` halves the fallback's step each time 'stay' wins and lets it
# grow back when another candidate wins ([03_guards](03_guards.ipynb), "a fallback that backtracks";
# an option, not the default: it would become the default only by beating every baseline paired per
# seed on panels (a) and (c) at the paper's protocol, which chapter 07's answer for the guard beyond
# the paper reads from the store).

# %% [markdown]
# ## Beyond the paper: a guard that cannot freeze, on these two models
#
# The stall above is the trap that chapter 07 measures at the paper's protocol: where every
# candidate is worse on $B_e$ than the current parameters, AMG keeps them, and the next step builds
# the same kinds of candidates from the same state. Of the variants that
# [03_guards](03_guards.ipynb) builds beyond the paper, backtracking is the one the trap analysis
# supports: its fallback's step halves each time 'stay' wins, so a step too long for the loss's
# curvature cannot keep losing. Adapting the optimizer while waiting left every seed of the steep
# quadratic frozen (03_guards), so it is not run here. On each model, with the swept $\lambda_\eta$:
# SGD, LGL2O, the paper's AMG and AMG with `backtrack=0.5`, on the same seeds (a seed fixes the
# initialisation and the batch order, the same for every method). The runs are kept per seed in
# `outputs/your_model/`, so this section reads them back; with none there it computes them
# (`compare` on a LocalCluster; the table gives the minutes each seed-run took). Under the tests
# it runs two seeds for two steps, in a temporary folder.

# %% tags=["parameters"]
study_seeds = 5  # seeds per method and model
study_steps = 300  # steps per seed-run
study_workers = 2  # Dask LocalCluster workers (0: in this process)
study_dir = None  # where the seed files go (None: outputs/your_model of this checkout)

# %%
from metaguard_nb.data import checkout
from metaguard_nb.report import paired
import numpy as np
import pandas as pd
from scipy import stats

# %% [markdown]
# How many seeds a task runs side by side is measured first: one AMG step (after a warm-up step) of
# one seed, and of all the study's seeds in one `MetaGuard`, on each model. Side by side is chosen
# only where it beats the same seeds one after another on both models; otherwise each task runs one
# seed, which also resumes finer.

# %%
if os.environ.get('IN_TEST'): study_seeds, study_steps, study_workers, study_dir = 2, 2, 0, tempfile.mkdtemp()
study_dir = Path(study_dir or (checkout() or Path.cwd())/'outputs'/'your_model')
study_models = {'ReLU MLP': ('relu_mlp', relu_mlp, best_lr), 'BatchNorm CNN': ('bn_cnn', bn_cnn, bn_lr)}

def amg_step_seconds(make_model, lr_eta:float, seeds:int) -> float:
    "Seconds of one AMG step with `seeds` copies side by side, after a warm-up step."
    mg, data = MetaGuard(make_model(), method='amg', lr_eta=lr_eta, seeds=seeds), loader(0)
    mg.step(data)
    t0 = time.perf_counter(); mg.step(data)
    return time.perf_counter() - t0

step_seconds = {name: {n: amg_step_seconds(make, lr, n) for n in (1, study_seeds)} for name, (_, make, lr) in study_models.items()}
faster_side_by_side = all(t[study_seeds] < study_seeds*t[1] for t in step_seconds.values())
for name, t in step_seconds.items():
    print(f"{name}: one AMG step {t[1]:.2f} s for one seed, {t[study_seeds]:.2f} s for {study_seeds} side by side "
          f"({study_seeds} one after another: {study_seeds*t[1]:.2f} s)")
print('seeds per task:', study_seeds if faster_side_by_side else 1, f'({torch.get_num_threads()} torch thread(s) here)')

# %%
study_runs = lambda lr: {'SGD': dict(method='sgd', lr_eta=lr), 'LGL2O': dict(method='lgl2o', lr_eta=lr),
                         'AMG': dict(method='amg', lr_eta=lr), 'AMG, backtrack': dict(method='amg', lr_eta=lr, backtrack=0.5)}
study_shard = None if faster_side_by_side else 1
study = {name: compare(make, loader, monitor_loss, study_runs(lr), range(study_seeds), study_steps, eval_every, study_dir/folder,
                       workers=study_workers, shard=study_shard)
         for name, (folder, make, lr) in study_models.items()}


# %%
def stays_throughout(r:dict) -> bool:
    "Whether a seed-run chose 'stay' at every step of its last tenth."
    return all(b == 'stay' for b in r['branches'][-max(1, len(r['branches'])//10):])

def at_budget(r:dict, budget:int) -> float:
    "A seed-run's monitor loss at its last evaluation within `budget` optimizee gradient evaluations (the compute-fair view)."
    return r['curve'][max(i for i, g in enumerate(r['grads']) if g <= budget)]

def study_table(study:dict) -> pd.DataFrame:
    "Per model and method: seeds, the final monitor loss's mean and median, its mean at SGD's budget of gradient evaluations, seeds on 'stay' throughout the last tenth, minutes per seed-run."
    budget = lambda got: got['SGD'][0]['grads'][-1]
    rows = [dict(model=name, method=label, seeds=len(rs), mean=np.mean([r['curve'][-1] for r in rs]), median=np.median([r['curve'][-1] for r in rs]),
                 at_sgd_budget=np.mean([at_budget(r, budget(got)) for r in rs]),
                 frozen=f'{sum(map(stays_throughout, rs))} of {len(rs)}' if 'stay' in get_method(study_runs(0)[label]['method']).branches else '-',
                 minutes=np.mean([r['seconds'] for r in rs])/60)
            for name, got in study.items() for label, rs in got.items()]
    return pd.DataFrame(rows).set_index(['model', 'method']).round(3)

study_table(study)


# %%
def study_words(study:dict) -> str:
    "The comparison above in words: the backtracking AMG against each other method, seed by seed, and the frozen seeds."
    lines = []
    for name, got in study.items():
        final = {label: {i: r['curve'][-1] for i, r in enumerate(rs)} for label, rs in got.items()}
        p = {b: paired(final['AMG, backtrack'], final[b]) for b in ('SGD', 'LGL2O', 'AMG')}
        n = len(got['AMG'])
        every = all(q['below'] == q['n'] for q in p.values())
        lines.append(f"On the {name} (lambda_eta = {study_models[name][2]}, {n} seeds x {got['AMG'][0]['steps']} steps), AMG with backtracking "
                     f"ends below the same seed's SGD on {p['SGD']['below']} of {n} seeds, LGL2O on {p['LGL2O']['below']} and the paper's AMG "
                     f"on {p['AMG']['below']} ({'below every other method on every seed' if every else 'not below every other method on every seed'}); "
                     f"on 'stay' throughout the last tenth: {sum(map(stays_throughout, got['AMG']))} of {n} seeds of the paper's AMG, "
                     f"{sum(map(stays_throughout, got['AMG, backtrack']))} with backtracking. At SGD's budget of optimizee gradient evaluations "
                     f"({got['SGD'][0]['grads'][-1]}, the compute-fair view), it is below the same seed's SGD on "
                     f"{sum(at_budget(a, b['grads'][-1]) < b['curve'][-1] for a, b in zip(got['AMG, backtrack'], got['SGD']))} of {n} seeds.")
    n = min(len(rs) for got in study.values() for rs in got.values())
    lines.append(f"With {n} seeds no paired test can reach 0.05 (the sign test's smallest two-sided p is {stats.binomtest(n, n).pvalue:.3g}), "
                 "so these counts describe the runs; the paired tests at the paper's protocol are chapter 07's.")
    return '\n\n'.join(lines)

display(Markdown(study_words(study)))

# %% [markdown]
# **Why both AMGs sit at chance on the ReLU MLP.** The table's ReLU MLP rows put both AMGs near
# $\ln 10$, the loss of a prediction that does not depend on the input, where SGD trains on every seed.
# Counted per method below: the seeds whose monitor loss never leaves chance (within 0.05 of
# $\ln 10$ at every evaluation after step 0); then the first step of the first such seed of the
# paper's AMG is replayed (the same initialisation and batches as its stored run), with the ReLU
# units that are dead on the monitor set (zero on every example) counted before and after it.

# %%
CHANCE = math.log(10)  # the loss of a constant prediction on FashionMNIST's ten balanced classes
at_chance = lambda r: min(r['curve'][1:]) > CHANCE - 0.05

def dead_units(model:nn.Module) -> tuple:
    "(dead, all): the outputs of `model`'s nn.ReLU modules that are zero on every monitor-set example."
    outs = []
    hooks = [m.register_forward_hook(lambda m, i, o: outs.append(o)) for m in model.modules() if isinstance(m, nn.ReLU)]
    with torch.no_grad(): model(monitor[0])
    for h in hooks: h.remove()
    return sum(int(o.amax(0).eq(0).sum()) for o in outs), sum(o[0].numel() for o in outs)

def first_step(make_model, lr_eta:float, seed:int) -> dict:
    "One AMG step of `seed` as the study's run makes it: the branch, the candidates' losses on B_e, and the weights' norm, monitor loss and dead ReLU units before and after."
    mg = MetaGuard(make_model(seed), method='amg', lr_eta=lr_eta)
    look = lambda: dict(norm=float(mg.state.eta[0].norm()), loss=monitor_loss(mg.model), dead=dead_units(mg.model))
    before = look()
    info = mg.step(seed_streams(loader, [seed], mg.cfg.T + 1))
    return dict(seed=seed, branch=info.branch[0], candidates=dict(zip(get_method('amg').branches, info.candidates[0].tolist())),
                before=before, after=look())

mlp = study['ReLU MLP']
chance_seeds = {label: [i for i, r in enumerate(rs) if at_chance(r)] for label, rs in mlp.items()}
replay = first_step(relu_mlp, best_lr, (chance_seeds['AMG'] or [0])[0])
pd.DataFrame({label: [len(s), len(mlp[label])] for label, s in chance_seeds.items()}, index=['at chance', 'seeds'])


# %%
def chance_words(replay:dict) -> str:
    "The replayed first step in words."
    c, b, a = replay['candidates'], replay['before'], replay['after']
    stored = mlp['AMG'][replay['seed']]['branches'][0]
    return (f"On seed {replay['seed']} the first step's learned candidate scored {c['learned']:.4f} on $B_e$, staying {c['stay']:.4f} "
            f"and the fallback {c['fallback']:.4f}, so '{replay['branch']}' won (the stored run's first step: '{stored}'). "
            f"The step took the weights' norm from {b['norm']:.1f} to {a['norm']:.1f} and left {a['dead'][0]} of the {a['dead'][1]} ReLU "
            f"units dead on every monitor example (before it: {b['dead'][0]}); the monitor loss went from {b['loss']:.4f} to "
            f"{a['loss']:.4f} (ln 10 = {CHANCE:.4f}). "
            + ("A fresh network that starts above the constant prediction's loss lets the comparison on $B_e$ read a collapse "
               "to a constant output as progress; no gradient reaches the units behind a dead ReLU, and the seed stays at chance "
               "for the rest of its run (the count above)." if a['dead'][0] == a['dead'][1] and c[replay['branch']] < c['stay'] else
               "Here the first step did not kill every unit."))

display(Markdown(chance_words(replay)))

# %% [markdown]
# So the guard protects each step's loss on $B_e$, not the network's ability to keep learning, and
# backtracking cannot help where the seed is not stalled on 'stay' but stuck behind dead units. On a
# model of your own, a first step whose `StepInfo.branch` is 'learned' and that moves the weights'
# norm by an order of magnitude is the sign to look for.

# %% [markdown]
# ## Bad input, in one line, before any compute

# %%
few = [(monitor[0][:128], monitor[1][:128])]*3
test_fail(lambda: MetaGuard(relu_mlp(), method='adam'), contains="use one of 'sgd'")
test_fail(lambda: MetaGuard(relu_mlp(), optimizer='nope'), contains='use a shipped one')
test_fail(lambda: MetaGuard(relu_mlp(), seeds=0), contains='positive integer')
test_fail(lambda: MetaGuard(relu_mlp()).step(iter(few)), contains='ran out after 3 of the 11 a step needs')
test_fail(lambda: MetaGuard(relu_mlp()).step([(monitor[0][:128], monitor[1][:128]), (monitor[0][:64], monitor[1][:64])]*6),
          contains='batches of different shapes')
test_fail(lambda: MetaGuard(relu_mlp(), loss_fn=lambda out, y: nn.functional.cross_entropy(out, y, reduction='none')).step(few*4),
          contains='the loss must be a scalar')
test_fail(lambda: MetaGuard(relu_mlp()).step([(torch.zeros(128, 3, 32, 32), monitor[1][:128])]*11), contains='the model and loss fail')

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.meta_guard`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('meta_guard')
