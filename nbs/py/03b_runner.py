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
import math, time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from fastprogress.fastprogress import progress_bar

from metaguard_nb.data import Sampler, load
from metaguard_nb.guards import METHODS, GuardConfig, get_method, init_state, step_batches
from metaguard_nb.lstm import Theta
from metaguard_nb.metatrain import checkpoint_dir, load_checkpoint, monitor_set, setting as metatrain_setting
from metaguard_nb.persist import deferred_interrupt, save_atomic
from metaguard_nb.optimizees import Optimizee, optimizee
from metaguard_nb.store import eval_steps, find_seed, partial_file, result_folder, run_key, save_seed, write_key

# %%
from fastcore.test import test_close, test_eq, test_fail


# %% [markdown]
# ## Panels and protocols
#
# A `Panel` is a test setting of Figure 1: the meta-training setting whose optimizer it loads (a
# record of `metatrain.SETTINGS`), and the network and dataset it tests on. The paper's four:
#
# | panel | meta-train (checkpoint) | meta-test |
# |---|---|---|
# | a | CNN & FashionMNIST | CNN & FashionMNIST |
# | b | CNN & FashionMNIST | MLP & FashionMNIST |
# | c | CNN & FashionMNIST | CNN & MNIST |
# | d | MLP & MNIST | CNN & FashionMNIST |
#
# A `Protocol` is how many seeds and steps, how often the monitor set and the test split are
# evaluated, and which panels and methods its report counts: the paper's (25 seeds x 2,000 steps),
# the quick one (3 x 300) and the one the test suite runs (2 x 20) are three instances. The methods it
# counts are those the library registers itself (`guards.METHODS` as this module finds it), so a
# method registered later (an experiment, a test's toy) never makes a committed report incomplete.

# %%
#| export
class Panel(NamedTuple):
    "A panel of Figure 1: the meta-training setting whose optimizer it tests, and the network and dataset it tests on."
    trained_on:str # a meta-training setting (`metatrain.SETTINGS`): the checkpoint it loads
    net:str # the test optimizee: 'cnn' or 'mlp'
    dataset:str # the test dataset: 'fashionmnist' or 'mnist'

PANELS = {'a': Panel('cnn_fashionmnist', 'cnn', 'fashionmnist'), 'b': Panel('cnn_fashionmnist', 'mlp', 'fashionmnist'),
          'c': Panel('cnn_fashionmnist', 'cnn', 'mnist'), 'd': Panel('mlp_mnist', 'cnn', 'fashionmnist')}

def register_panel(name:str, # the panel's name, e.g. 'e'
                   panel:Panel, # the panel
                  )->Panel:
    "Add a panel (a name already taken is refused); its meta-training setting must exist."
    if name in PANELS: raise ValueError(f'a panel named {name!r} is registered already')
    metatrain_setting(panel.trained_on)
    PANELS[name] = panel
    return panel

def figure_setting(setting:str, # the panel's name
                  )->Panel:
    "The registered panel `setting`, or a one-line error listing them."
    if setting not in PANELS: raise ValueError(f"setting={setting!r} is not a Figure 1 panel: use one of {', '.join(PANELS)}")
    return PANELS[setting]

@dataclass(frozen=True)
class Protocol:
    "How many seeds and steps, how often it evaluates, and which panels and methods its report counts."
    seeds:int=25 # seeds 0..seeds-1 of every method and panel
    steps:int=2000 # steps of every method
    eval_every:int=10 # steps between monitor-set evaluations
    test_every:int|None=100 # steps between test-split evaluations (a multiple of eval_every; None: at every evaluation)
    panels:tuple=tuple(PANELS) # the panels its report lays out
    methods:tuple=tuple(METHODS) # the methods its report counts: the library's own, the paper's six and safe AMG

PROTOCOLS = {'tiny': Protocol(seeds=2, steps=20), 'quick': Protocol(seeds=3, steps=300), 'paper': Protocol()}

def paper_methods(methods=None, # methods to filter (None: the paper protocol's)
                 )->list:
    "Of `methods` (default: the paper protocol's), those the paper has (not our additions, `Method.ours`)."
    return [m for m in (methods or PROTOCOLS['paper'].methods) if not get_method(m).ours]

def check_device(device:str, # 'cpu', 'cuda' or 'cuda:N'
                )->torch.device:
    "A device that exists here, or a one-line error."
    try: dev = torch.device(device)
    except RuntimeError: raise ValueError(f"device={device!r} is not a device: use 'cpu' or 'cuda'") from None
    if dev.type == 'cuda' and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device={device!r} does not exist here ({torch.cuda.device_count()} CUDA devices): use 'cpu'")
    if dev.type not in ('cpu', 'cuda'): raise ValueError(f"device={device!r} is not supported: use 'cpu' or 'cuda'")
    return dev


# %%
test_eq(figure_setting('c'), ('cnn_fashionmnist', 'cnn', 'mnist')); test_eq(figure_setting('d').trained_on, 'mlp_mnist')
test_eq(paper_methods(), ['sgd', 'l2o', 'lgl2o', 'lgl2o_no_update', 'smg', 'amg']); test_eq(PROTOCOLS['paper'].panels, ('a', 'b', 'c', 'd'))
test_fail(lambda: register_panel('a', PANELS['b']), contains='registered already')
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

def setting_checkpoint(setting:str, # a registered Figure 1 panel, e.g. 'c'
                       checkpoint:str|Path|None=None, # a checkpoint file or name (None: the panel's shipped optimizer)
                      )->tuple:
    "(MetaTrainConfig, Theta, checkpoint dict) of a panel: its shipped optimizer, or `checkpoint` if it was trained on the same setting."
    name = figure_setting(setting).trained_on
    trained = metatrain_setting(name)
    return load_checkpoint(checkpoint if checkpoint is not None else name, expect={'net': trained.net, 'dataset': trained.dataset})

def make_problem(setting:str, # a registered Figure 1 panel, e.g. 'c'
                 seeds:list, # run seeds, one row of every seed-batched tensor each
                 device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
                 ck:tuple|None=None, # `setting_checkpoint(setting, ...)`'s result (None: load the shipped one)
                 eval_batch_size:int=128, # examples in B_e
                )->Problem:
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
# a cheap method's time when every tenth step evaluated both ([A3_bench](A3_bench.ipynb),
# `protocol_shares`, measures where a protocol step's time goes), so the runner measures it every
# `test_every` steps (default 100) and the monitor loss, which Figure 1 draws, every `eval_every`
# steps; in between the test columns hold NaN. Both run seed by seed.

# %%
#| export
@torch.no_grad()
def evaluate(p:Problem, # the run's problem (`make_problem`)
             eta:torch.Tensor, # parameters [S, m]
             chunk:int=2500, # examples per forward pass
             test:bool=True, # also evaluate the test set
            )->torch.Tensor:
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
# ## Run seeds
#
# Finished seeds go to the results store (chapter [03a](03a_store.ipynb)), keyed by everything that
# changes their numbers. A run seed `s` draws from generator streams of `RUN_SEED_OFFSET + s`, so no
# test trajectory replays one of meta-training's.

# %%
#| export
RUN_SEED_OFFSET = 10_000  # run seed s uses generator streams of 10_000 + s: disjoint from meta-training's


# %% [markdown]
# ## The run
#
# Step k (k = 1..steps) draws its batches, calls the method's step, and appends the record: the
# loop of line 1 of Algorithms 1 and 2 ("while termination condition not satisfied do"), the rest of each algorithm one
# call of the method's step function ([03_guards](03_guards.ipynb)). The
# records stay on the device between evaluations (no host round trip per step); at every evaluation
# they move to the CPU. A Ctrl-C never leaves a step half recorded: a finished step is committed
# (state, record, sampler position) with interrupts held back for those few statements, and an
# interrupted evaluation is done again on resume, so no step is replayed or recorded twice.

# %%
#| export
def _check_run_args(method, steps, seeds, eval_every, test_every=None):
    get_method(method)
    if not isinstance(steps, int) or steps <= 0: raise ValueError(f'steps={steps!r}: use a positive integer')
    if len(seeds) == 0: raise ValueError('seeds is empty: give at least one seed, e.g. seeds=range(3)')
    if not isinstance(eval_every, int) or eval_every <= 0: raise ValueError(f'eval_every={eval_every!r}: use a positive integer')
    if test_every is not None and (not isinstance(test_every, int) or test_every <= 0 or test_every % eval_every):
        raise ValueError(f'test_every={test_every!r}: use a positive multiple of eval_every={eval_every}, or None (test at every evaluation)')

def record_rows(records:list, # the steps' records (`guards.Record`)
               )->tuple:
    "Step records -> CPU rows: ([S, 5] each: branch, l(eta; B_e), the step's three counters; [S, K] each: the guard's candidate scores, or None)."
    rows = [torch.stack([q.branch.float(), q.loss, *q.counters.float().T], 1).cpu() for q in records]
    return rows, [None if q.candidates is None else q.candidates.float().cpu() for q in records]

def _run_batch(method, p:Problem, steps, eval_every, gcfg, partial:Path|None, save_every, bar_parent=None, progress=True, test_every=None):
    "Run the seeds of `p` from scratch or from `partial` (None: no resume state); return records, evaluations, wall times."
    step, due = get_method(method).step, lambda k: k % eval_every == 0 or k == steps
    tested = lambda k: test_every is None or k % test_every == 0 or k == steps
    used = get_method(method).inner_batches(gcfg.T)
    st, done, rec, cand, evals, wall = init_state(method, p.eta0, p.theta), 0, [], [], [], []
    if partial is not None and partial.exists():
        rs = torch.load(partial, map_location=p.eta0.device, weights_only=False)
        st, done, rec, evals, wall = rs['state'], rs['k'], rs['rec'], rs['evals'], rs['wall']
        cand = rs.get('cand', [None]*len(rec))  # a resume state saved before the evidence was kept has none for its steps
        p.inner.set_state(rs['inner']); p.evals.set_state(rs['evals_sampler'])
    samplers, pending = (p.inner.state(), p.evals.state()), []
    def evaluate_now():
        evals.append(torch.cat([evaluate(p, st.eta, test=tested(done)), st.counters.float()], 1).cpu())
    def save(k):
        if partial is not None:
            save_atomic({'state': st, 'k': k, 'rec': rec, 'cand': cand, 'evals': evals, 'wall': wall, 'inner': samplers[0],
                         'evals_sampler': samplers[1]}, partial)
    bar = progress_bar(range(done, steps), parent=bar_parent, display=progress)
    try:
        if len(evals) < sum(k <= done for k in eval_steps(steps, eval_every)): evaluate_now()  # step 0, or an interrupted evaluation
        for k in bar:  # Alg. 1 and 2, line 1: "while termination condition not satisfied", here `steps` steps on fresh batches
            t0 = time.perf_counter()
            new, r = step(gcfg, p.lstm_cfg, p.optimizee, st, step_batches(p.inner, p.evals, gcfg.T, used))  # lines 2-8: the method's step
            with deferred_interrupt():  # the step is committed whole or not at all
                st, done, samplers = new, k + 1, (p.inner.state(), p.evals.state())
                pending.append(r); wall.append(time.perf_counter() - t0)
                if due(done): rows, cands = record_rows(pending); rec, cand, pending = rec + rows, cand + cands, []
            if due(done):
                evaluate_now()
                if progress: bar.comment = f'{method}: monitor loss {evals[-1][:, 0].mean():.3f}'
                if done % save_every == 0: save(done)
    except KeyboardInterrupt:
        rows, cands = record_rows(pending)
        rec, cand = rec + rows, cand + cands
        save(done)
        print(f'interrupted after step {done}' + (f': state saved to {partial}; run again to resume' if partial else '')); raise
    K = next((c.shape[1] for c in cand if c is not None), None)  # steps without evidence (an old resume state) read as NaN
    cand = None if K is None else torch.stack([torch.full((len(rec[0]), K), math.nan) if c is None else c for c in cand], 1)
    return torch.stack(rec, 1), cand, torch.stack(evals, 1), wall


# %% [markdown]
# ## Variants: the paper's open choices, one change at a time
#
# The paper leaves choices open that can move a verdict (its step size for every method, how the
# learned optimizer's memory crosses a meta-training window, first-order Eq. 5). A `Variant` names
# one way of settling them: guard settings that differ from `GuardConfig()`'s defaults, and the
# folder of the meta-trained optimizers it uses. The paper protocol is the variant `'paper'`; the
# grid's `--variant` runs any other through the same store (its seeds key apart by what differs), and
# the report reads it the same way.

# %%
#| export
@dataclass(frozen=True)
class Variant:
    "One way to run the methods: guard settings that differ from the defaults, and which meta-trained optimizers."
    name:str # how the grid's command line and the report name it
    guard:tuple=() # (GuardConfig field, value) pairs that differ from the defaults
    checkpoints:str|None=None # folder under outputs/checkpoints with this variant's optimizers, one per meta-training setting; None: the shipped ones
    about:str='' # what it changes, in a line
    unchanged:tuple=() # methods whose numbers it does not change (their seeds are read from the paper variant)

    def guard_config(self,
                     **over, # further GuardConfig fields
                    )->GuardConfig:
        "The variant's GuardConfig; `over` sets further fields (the compile setting, say)."
        return GuardConfig(**{**dict(self.guard), **over})

    def checkpoint(self,
                   setting:str, # the panel's name
                  )->Path|None:
        "The checkpoint file of a panel's meta-training setting under this variant (None: the shipped one)."
        return None if self.checkpoints is None else checkpoint_dir()/self.checkpoints/f'{figure_setting(setting).trained_on}.pt'

_NOT_ADAPTING = ('sgd', 'l2o', 'lgl2o', 'lgl2o_no_update')  # neither theta's fallback step nor Eq. 5's order touches them
VARIANTS = {v.name: v for v in (
    Variant('paper', about="the paper's protocol as the decisions read it"),
    Variant('gT', checkpoints='gT', about="optimizers meta-trained as g^T defines it: each window ends with g^T's coordinate mean",
            unchanged=('sgd',)),
    Variant('lr1', (('lr_eta', 1.0),), about='lambda_eta = 1 for every method (SGD, the SGD candidates, the fallbacks)', unchanged=('l2o',)),
    Variant('lr0.3', (('lr_eta', 0.3),), about='lambda_eta = 0.3 for every method', unchanged=('l2o',)),
    Variant('gT_lr1', (('lr_eta', 1.0),), 'gT', about='the g^T-trained optimizers and lambda_eta = 1'),
    Variant('second_order', (('second_order', True),), about="SMG and AMG: Eq. 5's exact gradient through the unroll",
            unchanged=_NOT_ADAPTING),
    Variant('lr_theta0', (('lr_theta', 0.0),), about='SMG and AMG: the fallback leaves theta as it is (lambda_theta = 0)',
            unchanged=_NOT_ADAPTING),
    Variant('backtrack', (('backtrack', 0.5),), about="beyond the paper: AMG's fallback halves its step each time 'stay' wins",
            unchanged=_NOT_ADAPTING + ('smg',)),
    Variant('adapt_waiting', (('adapt_waiting', True),), about="beyond the paper: where 'stay' wins, AMG's optimizer takes Eq. 5's step on theta",
            unchanged=_NOT_ADAPTING + ('smg',)),
)}

def variant(name:str, # the variant's name
           )->Variant:
    "A registered variant by name, or a one-line error listing them."
    if name not in VARIANTS: raise ValueError(f"unknown variant {name!r}: use one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


# %%
test_eq(variant('paper').guard_config(compile=False), GuardConfig(compile=False))
test_eq(variant('lr1').guard_config().lr_eta, 1.0); test_eq(variant('paper').checkpoint('c'), None)
test_eq(variant('gT').checkpoint('d').relative_to(checkpoint_dir()).as_posix(), 'gT/mlp_mnist.pt')
test_fail(lambda: variant('lr2'), contains="use one of paper, gT")


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
def run(method:str, # a registered method (guards.METHODS)
        setting:str, # Figure 1 panel: a, b, c, d
        steps:int=300, # steps of the method
        seeds=range(3), # run seeds
        device:str='cpu', # 'cpu' or 'cuda'
        eval_every:int=Protocol.eval_every, # steps between monitor-set evaluations
        test_every:int|None=Protocol.test_every, # steps between test-split evaluations (a multiple of eval_every; None: at every evaluation)
        checkpoint:str|Path|None=None, # meta-trained optimizer (default: the setting's shipped checkpoint)
        guard:GuardConfig|None=None, # the guards' hyper-parameters (default GuardConfig())
        store:str|Path|bool|None=None, # results store (default outputs/results); False: read and write no file
        save_every:int=50, # steps between resume saves of an unfinished run
        progress:bool=True, # show a progress bar
        bar_parent=None, # an enclosing fastprogress bar (None: its own)
       )->dict:
    "Run `method` on Figure 1 setting `setting` for `seeds`: stored seeds are read, the others computed (resuming an interrupted run) and stored."
    seeds, guard = [int(s) for s in seeds], guard or GuardConfig()
    _check_run_args(method, steps, seeds, eval_every, test_every)
    dev = check_device(device)
    ck = setting_checkpoint(setting, checkpoint)
    key = run_key(method, setting, eval_every, guard, ck[2], dev, test_every)
    keep = store is not False
    root = store if store not in (None, True, False) else None
    folder = result_folder(key, root)
    done = {}
    for s in seeds:
        r = find_seed(folder, s, steps, eval_every, test_every) if keep else None
        if r is not None: done[s] = r
    todo = [s for s in seeds if s not in done]
    if todo:
        p = make_problem(setting, [RUN_SEED_OFFSET + s for s in todo], device, ck, guard.eval_batch_size)
        partial = partial_file(key, todo, steps, root) if keep else None
        rec, cand, evals, wall = _run_batch(method, p, steps, eval_every, guard, partial, save_every, bar_parent, progress, test_every)
        if keep: write_key(folder, key)
        # how many seeds shared the call, how many threads summed its reductions and which CPU (its vector
        # instructions) or GPU ran it change the float rounding: recorded, not keyed
        info = dict(seeds_in_call=len(todo), torch_threads=torch.get_num_threads(), torch=torch.__version__, steps=steps,
                    cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    **({'gpu': torch.cuda.get_device_name(dev)} if dev.type == 'cuda' else {}))
        M = get_method(method)
        evidence = {} if cand is None else dict(candidate_names=list(M.branches[:cand.shape[2]]), candidate_score=M.score)
        for i, s in enumerate(todo):
            done[s] = dict(record=rec[i], evals=evals[i], eval_steps=torch.tensor(eval_steps(steps, eval_every)), wall=torch.tensor(wall),
                           info=info, **({} if cand is None else dict(candidates=cand[i], **evidence)))
            if keep: save_seed(folder, s, done[s])
        if partial is not None: partial.unlink(missing_ok=True)
    have = all('candidates' in done[s] for s in seeds)  # seeds stored before the evidence was kept have none
    return {'method': method, 'setting': setting, 'seeds': seeds, 'key': key,
            'record': torch.stack([done[s]['record'] for s in seeds]),
            'evals': torch.stack([done[s]['evals'] for s in seeds]),
            'eval_steps': torch.tensor(eval_steps(steps, eval_every)),
            'wall': torch.stack([done[s]['wall'] for s in seeds]), 'info': [done[s]['info'] for s in seeds],
            'candidates': torch.stack([done[s]['candidates'] for s in seeds]) if have else None,
            **({k: done[seeds[0]][k] for k in ('candidate_names', 'candidate_score')} if have else {})}


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
test_eq(r['candidates'].shape, (2, 4, 4)); test_eq(r2['candidates'], r['candidates']); test_eq(r2['candidate_names'], list(get_method('amg').branches))
test_eq(r['candidates'].argmin(-1).float(), r['record'][..., 0])  # the evidence explains each choice: the first lowest score
print(f'first run {t1 - t0:.1f}s, cached {t2 - t1:.2f}s; branches {r["record"][..., 0].tolist()}')

# %% [markdown]
# Bad input fails before any compute, with one line naming the valid values:

# %%
test_fail(lambda: run('adam', 'c'), contains="use one of 'sgd'")
test_fail(lambda: run('amg', 'c', steps=0), contains='positive integer')
test_fail(lambda: run('amg', 'c', seeds=[]), contains='seeds is empty')
test_fail(lambda: run('amg', 'z'), contains='use one of a, b, c, d')
test_fail(lambda: run('amg', 'd', checkpoint='cnn_fashionmnist'), contains="net='cnn', expected 'mlp'")

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.runner`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('runner')
