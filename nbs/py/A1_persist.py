# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: saving without losing anything
#
# > Files written whole or not at all, and a Ctrl-C that waits until a step is committed.

# %% [markdown]
# Meta-training (chapter 02b) and the runner (chapter 03b) can be stopped at any moment and resumed
# with the same numbers. Two small tools make that true: `atomic_write` hands out a temporary name
# beside the file and renames it over the file when the writing is done, so an interrupted save
# never leaves a broken file (every file the project writes goes through it: checkpoints, resume
# states, seed files, figures, CSVs, reports; `save_atomic` is its `torch.save`); and
# `deferred_interrupt` holds back a Ctrl-C (SIGINT) for the few statements that commit a finished
# step (the new state, its record, the samplers' position), so that an interrupt never leaves a step
# half recorded, to be replayed on resume. It acts in the main thread only (a Dask worker's thread
# cannot install signal handlers, and there an interrupt is not a Ctrl-C anyway).

# %%
#| default_exp persist

# %%
#| export
import contextlib, signal, threading
from pathlib import Path

import torch

# %%
import os, tempfile
from fastcore.test import test_eq


# %%
#| export
@contextlib.contextmanager
def atomic_write(path:Path, # the file to write (its folder is made if missing)
                ) -> Path:
    "Yield a temporary path beside `path` to write to; it replaces `path` only when the block ends without an error."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp{path.suffix}')  # same extension: savefig and to_csv choose the format by it
    try:
        yield tmp
        tmp.replace(path)
    finally: tmp.unlink(missing_ok=True)

def save_atomic(obj, # anything torch.save takes
                path:Path, # the file to write
               ):
    "torch.save, atomically: an interrupted save never leaves a broken file."
    with atomic_write(path) as tmp: torch.save(obj, tmp)

@contextlib.contextmanager
def deferred_interrupt():
    "Hold back Ctrl-C (SIGINT) until the block is done, so that what the block commits is committed whole (main thread only)."
    if threading.current_thread() is not threading.main_thread(): yield; return
    got = []
    old = signal.signal(signal.SIGINT, lambda *a: got.append(1))
    try: yield
    finally:
        signal.signal(signal.SIGINT, old)
        if got: raise KeyboardInterrupt


# %% [markdown]
# A Ctrl-C that arrives inside the block is raised when the block is done, not before:

# %%
done = []
def commit():
    with deferred_interrupt():
        os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C here
        done.append('state'); done.append('record')
try: commit(); interrupted = False
except KeyboardInterrupt: interrupted = True
test_eq(interrupted, True); test_eq(done, ['state', 'record'])  # the interrupt came, after the whole block
with tempfile.TemporaryDirectory() as d:
    save_atomic({'k': 1}, Path(d)/'a'/'b.pt')
    test_eq(torch.load(Path(d)/'a'/'b.pt'), {'k': 1}); test_eq(sorted(p.name for p in (Path(d)/'a').iterdir()), ['b.pt'])
    try:  # a write that fails half way leaves the file as it was, and no temporary file
        with atomic_write(Path(d)/'a'/'b.pt') as tmp: tmp.write_text('half'); raise OSError('disk full')
    except OSError: pass
    test_eq(torch.load(Path(d)/'a'/'b.pt'), {'k': 1}); test_eq(sorted(p.name for p in (Path(d)/'a').iterdir()), ['b.pt'])

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.persist`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('persist')
