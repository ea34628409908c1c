# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Figure 1
#
# > Regenerate one panel of the paper's Figure 1: the six methods and safe AMG, S seeds, mean and 95% CI, by papermill; and the report of a protocol from the results store.

# %% [markdown]
# ```bash
# make figure1 SETTING=c                # = papermill nbs/04_figure1.ipynb outputs/figure1/quick/c.ipynb -p setting c
# make figure1-all PRESET=quick         # the four panels, then the report: 2x2 figures, table, verdicts
# make figure1 SETTING=c PRESET=tiny    # a trial run: its own folder, outputs/figure1/tiny/
# ```
#
# > "Figure 1: Our adapting learned optimizers (SMG & AMG) generalize to various problem settings.
# > We observe that the baselines L2O and two versions of LGL2O either worsen or improve very slowly
# > after 1000 optimization steps. SGD keeps improving, however, initially significantly slower than
# > the learned optimizer. SMG does not prematurely converge, but is usually slower than SGD. AMG
# > outperforms the baselines in most cases. Each loss is averaged over 25 seeds with 95% confidence
# > intervals."
#
# The four panels ([decisions](decisions.md), section 7):
#
# | setting | meta-train | meta-test |
# |---|---|---|
# | a | CNN & FashionMNIST | CNN & FashionMNIST |
# | b | CNN & FashionMNIST | MLP & FashionMNIST |
# | c | CNN & FashionMNIST | CNN & MNIST |
# | d | MLP & MNIST | CNN & FashionMNIST |
#
# Each method runs through `runner.run` on the same seeds (same initialisations, same batches), and
# the y-axis is the loss on each seed's fixed monitor set of 2,048 training examples, every
# `eval_every` steps. Beside the paper's x-axis (steps) we draw the same curves against optimizee
# gradient evaluations, because SMG and AMG spend 20-30 of them per step where SGD spends one.

# %%
#| default_exp figure

# %%
#| export
import builtins, math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from scipy import stats

from metaguard_nb.data import checkout
from metaguard_nb.persist import atomic_write
from metaguard_nb.runner import FIGURE_METHODS, FIGURE_SETTINGS, check_device, figure_setting, setting_checkpoint, variant as get_variant
from metaguard_nb.store import find_seed, result_folder, run_key

# %% [markdown]
# ## Protocols
#
# `quick` fits in minutes on a 2-core CPU; `paper` is the paper's protocol (25 seeds, 2,000 steps);
# `tiny` is what the test suite runs. Explicit `seeds` or `steps` override the preset.

# %%
#| export
PRESETS = {'tiny': dict(seeds=2, steps=20), 'quick': dict(seeds=3, steps=300), 'paper': dict(seeds=25, steps=2000)}
REPORT_METHODS = FIGURE_METHODS + ('safe_amg',)  # the paper's six and safe AMG (the convergence section's fix)
LABELS = {'sgd': 'SGD', 'l2o': 'L2O', 'lgl2o': 'LGL2O (w/ Update)', 'lgl2o_no_update': 'LGL2O (w/o Update)',
          'smg': 'SMG', 'amg': 'AMG', 'safe_amg': 'safe AMG'}
COLORS = {'sgd': 'tab:blue', 'l2o': 'tab:orange', 'lgl2o': 'tab:green', 'lgl2o_no_update': 'tab:red',
          'smg': 'tab:purple', 'amg': 'tab:brown', 'safe_amg': 'tab:pink'}
BASELINES = ('sgd', 'l2o', 'lgl2o', 'lgl2o_no_update')  # what the guarded methods are measured against
GUARDED = ('smg', 'amg', 'safe_amg')

def protocol(setting:str, preset:str='quick', seeds=None, steps=None, methods=None, device:str='cpu', eval_every:int=10) -> dict:
    "Check every parameter (one-line errors, before any compute) and resolve the preset."
    figure_setting(setting)
    if preset not in PRESETS: raise ValueError(f"preset={preset!r} is unknown: use one of {', '.join(PRESETS)}")
    n = PRESETS[preset]['seeds'] if seeds is None else seeds
    seeds = list(range(n)) if isinstance(n, int) else [int(s) for s in n]
    steps = PRESETS[preset]['steps'] if steps is None else steps
    if not isinstance(steps, int) or steps <= 0: raise ValueError(f'steps={steps!r}: use a positive integer')
    if not seeds: raise ValueError(f'seeds={n!r}: use a positive number of seeds or a list of seeds')
    methods = list(REPORT_METHODS) if methods is None else list(methods)
    bad = [m for m in methods if m not in LABELS]
    if bad: raise ValueError(f"unknown method(s) {bad}: use any of {', '.join(LABELS)}")
    if not isinstance(eval_every, int) or eval_every <= 0: raise ValueError(f'eval_every={eval_every!r}: use a positive integer')
    check_device(device)
    return dict(setting=setting, preset=preset, seeds=seeds, steps=steps, methods=methods, device=device, eval_every=eval_every)


# %% [markdown]
# ## Mean and 95% confidence interval over seeds
#
# Student t over seeds: mean +- t_{0.975, n-1} s / sqrt(n). With one seed the interval is the point.

# %%
#| export
def mean_ci(x:np.ndarray, # [n_seeds, ...]
           ) -> tuple:
    "(mean, ci_low, ci_high) over the first axis, Student t 95%."
    n, m = x.shape[0], x.mean(0)
    if n < 2: return m, m.copy(), m.copy()
    h = stats.t.ppf(0.975, n - 1)*x.std(0, ddof=1)/math.sqrt(n)
    return m, m - h, m + h

def summarize(results:dict, # method -> runner.run result
              setting:str) -> pd.DataFrame:
    "One row per method and evaluation step: monitor-loss mean and CI, test loss and accuracy means, counters."
    rows = []
    for method, r in results.items():
        ev = r['evals'].double().numpy()  # [S, K, 6]: monitor, test loss, test acc, grads, forwards, lstm
        mean, lo, hi = mean_ci(ev[..., 0])
        for k, step in enumerate(r['eval_steps'].tolist()):
            rows.append(dict(setting=setting, method=method, step=step, grad_evals=ev[:, k, 3].mean(),
                             mean=mean[k], ci_low=lo[k], ci_high=hi[k], n_seeds=ev.shape[0],
                             test_loss=ev[:, k, 1].mean(), test_acc=ev[:, k, 2].mean()))
    return pd.DataFrame(rows)


# %%
import os, tempfile
from fastcore.test import test_close, test_eq, test_fail
from metaguard_nb.runner import run

# %%
m, lo, hi = mean_ci(np.array([[1.], [2.], [3.]]))
test_close(m, [2.]); test_close(hi - m, [stats.t.ppf(0.975, 2)*1/math.sqrt(3)])
test_fail(lambda: protocol('e'), contains='use one of a, b, c, d')
test_fail(lambda: protocol('c', preset='huge'), contains='use one of tiny, quick, paper')
test_fail(lambda: protocol('c', steps=0), contains='positive integer')

# %% [markdown]
# ## Paired per seed
#
# Every method of a panel runs the same seeds on the same initialisations and batches, so two methods
# are compared seed by seed: a paired comparison, which a difference of means ignores. Where seeds
# split (some of AMG's end far below every baseline, a few stop moving far above), the mean, the
# median and the paired reading can disagree; the report shows all three. `paired` compares method A
# with method B on the seeds both ran: their means and medians, how many seeds end lower with A than
# with B, the sign test's p-value (`scipy.stats.binomtest` on those counts, ties dropped) and the
# Wilcoxon signed-rank test's (`scipy.stats.wilcoxon`, two-sided). A is **lower** than B when the
# Wilcoxon p-value is below alpha = 0.05 and the signed ranks favour A (the ranks of the seeds where
# A is lower outweigh the others).

# %%
#| export
ALPHA = 0.05  # the paired rules' two-sided significance level

def _monitor(r:dict) -> tuple:
    "(monitor loss [S, K] as float64, evaluation steps) of a runner-like result."
    return r['evals'][..., 0].double().numpy(), r['eval_steps'].tolist()

def seed_losses(r:dict, # a runner-like result: seeds, evals [S, K, 6], eval_steps
                at, # an evaluation step (the nearest is taken), or (lo, hi): the mean over evaluation steps in (lo, hi]
               ) -> dict:
    "Each seed's monitor-set loss at a step, or its mean over a stretch of steps: {seed: loss}."
    mon, steps = _monitor(r)
    steps = np.array(steps)
    v = mon[:, (steps > at[0]) & (steps <= at[1])].mean(1) if isinstance(at, tuple) else mon[:, int(np.abs(steps - at).argmin())]
    return dict(zip([int(s) for s in r['seeds']], v.tolist()))

def paired(a:dict, # {seed: loss} of method A (`seed_losses`)
           b:dict, # {seed: loss} of method B
          ) -> dict:
    "A against B on the seeds both ran: n, means, medians, seeds lower / higher with A, sign-test and Wilcoxon p (two-sided), and whether the ranks favour A."
    seeds = sorted(set(a) & set(b))
    x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
    d = x - y
    below, above = int((d < 0).sum()), int((d > 0).sum())
    sign_p = float(stats.binomtest(below, below + above).pvalue) if below + above else 1.0
    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    wil_p = float(stats.wilcoxon(nz).pvalue) if len(nz) else 1.0
    return dict(n=len(seeds), mean_a=float(x.mean()), mean_b=float(y.mean()), median_a=float(np.median(x)), median_b=float(np.median(y)),
                below=below, above=above, sign_p=sign_p, wilcoxon_p=wil_p, favours_a=bool(ranks[nz < 0].sum() > ranks[nz > 0].sum()))

def significantly_lower(p:dict) -> bool:
    "The paired rule: A's losses are lower than B's by a two-sided Wilcoxon signed-rank test at `ALPHA`."
    return p['wilcoxon_p'] < ALPHA and p['favours_a']

def paired_words(p:dict, a:str, b:str) -> str:
    "A paired comparison in a few words, e.g. 'AMG < SGD in 20 of 25 seeds, Wilcoxon p = 0.003'."
    return f"{a} < {b} in {p['below']} of {p['n']} seeds, Wilcoxon p = {p['wilcoxon_p']:.2g}"

def paired_table(got:dict, # method -> per-seed results of one panel
                 steps=(1000, 2000), # evaluation steps to compare at (the nearest evaluation; those past the run's end are dropped)
                 methods=None, # the methods compared (default the guarded methods in `got`)
                ) -> pd.DataFrame:
    "Each guarded method against each baseline at each step: means, medians, seeds lower, sign and Wilcoxon p, and the paired reading."
    methods = [m for m in (methods or GUARDED) if m in got]
    rows = []
    for m in methods:
        last = _monitor(got[m])[1][-1]
        for k in [k for k in steps if k <= last]:
            for b in [b for b in BASELINES if b in got]:
                p = paired(seed_losses(got[m], k), seed_losses(got[b], k))
                reading = 'lower' if significantly_lower(p) else 'higher' if p['wilcoxon_p'] < ALPHA else 'no difference'
                rows.append(dict(method=m, baseline=b, step=k, **p, reading=reading))
    return pd.DataFrame(rows)


# %% [markdown]
# On toy seeds: A is lower than B on 9 of 10 seeds by small margins and higher on one by a lot. The
# mean says B is better, the median and the paired tests say A; the p-values are scipy's, computed
# here by hand from the counts and the signed ranks.

# %%
A = {s: 0.5 for s in range(10)}; A[9] = 5.0
B = {s: 0.6 + 0.01*s for s in range(10)}
p = paired(A, B)
test_eq((p['n'], p['below'], p['above'], p['favours_a']), (10, 9, 1, True))
assert p['mean_a'] > p['mean_b'] and p['median_a'] < p['median_b']
test_close(p['sign_p'], 2*sum(math.comb(10, k) for k in range(2))/2**10, eps=1e-12)  # two-sided binomial, 1 of 10
d = np.array([A[s] - B[s] for s in range(10)])
r_plus = stats.rankdata(np.abs(d))[d > 0].sum()  # 10: the one seed where A is higher has the largest difference
test_close(p['wilcoxon_p'], 2*sum(1 for m in range(2**10) if sum(k + 1 for k in range(10) if m >> k & 1) <= r_plus)/2**10, eps=1e-12)
test_eq(significantly_lower(p), p['wilcoxon_p'] < 0.05)
test_eq(paired_words(p, 'A', 'B'), f"A < B in 9 of 10 seeds, Wilcoxon p = {p['wilcoxon_p']:.2g}")


# %% [markdown]
# ## Drawing a panel
#
# Left: the paper's view (loss against steps). Right: the compute-fair view (loss against optimizee
# gradient evaluations). Log-scale y, mean line and 95% band per method.

# %%
#| export
def plot_panel(df:pd.DataFrame, axs=None, title:str|None=None, legend:bool=True, views=('step', 'grad_evals')):
    "Draw one setting's curves, one axis per view: against steps, against optimizee gradient evaluations."
    if axs is None: _, axs = plt.subplots(1, len(views), figsize=(5.5*len(views), 3.8), squeeze=False)
    axs = list(np.ravel(axs))
    for method, d in df.groupby('method', sort=False):
        for ax, x in zip(axs, views):
            d_ = d[d[x] > 0] if x == 'grad_evals' else d  # log x-axis: step 0 has spent nothing
            ax.plot(d_[x], d_['mean'], color=COLORS.get(method), lw=1.4, label=LABELS.get(method, method))
            ax.fill_between(d_[x], d_['ci_low'].clip(lower=1e-6), d_['ci_high'], color=COLORS.get(method), alpha=0.2, lw=0)
    # y-range from the means: with few seeds a t-interval can reach far below them (it is drawn, and cut at the axis)
    lo, hi = df['mean'].min(), df['mean'].max()
    for ax, x in zip(axs, views):
        ax.set(yscale='log', xlabel='step' if x == 'step' else 'optimizee gradient evaluations', ylim=(lo/1.5, hi*1.3))
        if x == 'grad_evals': ax.set_xscale('log')
    axs[0].set_ylabel('monitor-set loss')
    if title: axs[0].set_title(title, fontsize=9, loc='left')
    if legend: axs[-1].legend(fontsize=7, loc='best')
    return axs

def table(df:pd.DataFrame, steps=(200, 1000)) -> pd.DataFrame:
    "Mean [CI] at the given steps (where reached) and at the last step."
    last = df['step'].max()
    want = [s for s in steps if s < last] + [last]
    d = df[df['step'].isin(want)]
    cell = d.apply(lambda r: f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]", axis=1)
    return d.assign(cell=cell).pivot(index='method', columns='step', values='cell').reindex(df['method'].unique())

def _at(df, method, step) -> float:
    "Mean monitor loss of `method` at the evaluation step nearest to `step`."
    d = df[df['method'] == method]
    return float(d.iloc[(d['step'] - step).abs().argmin()]['mean'])

def _claim_rows(df:pd.DataFrame, got:dict|None) -> list:
    "(claim, rule, verdict, numbers, paired rule, paired verdict, paired numbers) for each claim of Figure 1."
    last, have = int(df['step'].max()), set(df['method'])
    mid, rows = last//2, []
    lack = lambda *ms: [LABELS[m] for m in ms if m not in have]
    def add(claim, rule, needs, judge, prule, pjudge):
        if lack(*needs): rows.append((claim, rule, None, f"no seeds of {', '.join(lack(*needs))} yet", prule, None, '')); return
        pj = pjudge() if got is not None and all(m in got for m in needs) else (None, 'no per-seed results')
        rows.append((claim, rule, *judge(), prule, *pj))
    at = lambda m, k: seed_losses(got[m], k)
    def early():
        e = df[(df['step'] > 0) & (df['step'] <= 200)].groupby('method')['mean'].mean()
        return e['l2o'] < e['sgd'], f"L2O {e['l2o']:.3f}, SGD {e['sgd']:.3f}"
    def early_paired():
        p = paired(seed_losses(got['l2o'], (0, 200)), seed_losses(got['sgd'], (0, 200)))
        return significantly_lower(p), paired_words(p, 'L2O', 'SGD')
    add('L2O beats SGD in the first ~200 steps', 'mean over steps 1-200: L2O < SGD', ('l2o', 'sgd'), early,
        "each seed's mean over steps 1-200: L2O lower than SGD", early_paired)
    stalling = ('l2o', 'lgl2o', 'lgl2o_no_update')
    if last >= 1500:
        def stall():
            rel = {m: _at(df, m, last)/_at(df, m, 1000) - 1 for m in stalling}
            return all(v > -0.05 for v in rel.values()), ', '.join(f'{LABELS[m]} {v:+.1%}' for m, v in rel.items())
        def stall_paired():
            ps = {m: paired(at(m, last), at(m, 1000)) for m in stalling}
            return (not any(significantly_lower(p) for p in ps.values()),
                    '; '.join(paired_words(p, f'{LABELS[m]} at step {last}', 'at step 1000') for m, p in ps.items()))
        add('L2O and LGL2O stall or worsen after ~1000 steps', 'each improves < 5% from step 1000 to the end', stalling, stall,
            'none of the three lower at the end than at step 1000', stall_paired)
    else:
        rows.append(('L2O and LGL2O stall or worsen after ~1000 steps', 'needs >= 1,500 steps', None, f'run ends at step {last}',
                     'needs >= 1,500 steps', None, ''))
    def sgd():
        v = _at(df, 'sgd', last)/_at(df, 'sgd', mid) - 1
        return v < -0.02, f'{v:+.1%}'
    def sgd_paired():
        p = paired(at('sgd', last), at('sgd', mid))
        return significantly_lower(p), paired_words(p, f'SGD at step {last}', f'at step {mid}')
    add('SGD keeps improving', f'SGD improves >= 2% from step {mid} to {last}', ('sgd',), sgd,
        f'SGD lower at step {last} than at step {mid}', sgd_paired)
    def smg():
        v = _at(df, 'smg', last)/_at(df, 'smg', mid) - 1
        return (v < -0.02 and _at(df, 'smg', last) > _at(df, 'sgd', last),
                f"SMG {v:+.1%}; at step {last}: SMG {_at(df, 'smg', last):.3f}, SGD {_at(df, 'sgd', last):.3f}")
    def smg_paired():
        better, slower = paired(at('smg', last), at('smg', mid)), paired(at('sgd', last), at('smg', last))
        return (significantly_lower(better) and significantly_lower(slower),
                f"{paired_words(better, f'SMG at step {last}', f'at step {mid}')}; {paired_words(slower, 'SGD', 'SMG')}")
    add('SMG keeps improving but is slower than SGD', f'SMG improves >= 2% from step {mid} to {last}, and ends above SGD', ('smg', 'sgd'), smg,
        f'SMG lower at step {last} than at step {mid}, and SGD lower than SMG at step {last}', smg_paired)
    def amg():
        base = {m: _at(df, m, last) for m in BASELINES}
        return (_at(df, 'amg', last) < min(base.values()),
                f"AMG {_at(df, 'amg', last):.3f}; best baseline {LABELS[min(base, key=base.get)]} {min(base.values()):.3f}")
    def amg_paired():
        ps = {b: paired(at('amg', last), at(b, last)) for b in BASELINES}
        return all(significantly_lower(p) for p in ps.values()), '; '.join(paired_words(p, 'AMG', LABELS[b]) for b, p in ps.items())
    add('AMG beats all baselines', f'AMG below SGD, L2O and both LGL2O at step {last}', ('amg', *BASELINES), amg,
        f'AMG lower than each of SGD, L2O and both LGL2O at step {last}', amg_paired)
    return rows

def claims(df:pd.DataFrame, # the panel's summary (`summarize`)
           got:dict|None=None, # method -> per-seed results (runner.run or `collect`), for the paired reading
          ) -> pd.DataFrame:
    "The paper's Figure 1 claims, each judged on this panel by two explicit rules: on the mean curves, and paired per seed by a two-sided Wilcoxon signed-rank test at alpha = 0.05 ('not tested' where a method or the steps are missing)."
    verdict = lambda v: 'not tested' if v is None else ('reproduced' if v else 'not reproduced')
    return pd.DataFrame([dict(claim=c, rule=r, verdict=verdict(v), numbers=n, paired_rule=pr, paired=verdict(pv), paired_numbers=pn)
                         for c, r, v, n, pr, pv, pn in _claim_rows(df, got)])

def source_name(src:tuple) -> str:
    "How the report and the figures name a source (device, compiled LSTM step), e.g. 'CPU, compiled step'."
    return f"{src[0].upper()}, {'compiled' if src[1] else 'eager'} step"

def _write_png(fig, out:Path, dpi:int):
    "Save `fig` to `out` through a temporary file, so a stopped run never leaves a broken figure."
    with atomic_write(out) as tmp: fig.savefig(tmp, dpi=dpi)

def combined_figure(dfs:dict, out:Path, view:str='step', sources:dict|None=None):
    "The 2x2 figure from the four panels' summaries (`summarize` frames, by setting), against steps or gradient evaluations; `sources`: (device, compiled) by setting, named in the titles."
    fig, axs = plt.subplots(2, 2, figsize=(11, 7.5))
    for ax, s in zip(axs.flat, 'abcd'):
        df = dfs.get(s)
        if df is None or df.empty: ax.set_title(f'({s}): no seeds yet', fontsize=8); continue
        name, net, data = FIGURE_SETTINGS[s]
        plot_panel(df, axs=[ax], legend=False, views=(view,))
        n = df.groupby('method')['n_seeds'].max()
        seeds = f'{n.min()}-{n.max()} seeds' if n.min() != n.max() else f'{n.max()} seeds'
        src = f'; {source_name(sources[s])}' if sources and s in sources else ''  # second line: a partial panel's '10-25 seeds' overran the figure
        ax.set_title(f"({s}) train: {name.replace('_', ' & ')}, test: {net} & {data}\n{seeds}{src}", fontsize=8)
    drawn = {l.get_label(): l for ax in axs.flat for l in ax.get_lines()}  # one legend for every method of any panel
    labels = [LABELS[m] for m in LABELS if LABELS[m] in drawn]
    if labels: fig.legend([drawn[l] for l in labels], labels, loc='lower center', ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _write_png(fig, out, dpi=120)
    return fig


# %% [markdown]
# ## Seeds one by one
#
# A mean and its interval describe seeds that scatter around one value. The guarded methods' seeds
# need not: at the paper's length on panel (c), plain AMG's seeds split into those that hold a loss
# below every baseline's and those that climb back towards SGD's, and the mean lies between the two
# groups, where almost no seed is. So the report adds, for SMG, AMG and safe AMG, each panel's seeds
# one by one: the loss at the last step and each seed's lowest along the run (median, lowest and
# highest seed), how many seeds end below the best baseline's mean, how many end higher than
# they were halfway, and how many have stopped moving: the same monitor-set loss at every
# evaluation of the run's last tenth. AMG's 'stay' candidate (keep eta and theta) makes that
# possible: where the learned step, the fallback and the fallback through the unroll all score
# worse on B_e than staying, AMG keeps eta and theta, and with nothing changed but the batches it
# can stay at every later step. Safe AMG has the same candidate, and its SGD candidate can lose to
# it too (the convergence argument needs lambda_eta < 2/L; ours is 3, [decisions](decisions.md)). So the
# count is read from each seed's branch record rather than asserted: of the seeds that stopped
# moving, how many chose 'stay' at every step of that stretch (SMG has no such candidate). On panel
# (c) at the paper's length, the 5 of AMG's 25 seeds that stopped moving chose 'stay' at every step
# after their loss stopped changing (260 to 1,730 steps), and so did the 6 of safe AMG's 25 that
# stopped moving, at every step of the last tenth. `seeds_figure` draws every seed of the guarded
# methods against the best baseline's mean curve.

# %%
#| export
def _stayed(r:dict, method:str, still:np.ndarray, from_step:int) -> int|None:
    "How many of the seeds flagged in `still` chose 'stay' at every step from `from_step` on; None where `method` has no 'stay' candidate or `r` no step record."
    from metaguard_nb.guards import BRANCHES
    if 'stay' not in BRANCHES[method] or 'record' not in r: return None
    branch = r['record'][:, from_step:, 0].numpy()
    return int(((branch == BRANCHES[method].index('stay')).all(1) & still).sum())

def best_baseline(got:dict) -> tuple:
    "(method, mean monitor loss at the last step) of the baseline lowest there, or (None, nan) unless all four are in `got`."
    if any(m not in got for m in BASELINES): return None, math.nan
    end = {m: _monitor(got[m])[0][:, -1].mean() for m in BASELINES}
    m = min(end, key=end.get)
    return m, float(end[m])

def seed_split(got:dict, # method -> runner-like result (`collect`): seeds, evals [S, K, 6], eval_steps
              ) -> pd.DataFrame:
    "One row per guarded method in `got`: its seeds at the last step and at their lowest (median, min, max), how many end below the best baseline's mean, how many end above their loss halfway, how many did not move in the last tenth of the run (and of those, how many chose 'stay' at every step of it)."
    base, base_end = best_baseline(got)
    rows = []
    for m in GUARDED:
        if m not in got: continue
        mon, steps = _monitor(got[m])
        k = int(np.abs(np.array(steps) - steps[-1]//2).argmin())
        end, low = mon[:, -1], mon.min(1)
        tail = max(2, (len(steps) - 1)//10 + 1)  # the last tenth of the run's evaluations, at least two
        rows.append(dict(method=m, n=len(end), last=steps[-1], mid=steps[k], still_from=steps[-tail],
                         end_median=np.median(end), end_min=end.min(), end_max=end.max(),
                         low_median=np.median(low), low_min=low.min(), low_max=low.max(),
                         baseline=base, baseline_end=base_end,
                         below_baseline=None if base is None else int((end < base_end).sum()),
                         above_mid=int((end > mon[:, k]).sum()),
                         unchanged=int((still := (mon[:, -tail:] == end[:, None]).all(1)).sum()),
                         stayed=_stayed(got[m], m, still, steps[-tail])))
    return pd.DataFrame(rows)

def seed_lines(gots:dict, # setting -> {method: runner-like result}
               shown:str='.') -> str:
    "The report's markdown of `seed_split` for every panel; `shown`: the folder of figure1_seeds.png as the report names it."
    rows = [(s, r) for s in 'abcd' for _, r in seed_split(gots.get(s) or {}).iterrows()]
    if not rows: return 'Seeds one by one: no seeds of the guarded methods (SMG, AMG, safe AMG) yet.'
    last, mid, still = rows[0][1]['last'], rows[0][1]['mid'], rows[0][1]['still_from']
    rng = lambda r, k: f"{r[k + '_median']:.3f} [{r[k + '_min']:.3f}, {r[k + '_max']:.3f}]"
    below = lambda r: '-' if r['baseline'] is None else f"{r['below_baseline']} of {r['n']} ({LABELS[r['baseline']]} {r['baseline_end']:.3f})"
    lines = [f"Seeds one by one, for the guarded methods (a mean hides seeds that split; every seed drawn: "
             f"[figure1_seeds.png]({shown}/figure1_seeds.png)): monitor-set loss at step {last:,} and each seed's lowest "
             f"along the run, median [lowest seed, highest seed]; how many seeds end below the best baseline's mean; "
             f"how many end higher than they were at step {mid:,}; and how many did not move from step {still:,} on "
             f"(the same monitor-set loss at every evaluation; in parentheses, how many of those chose the 'stay' "
             f"candidate at every step from there, read from their branch records; SMG has no such candidate).", '',
             f"| panel | method | n | step {last:,} | lowest along the run | end below the best baseline's mean | end above step {mid:,} | unchanged from step {still:,} |",
             '|---|---|---|---|---|---|---|---|']
    stay = lambda r: '' if r['stayed'] is None or pd.isna(r['stayed']) or r['unchanged'] == 0 else f" ({int(r['stayed'])} 'stay' throughout)"
    lines += [f"| ({s}) | {LABELS[r['method']]} | {r['n']} | {rng(r, 'end')} | {rng(r, 'low')} | {below(r)} | {r['above_mid']} of {r['n']} | {r['unchanged']} of {r['n']}{stay(r)} |"
              for s, r in rows]
    return '\n'.join(lines)

def seeds_figure(gots:dict, # setting -> {method: runner-like result}
                 out:Path, sources:dict|None=None):
    "A panel per row and a guarded method per column: every seed (thin lines) against the best baseline's mean (dashed)."
    fig, axs = plt.subplots(4, len(GUARDED), figsize=(12, 11), sharex=True, squeeze=False)
    for row, s in zip(axs, 'abcd'):
        got = gots.get(s) or {}
        base, _ = best_baseline(got)
        if base: b_mon, b_steps = _monitor(got[base])
        src = f'; {source_name(sources[s])}' if sources and s in sources else ''
        for ax, m in zip(row, GUARDED):
            if m not in got: ax.set_axis_off(); ax.set_title(f'({s}) {LABELS[m]}: no seeds yet', fontsize=8); continue
            mon, steps = _monitor(got[m])
            for y in mon: ax.plot(steps, y, color=COLORS[m], lw=0.7, alpha=0.6)
            if base:
                ax.plot(b_steps, b_mon.mean(0), color='k', ls='--', lw=1.2, label=f'{LABELS[base]} (mean)')
                ax.legend(fontsize=7, loc='upper right')
            ax.set_yscale('log')
            ax.set_title(f'({s}) {LABELS[m]}, {len(mon)} seeds{src}', fontsize=8)
    for row in axs:  # the loss named on the first drawn axis of each row (a column on its left may have no seeds yet)
        drawn = [ax for ax in row if ax.axison]
        if drawn: drawn[0].set_ylabel('monitor-set loss')
    for col in axs.T:  # steps under every drawn axis with no drawn axis below it (a row below may have no seeds yet)
        for ax, below in zip(col, [*col[1:], None]):
            if ax.axison and (below is None or not below.axison): ax.tick_params(labelbottom=True); ax.set_xlabel('step')
    fig.tight_layout()
    _write_png(fig, out, dpi=110)
    return fig


# %%
# Four seeds of AMG that split: two end below the best baseline (LGL2O, 0.3), two above; three end above their loss halfway; one stops moving.
fake = lambda rows: dict(evals=torch.tensor(rows, dtype=torch.float32)[..., None].expand(-1, -1, 6), eval_steps=torch.tensor([0, 10, 20, 30, 40]))
flat = lambda v, n=3: fake([[2.3, v, v, v, v]]*n)
toy = {'sgd': flat(1.0), 'l2o': flat(0.5), 'lgl2o': flat(0.3), 'lgl2o_no_update': flat(0.8),
       'amg': fake([[2.3, 0.5, 0.2, 0.1, 0.1], [2.3, 0.1, 0.1, 0.1, 0.2], [2.3, 0.4, 0.5, 0.6, 0.9], [2.3, 0.3, 0.5, 1.0, 2.0]])}
# Its step record [seeds, 40 steps, 5]: branch 3 is AMG's 'stay'; the first seed chose it at every step from 30 on.
branch = torch.zeros(4, 40); branch[0, 30:] = 3; branch[2, 35:] = 3
toy['amg']['record'] = torch.cat([branch[..., None], torch.zeros(4, 40, 4)], -1)
sp = seed_split(toy).iloc[0]
test_eq((sp['method'], sp['n'], sp['mid'], sp['baseline'], sp['below_baseline'], sp['above_mid'], sp['unchanged'], sp['still_from'], sp['stayed']),
        ('amg', 4, 20, 'lgl2o', 2, 3, 1, 30, 1))  # the first seed did not move from step 30 on, and stayed at every step from there
toy['amg']['record'][0, 35, 0] = 1  # one step of the fallback: the seed no longer counts as staying throughout
test_eq(seed_split(toy).iloc[0]['stayed'], 0)
toy['amg']['record'][0, 35, 0] = 3
assert pd.isna(seed_split({**toy, 'smg': toy['amg']}).set_index('method').loc['smg', 'stayed'])  # SMG has no 'stay' candidate
test_close([sp['end_median'], sp['end_min'], sp['end_max'], sp['low_min'], sp['low_max']], [0.55, 0.1, 2.0, 0.1, 0.4], eps=1e-6)
test_eq(seed_split({'amg': toy['amg']}).iloc[0]['below_baseline'], None)  # without all four baselines: not counted
with tempfile.TemporaryDirectory() as d: fig = seeds_figure({'a': toy, 'c': toy}, Path(d)/'seeds.png')
# steps under both drawn axes: (a)'s, though panel (b) below it has no seeds, and (c)'s, though (d) has none;
# the loss named on each row's first drawn axis, though the SMG column on their left has no seeds
test_eq([(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.axison],
        [('(a) AMG, 4 seeds', 'step', 'monitor-set loss'), ('(c) AMG, 4 seeds', 'step', 'monitor-set loss')])
plt.close(fig)
toy_md = seed_lines({'c': toy})
assert "| (c) | AMG | 4 | 0.550 [0.100, 2.000] | 0.200 [0.100, 0.400] | 2 of 4 (LGL2O (w/ Update) 0.300) | 3 of 4 | 1 of 4 (1 'stay' throughout) |" in toy_md, toy_md
test_eq(seed_lines({'c': {'sgd': toy['sgd']}}), 'Seeds one by one: no seeds of the guarded methods (SMG, AMG, safe AMG) yet.')


# %% [markdown]
# ## Where a panel's files go, and how they are written
#
# Each protocol has its own folder, `outputs/figure1/<preset>/` (a run with other seeds or steps goes
# to `outputs/figure1/custom-<seeds>x<steps>/`), so a trial run never replaces a larger protocol's
# results. The panel's files are written only when everything is computed, each one whole
# (a temporary file, then a rename): a run that fails leaves every existing file as it was.
# A rerun that computes the same panel writes the same bytes: the PDF carries no creation date, and
# `make figure1` passes the executed notebook through `drop_run_times` (papermill's and the kernel's
# clock times, the injected cell's random id), so rerunning a shipped panel leaves the checkout clean.

# %%
#| export
def output_dir(P:dict, out_dir=None) -> Path:
    "The folder of a protocol's panels: `out_dir`, or outputs/figure1/<preset> (custom-<seeds>x<steps> off the presets)."
    if out_dir: return Path(out_dir)
    as_preset = PRESETS[P['preset']] == dict(seeds=len(P['seeds']), steps=P['steps'])
    name = P['preset'] if as_preset else f"custom-{len(P['seeds'])}x{P['steps']}"
    return (checkout() or Path.cwd())/'outputs'/'figure1'/name

def save_panel(df:pd.DataFrame, fig, out:Path, setting:str):
    "The panel's png, pdf and csv, each written whole; the pdf carries no creation date, so the same panel gives the same bytes."
    for ext in ('png', 'pdf', 'csv'):
        with atomic_write(Path(out)/f'{setting}.{ext}') as tmp:
            if ext == 'csv': df.to_csv(tmp, index=False)
            else: fig.savefig(tmp, dpi=120, **({'metadata': {'CreationDate': None}} if ext == 'pdf' else {}))

def drop_run_times(nb:Path):
    "Remove what differs between two runs of the same panel from an executed notebook, in place: papermill's clock times, the kernel's per-cell timestamps and the random id of the injected parameters' cell."
    import nbformat
    d = nbformat.read(nb, as_version=4)
    for m in [d.metadata.get('papermill', {})] + [c.metadata.get('papermill', {}) for c in d.cells]:
        for k in ('start_time', 'end_time', 'duration'): m.pop(k, None)
    for c in d.cells:
        c.metadata.pop('execution', None)
        if 'injected-parameters' in c.metadata.get('tags', []): c.id = 'injected-parameters'
    nbformat.write(d, nb)


# %% [markdown]
# ## The report: Figure 1, its table and the verdicts, from the results store
#
# `report(preset)` reads whatever seeds of the protocol are in the results store (it computes
# nothing), and writes the 2x2 figure against steps and against optimizee gradient evaluations, the
# four panels' CSVs, and `report.md`: the monitor-set loss at steps 200, 1,000 and the last, mean
# [95% CI] and the number of seeds in each cell, and the verdict of every claim on every panel.
# `python -m metaguard_nb.figure report --preset paper` runs it and puts `report.md` into the README
# between its markers; a test checks that the README's block equals what the committed store gives.
# Until every seed is in, the report is labelled partial, says how many are in, and lists what is still to run.
#
# Each panel is read from one source: one device and one LSTM step (compiled or eager), because they
# round differently and the store keys them apart. `panel_results` takes the source with the most
# seed-runs of the protocol in the store, so a panel that a GPU finished is read from the GPU's seeds
# and one that the CPU finished from the CPU's, and the report says which it read.

# %%
#| export
SOURCES = (('cpu', True), ('cpu', False), ('cuda', True), ('cuda', False))  # (device, compiled LSTM step): what a seed's rounding depends on

def collect(setting:str, method:str, seeds, steps:int, eval_every:int=10, device:str='cpu', store=None, compile:bool|None=None,
            variant:str='paper') -> dict|None:
    "The stored seeds of (setting, method) of `variant` for a `steps`-step run on `device` (`compile`: None reads METAGUARD_COMPILE), read only: a runner-like result, or None if none is in."
    V = get_variant(variant)
    if method in V.unchanged: V = get_variant('paper')  # a method the variant does not change is read from the paper's runs
    guard = V.guard_config(**({} if compile is None else {'compile': compile}))
    try: ck = setting_checkpoint(setting, V.checkpoint(setting))[2]
    except FileNotFoundError: return None  # the variant's optimizers are not meta-trained yet: no seed can be in
    key = run_key(method, setting, eval_every, guard, ck, device)
    folder = result_folder(key, store)
    got = {sd: r for sd in seeds if (r := find_seed(folder, sd, steps, eval_every, key['test_every'])) is not None}
    if not got: return None
    out = dict(seeds=list(got), evals=torch.stack([r['evals'] for r in got.values()]), eval_steps=next(iter(got.values()))['eval_steps'],
               record=torch.stack([r['record'] for r in got.values()]))
    if all('candidates' in r for r in got.values()):
        out.update(candidates=torch.stack([r['candidates'] for r in got.values()]), candidate_names=next(iter(got.values()))['candidate_names'])
    return out

def panel_results(setting:str, P:dict, store=None, sources=SOURCES, variant:str='paper') -> tuple:
    "((device, compiled), {method: collected}, {source: seed-runs}): the one source a panel is read from (the most stored seed-runs, the first of `sources` on a tie), and what each source holds."
    best, counts = None, {}
    for src in sources:
        got = {m: r for m in REPORT_METHODS
               if (r := collect(setting, m, P['seeds'], P['steps'], P['eval_every'], src[0], store, src[1], variant)) is not None}
        counts[src] = sum(len(r['seeds']) for r in got.values())
        if best is None or counts[src] > counts[best[0]]: best = (src, got)
    return (*best, counts)

def still_to_run(counts:dict, n:int) -> str:
    "What a partial protocol lacks, from `counts` {(setting, method): seeds in}: panel by panel, the methods grouped by how many of their `n` seeds are missing."
    parts = []
    for s in 'abcd':
        by = {}
        for m in REPORT_METHODS:
            if k := n - counts.get((s, m), 0): by.setdefault(k, []).append(LABELS[m])
        if by: parts.append(f'({s}) ' + ', '.join(f"{', '.join(ms)} {k} seed{'s'*(k > 1)}{' each'*(len(ms) > 1)}" for k, ms in by.items()))
    return '; '.join(parts) or 'nothing'

def _shown(path:Path) -> str:
    "A path as the report names it: relative to the checkout where it lies inside it."
    root = checkout()
    try: return Path(path).resolve().relative_to(root.resolve()).as_posix() if root else str(path)
    except ValueError: return str(path)

def claim_table(dfs:dict, # setting -> the panel's summary (`summarize`)
                gots:dict, # setting -> {method: per-seed results}
               ) -> pd.DataFrame:
    "Every panel's claims (`claims`, safe AMG left out: the paper's claims do not involve it), one row per panel and claim."
    parts = [claims(dfs[s][dfs[s]['method'] != 'safe_amg'], gots[s]).assign(panel=s) for s in 'abcd' if not dfs[s].empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

def claim_lines(dfs:dict, gots:dict) -> str:
    "The report's markdown of the claims: the two rules of each, then each panel's verdicts by the means and paired per seed."
    t = claim_table(dfs, gots)
    if t.empty: return "The paper's claims: not tested, no seeds yet."
    rules = t.drop_duplicates('claim')
    lines = ["The paper's claims, each judged per panel by two rules (`figure.claims`): on the mean curves (written before "
             f"the runs), and paired per seed (a two-sided Wilcoxon signed-rank test at alpha = {ALPHA} over the seeds both "
             "methods ran, added after them, because every method runs the same seeds on the same batches):", '']
    lines += [f"- {r['claim']}: by the means, {r['rule']}; paired, {r['paired_rule']}." for _, r in rules.iterrows()]
    lines += ['', '| panel | claim | by the means | paired | the means | paired per seed |', '|---|---|---|---|---|---|']
    lines += [f"| ({r['panel']}) | {r['claim']} | **{r['verdict']}** | **{r['paired']}** | {r['numbers']} | {r['paired_numbers']} |"
              for _, r in t.iterrows()]
    return '\n'.join(lines)

def paired_lines(gots:dict, out:Path|None=None, steps=(1000, 2000)) -> str:
    "The report's markdown of every panel's `paired_table` (one row per guarded method and baseline); the full table goes to `out`/paired.csv."
    parts = [paired_table(gots[s], steps).assign(panel=s) for s in 'abcd' if gots.get(s)]
    t = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if t.empty: return 'Paired per seed: no guarded method and baseline on the same panel yet.'
    if out is not None:
        with atomic_write(Path(out)/'paired.csv') as tmp: t.to_csv(tmp, index=False, float_format='%.6g')
    ks = sorted(t['step'].unique())
    cell = lambda r: (f"**{r['reading']}**: {r['below']} of {r['n']} seeds lower; median {r['median_a']:.3f} vs {r['median_b']:.3f}; "
                      f"sign p = {r['sign_p']:.2g}, Wilcoxon p = {r['wilcoxon_p']:.2g}")
    lines = [f"Each guarded method against each baseline, paired per seed (the same seeds, initialisations and batches): its "
             f"reading at alpha = {ALPHA} (lower, higher, or no difference by the Wilcoxon signed-rank test), how many seeds end "
             "lower than the same seed's baseline run, both medians, and the sign test's and the Wilcoxon test's two-sided "
             "p-values (`paired.csv` beside this report has the means too):", '',
             '| panel | method | against | ' + ' | '.join(f'step {k:,}' for k in ks) + ' |', '|---|---|---|' + '---|'*len(ks)]
    for (s, m, b), g in t.groupby(['panel', 'method', 'baseline'], sort=False):
        by = {int(r['step']): cell(r) for _, r in g.iterrows()}
        lines.append(f'| ({s}) | {LABELS[m]} | {LABELS[b]} | ' + ' | '.join(by.get(k, '-') for k in ks) + ' |')
    return '\n'.join(lines)

def claims_at_a_glance(t:pd.DataFrame, # `claim_table`
                      ) -> str:
    "The claim table folded to one row per claim and one column per panel, each cell 'by the means / paired'."
    if t.empty: return ''
    yes = {'reproduced': 'yes', 'not reproduced': 'no', 'not tested': '-'}
    panels = list(dict.fromkeys(t['panel']))
    lines = ['| claim (by the means / paired per seed) | ' + ' | '.join(f'({s})' for s in panels) + ' |', '|---|' + '---|'*len(panels)]
    for c, g in t.groupby('claim', sort=False):
        by = {r['panel']: f"{yes[r['verdict']]} / {yes[r['paired']]}" for _, r in g.iterrows()}
        lines.append(f'| {c} | ' + ' | '.join(by.get(s, '-') for s in panels) + ' |')
    return '\n'.join(lines)

def answer_lines(dfs:dict, gots:dict, P:dict) -> str:
    "The front page's answer, from the store: where AMG stands against each baseline on each panel at the last step (mean, median, paired), and the claims at a glance."
    last, n = P['steps'], len(P['seeds'])
    t = claim_table(dfs, gots)
    whole = [s for s in 'abcd' if all(m in gots.get(s, {}) for m in ('amg', *BASELINES))]
    if not whole: return f"No panel has AMG and all four baselines in the store yet (`make figure1-all PRESET={P['preset']}`)."
    amg = t[t['claim'] == 'AMG beats all baselines'].set_index('panel')
    by_mean = [s for s in whole if amg.loc[s, 'verdict'] == 'reproduced']
    by_pair = [s for s in whole if amg.loc[s, 'paired'] == 'reproduced']
    panels = lambda ss: ', '.join(f'({s})' for s in ss) or 'none'
    name = "the paper's protocol" if P['preset'] == 'paper' else f"the {P['preset']} protocol"
    lines = [f"**Does AMG beat every baseline, as the paper's Figure 1 says?** At {name} ({n} seeds x {last:,} "
             f"steps, every method on the same seeds and batches), AMG is below all four baselines at step {last:,} on "
             f"{len(by_mean)} of {len(whole)} panels by the mean ({panels(by_mean)}) and lower than all four paired per seed on "
             f"{len(by_pair)} of {len(whole)} ({panels(by_pair)}; a two-sided Wilcoxon signed-rank test at alpha = {ALPHA} "
             "against each baseline).", '',
             f"AMG at step {last:,}, and each baseline: its mean, then the paired reading (AMG lower, higher, or no difference) "
             "and in how many seeds AMG ends lower:", '',
             '| panel | AMG mean (median) | ' + ' | '.join(LABELS[b] for b in BASELINES) + ' |', '|---|---|' + '---|'*len(BASELINES)]
    for s in whole:
        pt = paired_table(gots[s], (last,), ('amg',)).set_index('baseline')
        a = pt.iloc[0]  # AMG's own mean and median, the same in every row
        cells = [f"{pt.loc[b, 'mean_b']:.3f}: {pt.loc[b, 'reading']} ({pt.loc[b, 'below']}/{pt.loc[b, 'n']})" for b in BASELINES]
        lines.append(f"| ({s}) | {a['mean_a']:.3f} ({a['median_a']:.3f}) | " + ' | '.join(cells) + ' |')
    pts = {s: paired_table(gots[s], (last,), ('amg',)).set_index('baseline') for s in whole}
    where = lambda b, r: [s for s in whole if pts[s].loc[b, 'reading'] == r]
    said = lambda r: '; '.join(f"than {LABELS[b]} on {panels(where(b, r))}" for b in BASELINES if where(b, r)) or 'than no baseline'
    lines += ['', f"Paired per seed, AMG is lower {said('lower')}, and higher {said('higher')}; elsewhere the paired test finds "
                  "no difference. " + ("So Figure 1's claim that AMG outperforms the baselines in most cases is not reproduced at "
                  "the paper's own protocol, by either reading." if not by_mean and not by_pair else
                  f"So Figure 1's claim that AMG outperforms the baselines holds on {panels(sorted(set(by_mean) | set(by_pair)))} "
                  "by at least one reading, and on no other panel.")]
    smg = [s for s in whole if 'smg' in gots[s]]
    if smg:
        low = {s: (paired_table(gots[s], (last,), ('smg',))['reading'] == 'lower').sum() for s in smg}
        lines += ['', f"SMG, the paper's other adapting optimizer, is lower than a baseline paired per seed at step {last:,} in "
                      f"{sum(low.values())} of {4*len(smg)} comparisons on {len(smg)} panels."]
    lines += ['', "The paper's Figure 1 claims, each by its rule on the means and by the paired rule (`figure.claims`; "
                  "yes = reproduced):", '', claims_at_a_glance(t)]
    return '\n'.join(lines)

def report(preset:str='paper', store=None, out=None, sources=SOURCES) -> str:
    "Figure 1, its table and the verdicts from the stored seeds of `preset`, each panel from one source; writes them to `out` and returns the markdown."
    P = protocol('a', preset)
    out = Path(out) if out else output_dir(P)
    out.mkdir(parents=True, exist_ok=True)
    dfs, gots, counts, src, read, unread = {}, {}, {}, {}, {}, 0
    for s in 'abcd':
        src[s], got, held = panel_results(s, P, store, sources)
        read[s], unread = held[src[s]], unread + sum(held.values()) - held[src[s]]
        counts.update({(s, m): len(r['seeds']) for m, r in got.items()})
        gots[s] = got
        dfs[s] = summarize(got, s) if got else pd.DataFrame()
        if got:
            with atomic_write(out/f'{s}.csv') as tmp: dfs[s].to_csv(tmp, index=False)
    for view, name in (('step', 'figure1.png'), ('grad_evals', 'figure1_compute.png')):
        plt.close(combined_figure(dfs, out/name, view, src))
    plt.close(seeds_figure(gots, out/'figure1_seeds.png', src))
    total, want = sum(counts.values()), 4*len(REPORT_METHODS)*len(P['seeds'])
    status = 'complete' if total == want else f'partial: {total} of {want} seed-runs in'
    lines = [f"**{preset} protocol** ({len(P['seeds'])} seeds x {P['steps']} steps per method and panel; {status}). "
             f"Generated by `python -m metaguard_nb.figure report --preset {preset}` from `outputs/results/`; "
             f"figures and CSVs in `{_shown(out)}/`.", '',
             'Each panel is read from one device and LSTM step (float rounding differs between them; the store keys them apart), '
             'the one with the most seed-runs in: ' + '; '.join(
                 f"({s}) {source_name(src[s])}, "
                 f"{read[s]} seed-runs" for s in 'abcd') + '.'
             + (f' The store holds {unread} more seed-runs of this protocol from the other sources, not read here.' if unread else ''), '']
    if total != want: lines += [f"Still to run, on the source each panel is read from: {still_to_run(counts, len(P['seeds']))}.", '']
    steps = [k for k in (200, 1000) if k < P['steps']] + [P['steps']]
    lines += ['Monitor-set loss, mean [95% CI] (n seeds):', '',
              '| panel | method | ' + ' | '.join(f'step {k:,}' for k in steps) + ' |', '|---|---|' + '---|'*len(steps)]
    for s in 'abcd':
        df = dfs[s]
        for m in REPORT_METHODS:
            d = df[df['method'] == m] if not df.empty else df
            if d.empty: lines.append(f'| ({s}) | {LABELS[m]} | ' + ' | '.join('-' for _ in steps) + ' |'); continue
            cell = lambda r: f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] ({int(r['n_seeds'])})"
            lines.append(f'| ({s}) | {LABELS[m]} | ' + ' | '.join(cell(d[d['step'] == k].iloc[0]) for k in steps) + ' |')
    lines += ['', claim_lines(dfs, gots), '', paired_lines(gots, out, (P['steps']//2, P['steps'])), '', seed_lines(gots, _shown(out))]
    md = '\n'.join(lines) + '\n'
    with atomic_write(out/'report.md') as tmp: tmp.write_text(md)
    with atomic_write(out/'answer.md') as tmp: tmp.write_text(answer_lines(dfs, gots, P) + '\n')
    return md

def main(argv=None):
    "python -m metaguard_nb.figure check|report|drop-run-times: check make figure1's parameters in one line, write the report of a protocol, or tidy executed notebooks."
    import argparse
    ap = argparse.ArgumentParser(prog='python -m metaguard_nb.figure')
    sub = ap.add_subparsers(dest='cmd', required=True)
    c = sub.add_parser('check', help="check make figure1's parameters (one line on error)")
    for k in ('setting', 'preset', 'device', 'seeds', 'steps', 'methods', 'eval_every'): c.add_argument(f'--{k}', default='')
    r = sub.add_parser('report', help='Figure 1, table and verdicts of a protocol from the results store')
    r.add_argument('--preset', default='paper'); r.add_argument('--no-readme', action='store_true')
    t = sub.add_parser('drop-run-times', help="remove what differs between two runs of a panel (clock times, the injected cell's id) from executed notebooks, in place")
    t.add_argument('notebooks', nargs='+')
    a = ap.parse_args(argv)
    try:
        if a.cmd == 'drop-run-times':
            for nb in a.notebooks: drop_run_times(nb)
            return
        if a.cmd == 'check':
            num = lambda v: None if v == '' else int(v) if v.lstrip('-').isdigit() else v
            protocol(a.setting or 'c', a.preset or 'quick', num(a.seeds), num(a.steps), a.methods.split() or None, a.device or 'cpu',
                     num(a.eval_every) if a.eval_every else 10)
            return
        md = report(a.preset)
        if not a.no_readme:
            from metaguard_nb.docs import write_readme
            write_readme()
        print(md)
    except ValueError as e: raise SystemExit(f'error: {e}')

if __name__ == '__main__' and not hasattr(builtins, '__IPYTHON__'): main()  # not when a notebook runs this cell

# %% [markdown]
# ## Parameters (papermill)

# %% tags=["parameters"]
setting = 'c'  # the panel: a, b, c or d
preset = 'quick'  # 'quick' (3 seeds, 300 steps), 'paper' (25 seeds, 2,000 steps), 'tiny' (2 seeds, 20 steps)
seeds = None  # number of seeds or a list; None: the preset's
steps = None  # None: the preset's
methods = None  # None: the six methods of Figure 1 and safe AMG
device = 'cpu'  # 'cpu' or 'cuda'
eval_every = 10  # steps between monitor-set evaluations
compile = None  # torch.compile the LSTM step: True or False; None reads METAGUARD_COMPILE (default on)
out_dir = None  # None: outputs/figure1/<preset> in the checkout (see output_dir)

# %% [markdown]
# Under the test suite (`nbdev_test` sets `IN_TEST`) the notebook runs the `tiny` protocol into a
# temporary folder, so tests never touch the shipped results.

# %%
in_test = bool(os.environ.get('IN_TEST'))
if in_test: preset, out_dir = 'tiny', tempfile.mkdtemp()
P = protocol(setting, preset, seeds, steps, methods, device, eval_every)
out = output_dir(P, out_dir)
store = Path(out_dir)/'results' if out_dir else None  # a given out_dir keeps its own results store
name, net, data = figure_setting(setting)
as_preset = PRESETS[P['preset']] == dict(seeds=len(P['seeds']), steps=P['steps'])
protocol_name = f" ({P['preset']})" if as_preset else ''
title = (f"({setting}) train: {name.replace('_', ' & ')}, test: {net} & {data}; "
         f"{len(P['seeds'])} seeds x {P['steps']} steps{protocol_name}, mean and 95% CI")
print(title, '->', _shown(out))  # relative to the checkout: the shipped notebook does not name the machine it ran on

# %% [markdown]
# ## Run the methods
#
# One bar for the panel, one nested bar per method (with time estimates). Seeds already in the
# results store (`outputs/results`, committed) are read, not computed: a second identical run takes
# seconds, a run of the quick protocol reads the first 300 steps of the paper protocol's seeds where
# they are in, and an interrupted run resumes where it stopped.
#
# A panel that the store holds whole (every seed of every method, from one device and one kind of
# LSTM step: `panel_results`) is read as it is, wherever it was computed: the paper protocol's
# panels that a GPU finished rebuild here in seconds on a CPU, and nothing is run again.

# %%
from fastprogress.fastprogress import master_bar
from metaguard_nb.guards import GuardConfig

# %%
guard = GuardConfig() if compile is None else GuardConfig(compile=bool(compile))
src, stored, _ = panel_results(setting, P, store)
if all(m in stored and len(stored[m]['seeds']) == len(P['seeds']) for m in P['methods']):
    results = {m: stored[m] for m in P['methods']}
    print(f"every seed is in the results store: read, computed on {src[0]} with the {'compiled' if src[1] else 'eager'} LSTM step")
else:
    mb = master_bar(P['methods'])
    results = {}
    for method in mb:
        mb.main_bar.comment = LABELS[method]
        results[method] = run(method, setting, steps=P['steps'], seeds=P['seeds'], device=P['device'],
                              eval_every=P['eval_every'], store=store, bar_parent=mb, guard=guard)
df = summarize(results, setting)

# %% [markdown]
# ## The panel

# %%
axs = plot_panel(df, title=title)
plt.tight_layout()
save_panel(df, plt.gcf(), out, setting)
print('wrote', *(_shown(out/f'{setting}.{x}') for x in ('png', 'pdf', 'csv')))

# %% [markdown]
# Monitor-set loss, mean and 95% CI, at steps 200 and 1,000 (where reached) and at the last step:

# %%
table(df)

# %% [markdown]
# The paper's claims about Figure 1, judged on this panel by explicit rules (the README's fidelity
# table is this, for each panel):

# %%
claims(df, results)

# %% [markdown]
# ## The paper's protocol: Figure 1 at 25 seeds x 2,000 steps
#
# What the committed store holds at the paper's protocol, as `report --preset paper` drew it from
# the store (`outputs/figure1/paper/`; nothing here is recomputed): Figure 1 against steps and against
# optimizee gradient evaluations, then every seed of the guarded methods against the best baseline's
# mean, then the report itself (the table, the claims by both readings, every guarded method against
# every baseline paired per seed, and the seeds one by one).

# %%
from IPython.display import Image, Markdown, display

# %%
paper_dir = (checkout() or Path.cwd())/'outputs'/'figure1'/'paper'
for name in ('figure1.png', 'figure1_compute.png'):
    if (paper_dir/name).exists(): display(Image(filename=str(paper_dir/name), width=900))

# %%
if (paper_dir/'figure1_seeds.png').exists(): display(Image(filename=str(paper_dir/'figure1_seeds.png'), width=900))

# %%
if (paper_dir/'report.md').exists(): display(Markdown((paper_dir/'report.md').read_text()))
