# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The results store: one small file per finished seed, keyed by what changes its numbers
#
# > Where every finished seed of every run lives, how it is keyed, and how a run finds what is already computed.

# %% [markdown]
# Every finished seed is one small file under `outputs/results/<setting>/<method>/<key>/`: its step
# records and its evaluations, no optimizer state (tens of KB; they are committed, so a fresh clone
# on another machine continues from the seeds that are in). The key is a hash of everything that
# changes the numbers, written out beside the files in `run.json`: method, setting, `eval_every`,
# the guard's settings, the checkpoint (its config and a hash of its weights), the device type (a GPU
# rounds differently), and `guards.NUMERICS`, the version of what the methods compute, which is
# bumped whenever a change of the code alters trajectories. A learned optimizer's trajectory
# amplifies float rounding over hundreds of steps (a change of summation order in the LSTM step alone
# once moved a 3-seed SMG mean by more than half a nat), so anything that rounds differently must not
# share a key.
#
# Each length of a seed's run is its own file, `seed<N>_<steps>.npz`: the quick protocol's 300 steps
# and the paper's 2,000 live apart, and no run ever replaces another. A run reads the file of its own
# length, or else the first `steps` steps of a longer one that holds all of its evaluations (a
# multiple of `eval_every` and `test_every`: a 2,000-step seed serves a 300-step run; the same
# numbers up to how many seeds shared the call, which each file records).
# An unfinished run's resume state lives in the store's `partial/` folder (not committed): it resumes
# on the same machine, and is not written at all when the run keeps nothing (`store=False`).
#
# The runner (chapter [03b](03b_runner.ipynb)), the grid ([03d](03d_grid.ipynb)) and the report
# ([04](04_figure1.ipynb)) all go through this module; nothing else reads or writes a seed file.

# %%
#| default_exp store

# %%
#| export
import hashlib, json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from metaguard_nb.data import checkout
from metaguard_nb.guards import NUMERICS, GuardConfig, guard_key
from metaguard_nb.persist import atomic_write

# %%
import tempfile
from fastcore.test import test_eq, test_ne


# %% [markdown]
# ## The key
#
# `run_key` lists what changes a run's numbers; `key_hash` names its folder. The guard's settings
# enter through `guards.guard_key`: every field the paper protocol was run with, and any field added
# since only where it differs from its default, so that a new option never moves the results
# computed without it.

# %%
#| export
def weights_hash(ck:dict, # a checkpoint as `metatrain.load_checkpoint` returns it (its third item)
                ) -> str:
    "A short sha256 of a checkpoint's learned weights and memory."
    h = hashlib.sha256()
    for k in sorted(ck['W']): h.update(k.encode()); h.update(ck['W'][k].float().contiguous().numpy().tobytes())
    h.update(ck['h'].float().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]

def run_key(method:str, # a registered method (`guards.METHODS`)
            setting:str, # a Figure 1 panel
            eval_every:int, # steps between monitor-set evaluations
            gcfg:GuardConfig, # the guards' settings
            ck:dict, # the checkpoint dict of the meta-trained optimizer
            device, # where it runs (only the type is keyed: 'cpu' or 'cuda')
            test_every:int|None=100, # steps between test-split evaluations
           ) -> dict:
    "Everything that changes a run's numbers (see above)."
    return dict(method=method, setting=setting, eval_every=eval_every, test_every=test_every, guard=guard_key(gcfg), checkpoint=ck['config'],
                checkpoint_weights=weights_hash(ck), device=torch.device(device).type, numerics=NUMERICS)

def key_hash(key:dict, # a run key (`run_key`)
            )->str:
    "The folder name of a key: 12 hex digits of the sha256 of its sorted JSON."
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]

def store_dir() -> Path:
    "The results store of the checkout: outputs/results."
    return (checkout() or Path.cwd())/'outputs'/'results'

def result_folder(key:dict, # a `run_key`
                  root:str|Path|None=None, # the store (default `store_dir()`)
                 ) -> Path:
    "The folder of a key's seed files: <root>/<setting>/<method>/<key_hash>."
    return Path(root or store_dir())/key['setting']/key['method']/key_hash(key)

def partial_file(key:dict, # a run key (`run_key`)
                 seeds:list, # the run's seeds
                 steps:int, # the run's length
                 root:str|Path|None=None, # root folder of the store (None: outputs/results)
                )->Path:
    "Where an unfinished run of `seeds` keeps its resume state (the store's `partial/` folder, not committed)."
    return Path(root or store_dir())/'partial'/key['setting']/key['method']/key_hash(key)/f"seeds{'-'.join(map(str, seeds))}_{steps}.pt"

def write_key(folder:Path, # a key's folder of seed files
              key:dict, # a run key (`run_key`)
             ):
    "`run.json` beside the seed files: the key written out, so a folder says what it holds."
    with atomic_write(Path(folder)/'run.json') as tmp: tmp.write_text(json.dumps(key, indent=1, sort_keys=True))


# %% [markdown]
# The paper protocol's keys are pinned: the hash of AMG's key on panel (c) (CPU, compiled step, the
# shipped checkpoint) is the folder its 25 committed seeds live in. A change that moved it would
# orphan every committed result.

# %%
from metaguard_nb.metatrain import load_checkpoint
_ck = load_checkpoint('cnn_fashionmnist')[2]
test_eq(key_hash(run_key('amg', 'c', 10, GuardConfig(compile=True), _ck, 'cpu')), '5f72757e1e94')
test_eq((store_dir()/'c'/'amg'/'5f72757e1e94'/'seed0_2000.npz').exists(), True)
test_ne(key_hash(run_key('amg', 'c', 10, GuardConfig(compile=True, lr_eta=1.0), _ck, 'cpu')), '5f72757e1e94')


# %% [markdown]
# ## A seed's file
#
# A seed file holds the step records (the chosen branch, l(eta; B_e) after the step, the step's
# three counters), the evaluations, the wall time of each step and how it was computed (`info`).
# For the guarded methods it also holds the guard's evidence: at every step, the score of each
# candidate that the guard compared (`candidates` [steps, K], in the method's tie order, infinite
# where a candidate was not finite), their names (`candidate_names`) and what the score is
# (`candidate_score`: l(candidate; B_e) for LGL2O and AMG, L^Adapt(candidate) on B_e for SMG).
# Files written before the evidence was kept have none of the three, and read as before.

# %%
#| export
def seed_file(folder:Path, # a key's folder of seed files
              seed:int, # one run seed
              steps:int, # the run length
             )->Path: return Path(folder)/f'seed{seed}_{steps}.npz'

def save_seed(folder:Path, # a `result_folder`
              seed:int, # the run seed
              r:dict, # record [steps, 5], evals [K, 6], eval_steps [K], wall [steps], info; candidates [steps, K'] and their names and score where the method has a guard
             ):
    "One finished seed, atomically; never over an existing file."
    f = seed_file(folder, seed, r['record'].shape[0])
    if f.exists(): return  # nothing is written twice
    rec = r['record'].numpy()
    arrays = dict(branch=rec[:, 0].astype(np.int8), loss=rec[:, 1].astype(np.float32), counters=rec[:, 2:].astype(np.int32),
                  evals=r['evals'].numpy(), eval_steps=r['eval_steps'].numpy(), wall=r['wall'].numpy().astype(np.float32),
                  info=np.array(json.dumps(r.get('info', {}))))
    if r.get('candidates') is not None:
        arrays.update(candidates=r['candidates'].numpy().astype(np.float32), candidate_names=np.array(r['candidate_names']),
                      candidate_score=np.array(r['candidate_score']))
    with atomic_write(f) as tmp, open(tmp, 'wb') as out: np.savez_compressed(out, **arrays)

def load_seed(f:Path, # a seed file
             )->dict:
    "A stored seed file as tensors (record [steps, 5], evals [K, 6], eval_steps [K], wall [steps], info; candidates where stored)."
    with np.load(f) as z:
        record = np.concatenate([z['branch'][:, None], z['loss'][:, None], z['counters']], 1).astype(np.float32)
        r = dict(record=torch.from_numpy(record), evals=torch.from_numpy(z['evals']), eval_steps=torch.from_numpy(z['eval_steps']),
                 wall=torch.from_numpy(z['wall']), info=json.loads(str(z['info'])))
        if 'candidates' in z.files:
            r.update(candidates=torch.from_numpy(z['candidates']), candidate_names=[str(n) for n in z['candidate_names']],
                     candidate_score=str(z['candidate_score']))
        return r


# %% [markdown]
# ## Finding a seed

# %%
#| export
def stored_lengths(folder:Path, # a key's folder of seed files
                   seed:int, # one run seed
                  )->list:
    "The run lengths stored for `seed`, shortest first."
    return sorted(int(f.stem.split('_')[1]) for f in Path(folder).glob(f'seed{seed}_*.npz'))

def eval_steps(steps:int, # the run length
               eval_every:int, # monitor-set evaluation every this many steps
              )->list:
    "The steps a `steps`-step run evaluates at: 0, every `eval_every` steps, and the last."
    return sorted({*range(0, steps, eval_every), steps})

def cut(r:dict, # a stored seed (`load_seed`)
        steps:int, # steps to keep
        eval_every:int, # monitor-set evaluation every this many steps
       )->dict:
    "The first `steps` steps of stored seed `r` (see `find_seed`)."
    k = len(eval_steps(steps, eval_every))
    assert r['eval_steps'][:k].tolist() == eval_steps(steps, eval_every)
    out = dict(r, record=r['record'][:steps], evals=r['evals'][:k], eval_steps=r['eval_steps'][:k], wall=r['wall'][:steps])
    if 'candidates' in r: out['candidates'] = r['candidates'][:steps]
    return out

def find_seed(folder:Path, # a key's folder of seed files
              seed:int, # one run seed
              steps:int, # the run length to serve
              eval_every:int, # monitor-set evaluation every this many steps
              test_every:int|None=100, # test-set evaluation every this many steps (None: only at the last step)
             )->dict|None:
    "The stored run of `seed` that serves a `steps`-step run, cut to it: its own length, else the shortest longer one that holds its evaluations."
    for n in stored_lengths(folder, seed):
        if n == steps or (n > steps and steps % eval_every == 0 and (test_every is None or steps % test_every == 0)):
            return cut(load_seed(seed_file(folder, seed, n)), steps, eval_every)
    return None


# %% [markdown]
# A seed with the guard's evidence goes in and comes back whole, cut to a shorter run too; a file
# without it (every seed stored before it was kept) reads as before:

# %%
with tempfile.TemporaryDirectory() as d:
    r = dict(record=torch.tensor([[3., .5, 22, 2, 20]]*20), evals=torch.rand(3, 6), eval_steps=torch.tensor([0, 10, 20]),
             wall=torch.ones(20), info={'seeds_in_call': 1}, candidates=torch.rand(20, 4).masked_fill(torch.eye(20, 4).bool(), float('inf')),
             candidate_names=['learned', 'fallback', 'fallback_unrolled', 'stay'], candidate_score='l(candidate; B_e)')
    save_seed(d, 7, r)
    back = find_seed(d, 7, 10, eval_every=10, test_every=None)
    test_eq(back['candidates'], r['candidates'][:10]); test_eq(back['candidate_names'], r['candidate_names'])
    test_eq(back['record'], r['record'][:10]); test_eq(back['eval_steps'].tolist(), [0, 10])
    save_seed(d, 8, {k: v for k, v in r.items() if not k.startswith('candidate')})
    test_eq('candidates' in find_seed(d, 8, 20, eval_every=10), False)
old = load_seed(store_dir()/'c'/'amg'/'5f72757e1e94'/'seed0_2000.npz')  # a committed seed, stored before the evidence was kept
test_eq((old['record'].shape, 'candidates' in old), ((2000, 5), False))

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.store`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('store')
