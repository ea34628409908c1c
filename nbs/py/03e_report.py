# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reading the results: means, paired per seed, the claims, the seeds one by one
#
# > Read a protocol's seeds from the results store (computing nothing), and say what they show: means and intervals, each guarded method against each baseline paired per seed, the paper's claims by explicit rules, and the seeds one by one.

# %% [markdown]
# Chapter [04_figure1](04_figure1.ipynb) draws Figure 1 and writes its report; everything it says in
# words and tables comes from this chapter, which reads and judges and draws nothing. The results
# store ([03a_store](03a_store.ipynb)) holds every finished seed; a protocol (`runner.PROTOCOLS`) says
# which seeds, steps, panels and methods to read.

# %%
#| default_exp report

# %%
#| export
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

from metaguard_nb.guards import get_method
from metaguard_nb.persist import atomic_write
from metaguard_nb.runner import PROTOCOLS, Protocol, check_device, figure_setting, paper_methods, setting_checkpoint, variant as get_variant
from metaguard_nb.store import find_seed, result_folder, run_key

# %% [markdown]
# ## Protocols
#
# The protocols are the runner's records (`runner.PROTOCOLS`): `quick` fits in minutes on a 2-core
# CPU; `paper` is the paper's protocol (25 seeds, 2,000 steps); `tiny` is what the test suite runs.
# Explicit `seeds` or `steps` override the preset. Every method's name, label and colour come from
# its record in the registry (`guards.METHODS`); the report measures the paper protocol's guarded
# methods against its baselines.

# %%
#| export
BASELINES = tuple(m for m in PROTOCOLS['paper'].methods if get_method(m).role == 'baseline')  # what the guarded methods are measured against

GUARDED = tuple(m for m in PROTOCOLS['paper'].methods if get_method(m).role == 'guarded')

def label(method:str, # a registered method's name
         )->str:
    "How tables and figures name a registered method."
    return get_method(method).label

def protocol(setting:str, # a panel
             preset:str='quick', # a protocol of `runner.PROTOCOLS`
             seeds=None, # a number of seeds or a list of them; None: the preset's
             steps=None, # None: the preset's
             methods=None, # registered methods; None: the preset's
             device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
             eval_every:int|None=None, # monitor-set evaluation every this many steps (None: the preset's)
            )->dict:
    "Check every parameter (one-line errors, before any compute) and resolve the preset."
    figure_setting(setting)
    if preset not in PROTOCOLS: raise ValueError(f"preset={preset!r} is unknown: use one of {', '.join(PROTOCOLS)}")
    pr = PROTOCOLS[preset]
    n = pr.seeds if seeds is None else seeds
    seeds = list(range(n)) if isinstance(n, int) else [int(s) for s in n]
    steps = pr.steps if steps is None else steps
    eval_every = pr.eval_every if eval_every is None else eval_every
    if not isinstance(steps, int) or steps <= 0: raise ValueError(f'steps={steps!r}: use a positive integer')
    if not seeds: raise ValueError(f'seeds={n!r}: use a positive number of seeds or a list of seeds')
    methods = list(pr.methods) if methods is None else [get_method(m).name for m in methods]  # one line for an unknown name
    if not isinstance(eval_every, int) or eval_every <= 0: raise ValueError(f'eval_every={eval_every!r}: use a positive integer')
    check_device(device)
    return dict(setting=setting, preset=preset, seeds=seeds, steps=steps, methods=methods, device=device, eval_every=eval_every,
                panels=list(pr.panels))


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
              setting:str, # a registered Figure 1 panel, e.g. 'c'
             )->pd.DataFrame:
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

def monitor_losses(r:dict, # a runner-like result (`runner.run`, `collect`)
                  )->tuple:
    "(monitor loss [S, K] as float64, evaluation steps) of a runner-like result."
    return r['evals'][..., 0].double().numpy(), r['eval_steps'].tolist()

def seed_losses(r:dict, # a runner-like result: seeds, evals [S, K, 6], eval_steps
                at, # an evaluation step (the nearest is taken), or (lo, hi): the mean over evaluation steps in (lo, hi]
               ) -> dict:
    "Each seed's monitor-set loss at a step, or its mean over a stretch of steps: {seed: loss}."
    mon, steps = monitor_losses(r)
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

def significantly_lower(p:dict, # a paired comparison (`paired`)
                       )->bool:
    "The paired rule: A's losses are lower than B's by a two-sided Wilcoxon signed-rank test at `ALPHA`."
    return p['wilcoxon_p'] < ALPHA and p['favours_a']

def paired_reading(p:dict, # a paired comparison (`paired`)
                  )->str:
    "A paired comparison's reading: 'lower' (the paired rule holds), 'higher' (the Wilcoxon test rejects, the other way) or 'no difference'."
    return 'lower' if significantly_lower(p) else 'higher' if p['wilcoxon_p'] < ALPHA else 'no difference'

def paired_words(p:dict, # a paired comparison (`paired`)
                 a:str, # the first method's label
                 b:str, # the second method's label
                )->str:
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
        last = monitor_losses(got[m])[1][-1]
        for k in [k for k in steps if k <= last]:
            for b in [b for b in BASELINES if b in got]:
                p = paired(seed_losses(got[m], k), seed_losses(got[b], k))
                rows.append(dict(method=m, baseline=b, step=k, **p, reading=paired_reading(p)))
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
test_eq(paired_reading(p), 'lower' if p['wilcoxon_p'] < 0.05 else 'no difference')
test_eq(paired_reading(paired(B, A)), 'higher' if p['wilcoxon_p'] < 0.05 else 'no difference')
test_eq(paired_words(p, 'A', 'B'), f"A < B in 9 of 10 seeds, Wilcoxon p = {p['wilcoxon_p']:.2g}")


# %% [markdown]
# ## The claims, by explicit rules
#
# > "We observe that the baselines L2O and two versions of LGL2O either worsen or improve very slowly
# > after 1000 optimization steps. SGD keeps improving, however, initially significantly slower than
# > the learned optimizer. SMG does not prematurely converge, but is usually slower than SGD. AMG
# > outperforms the baselines in most cases." (paper, Figure 1)
#
# Each claim is judged on a panel by two explicit rules: one on the mean curves, written before the
# paper protocol's runs, and one paired per seed (above), written after them. `table` gives the mean
# [95% CI] at steps 200, 1,000 and the last.

# %%
#| export
def table(df:pd.DataFrame, # one panel's summary (`summarize`)
          steps=(200, 1000), # steps to report where reached
         )->pd.DataFrame:
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


# %%
#| export
def _claim_rows(df:pd.DataFrame, got:dict|None) -> list:
    "(claim, rule, verdict, numbers, paired rule, paired verdict, paired numbers) for each claim of Figure 1."
    last, have = int(df['step'].max()), set(df['method'])
    mid, rows = last//2, []
    lack = lambda *ms: [label(m) for m in ms if m not in have]
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
            return all(v > -0.05 for v in rel.values()), ', '.join(f'{label(m)} {v:+.1%}' for m, v in rel.items())
        def stall_paired():
            ps = {m: paired(at(m, last), at(m, 1000)) for m in stalling}
            return (not any(significantly_lower(p) for p in ps.values()),
                    '; '.join(paired_words(p, f'{label(m)} at step {last}', 'at step 1000') for m, p in ps.items()))
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
                f"AMG {_at(df, 'amg', last):.3f}; best baseline {label(min(base, key=base.get))} {min(base.values()):.3f}")
    def amg_paired():
        ps = {b: paired(at('amg', last), at(b, last)) for b in BASELINES}
        return all(significantly_lower(p) for p in ps.values()), '; '.join(paired_words(p, 'AMG', label(b)) for b, p in ps.items())
    add('AMG beats all baselines', f'AMG below SGD, L2O and both LGL2O at step {last}', ('amg', *BASELINES), amg,
        f'AMG lower than each of SGD, L2O and both LGL2O at step {last}', amg_paired)
    return rows


# %%
#| export
def claims(df:pd.DataFrame, # the panel's summary (`summarize`)
           got:dict|None=None, # method -> per-seed results (runner.run or `collect`), for the paired reading
          ) -> pd.DataFrame:
    "The paper's Figure 1 claims, each judged on this panel by two explicit rules: on the mean curves, and paired per seed by a two-sided Wilcoxon signed-rank test at alpha = 0.05 ('not tested' where a method or the steps are missing)."
    verdict = lambda v: 'not tested' if v is None else ('reproduced' if v else 'not reproduced')
    return pd.DataFrame([dict(claim=c, rule=r, verdict=verdict(v), numbers=n, paired_rule=pr, paired=verdict(pv), paired_numbers=pn)
                         for c, r, v, n, pr, pv, pn in _claim_rows(df, got)])


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
# moving, how many chose 'stay' at every step of that stretch (SMG has no such candidate; the
# paper protocol's counts are in the report's seeds table, [04_figure1](04_figure1.ipynb)).
# `seeds_figure` draws every seed of the guarded methods against the best baseline's mean curve.

# %%
#| export
def _stayed(r:dict, method:str, still:np.ndarray, from_step:int) -> int|None:
    "How many of the seeds flagged in `still` chose 'stay' at every step from `from_step` on; None where `method` has no 'stay' candidate or `r` no step record."
    names = get_method(method).branches
    if 'stay' not in names or 'record' not in r: return None
    branch = r['record'][:, from_step:, 0].numpy()
    return int(((branch == names.index('stay')).all(1) & still).sum())

def best_baseline(got:dict, # one panel's collected results {method: `report.collect`'s dict}
                 )->tuple:
    "(method, mean monitor loss at the last step) of the baseline lowest there, or (None, nan) unless all four are in `got`."
    if any(m not in got for m in BASELINES): return None, math.nan
    end = {m: monitor_losses(got[m])[0][:, -1].mean() for m in BASELINES}
    m = min(end, key=end.get)
    return m, float(end[m])

def seed_split(got:dict, # method -> runner-like result (`collect`): seeds, evals [S, K, 6], eval_steps
              ) -> pd.DataFrame:
    "One row per guarded method in `got`: its seeds at the last step and at their lowest (median, min, max), how many end below the best baseline's mean, how many end above their loss halfway, how many did not move in the last tenth of the run (and of those, how many chose 'stay' at every step of it)."
    base, base_end = best_baseline(got)
    rows = []
    for m in GUARDED:
        if m not in got: continue
        mon, steps = monitor_losses(got[m])
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
               shown:str='.', # the folder of figure1_seeds.png as the report links it
              )->str:
    "The report's markdown of `seed_split` for every panel; `shown`: the folder of figure1_seeds.png as the report names it."
    rows = [(s, r) for s in gots for _, r in seed_split(gots.get(s) or {}).iterrows()]
    if not rows: return 'Seeds one by one: no seeds of the guarded methods (SMG, AMG, safe AMG) yet.'
    last, mid, still = rows[0][1]['last'], rows[0][1]['mid'], rows[0][1]['still_from']
    rng = lambda r, k: f"{r[k + '_median']:.3f} [{r[k + '_min']:.3f}, {r[k + '_max']:.3f}]"
    below = lambda r: '-' if r['baseline'] is None else f"{r['below_baseline']} of {r['n']} ({label(r['baseline'])} {r['baseline_end']:.3f})"
    lines = [f"Seeds one by one, for the guarded methods (a mean hides seeds that split; every seed drawn: "
             f"[figure1_seeds.png]({shown}/figure1_seeds.png)): monitor-set loss at step {last:,} and each seed's lowest "
             f"along the run, median [lowest seed, highest seed]; how many seeds end below the best baseline's mean; "
             f"how many end higher than they were at step {mid:,}; and how many did not move from step {still:,} on "
             f"(the same monitor-set loss at every evaluation; in parentheses, how many of those chose the 'stay' "
             f"candidate at every step from there, read from their branch records; SMG has no such candidate).", '',
             f"| panel | method | n | step {last:,} | lowest along the run | end below the best baseline's mean | end above step {mid:,} | unchanged from step {still:,} |",
             '|---|---|---|---|---|---|---|---|']
    stay = lambda r: '' if r['stayed'] is None or pd.isna(r['stayed']) or r['unchanged'] == 0 else f" ({int(r['stayed'])} 'stay' throughout)"
    lines += [f"| ({s}) | {label(r['method'])} | {r['n']} | {rng(r, 'end')} | {rng(r, 'low')} | {below(r)} | {r['above_mid']} of {r['n']} | {r['unchanged']} of {r['n']}{stay(r)} |"
              for s, r in rows]
    return '\n'.join(lines)


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
toy_md = seed_lines({'c': toy})
assert "| (c) | AMG | 4 | 0.550 [0.100, 2.000] | 0.200 [0.100, 0.400] | 2 of 4 (LGL2O (w/ Update) 0.300) | 3 of 4 | 1 of 4 (1 'stay' throughout) |" in toy_md, toy_md
test_eq(seed_lines({'c': {'sgd': toy['sgd']}}), 'Seeds one by one: no seeds of the guarded methods (SMG, AMG, safe AMG) yet.')

# %% [markdown]
# ## Reading a protocol from the store
#
# `collect` reads the stored seeds of one method on one panel, for a protocol's steps and a variant
# ([03b_runner](03b_runner.ipynb)), computing nothing. Each panel is read from one source: one device
# and one LSTM step (compiled or eager), because they round differently and the store keys them
# apart. `panel_results` takes the source with the most seed-runs of the protocol in the store, so a
# panel that a GPU finished is read from the GPU's seeds and one that the CPU finished from the
# CPU's, and the report says which it read. The rest of this section turns a protocol's panels into
# the report's tables: the claims, the paired comparisons, and the front page's answer.

# %%
#| export
SOURCES = (('cpu', True), ('cpu', False), ('cuda', True), ('cuda', False))  # (device, compiled LSTM step): what a seed's rounding depends on

def collect(setting:str, # a registered Figure 1 panel, e.g. 'c'
            method:str, # a registered method's name (`guards.METHODS`), e.g. 'amg'
            seeds, # seeds to read
            steps:int, # steps of the run to serve
            eval_every:int=Protocol.eval_every, # monitor-set evaluation every this many steps
            device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
            store=None, # root folder of the results store (default: outputs/results of this checkout)
            compile:bool|None=None, # read the compiled step's results (None: as METAGUARD_COMPILE says)
            variant:str='paper', # a registered variant's name (`runner.VARIANTS`)
           )->dict|None:
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
               record=torch.stack([r['record'] for r in got.values()]), wall=torch.stack([r['wall'] for r in got.values()]),
               info=[r['info'] for r in got.values()])
    if all('candidates' in r for r in got.values()):
        out.update(candidates=torch.stack([r['candidates'] for r in got.values()]), candidate_names=next(iter(got.values()))['candidate_names'])
    return out

def panel_results(setting:str, # a registered Figure 1 panel, e.g. 'c'
                  P:dict, # a resolved protocol (`report.protocol`)
                  store=None, # root folder of the results store (default: outputs/results of this checkout)
                  sources=SOURCES, # (device, compiled) pairs a panel may be read from, in order of preference
                  variant:str='paper', # a registered variant's name (`runner.VARIANTS`)
                 )->tuple:
    "((device, compiled), {method: collected}, {source: seed-runs}): the one source a panel is read from (the most stored seed-runs, the first of `sources` on a tie), and what each source holds."
    best, counts = None, {}
    for src in sources:
        got = {m: r for m in P.get('methods', PROTOCOLS['paper'].methods)
               if (r := collect(setting, m, P['seeds'], P['steps'], P['eval_every'], src[0], store, src[1], variant)) is not None}
        counts[src] = sum(len(r['seeds']) for r in got.values())
        if best is None or counts[src] > counts[best[0]]: best = (src, got)
    return (*best, counts)

def still_to_run(counts:dict, # {(setting, method): seeds in}
                 n:int, # seeds the protocol runs
                 panels, # panels of the protocol
                 methods, # methods of the protocol
                )->str:
    "What a partial protocol lacks, from `counts` {(setting, method): seeds in}: panel by panel, the methods grouped by how many of their `n` seeds are missing."
    parts = []
    for s in panels:
        by = {}
        for m in methods:
            if k := n - counts.get((s, m), 0): by.setdefault(k, []).append(label(m))
        if by: parts.append(f'({s}) ' + ', '.join(f"{', '.join(ms)} {k} seed{'s'*(k > 1)}{' each'*(len(ms) > 1)}" for k, ms in by.items()))
    return '; '.join(parts) or 'nothing'


# %% [markdown]
# The report's tables: the means, the claims, and the paired comparisons, as markdown.

# %%
#| export
def markdown_table(df:pd.DataFrame, # its index becomes the first column
                   fmt:str='{:.3f}', # how floats are written; None and NaN are written '-'
                  ) -> str:
    "A frame as a markdown table, without any package beyond pandas."
    d = df.reset_index()
    cell = lambda v: '-' if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v) if isinstance(v, float) else str(v)
    rows = [' | '.join(map(str, d.columns))] + [' | '.join(cell(v) for v in r) for r in d.itertuples(index=False)]
    return '\n'.join(f'| {r} |' for r in rows[:1] + [' | '.join(['---']*len(d.columns))] + rows[1:])

def means_lines(dfs:dict, # setting -> the panel's summary (`summarize`)
                P:dict, # the resolved protocol (`protocol`)
               ) -> str:
    "The report's table of the monitor-set loss, mean [95% CI] (n seeds), at steps 200, 1,000 and the last, every method of every panel."
    steps = [k for k in (200, 1000) if k < P['steps']] + [P['steps']]
    lines = ['Monitor-set loss, mean [95% CI] (n seeds):', '',
             '| panel | method | ' + ' | '.join(f'step {k:,}' for k in steps) + ' |', '|---|---|' + '---|'*len(steps)]
    cell = lambda r: f"{r['mean']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] ({int(r['n_seeds'])})"
    for s in P['panels']:
        df = dfs[s]
        for m in P['methods']:
            d = df[df['method'] == m] if not df.empty else df
            if d.empty: lines.append(f'| ({s}) | {label(m)} | ' + ' | '.join('-' for _ in steps) + ' |'); continue
            lines.append(f'| ({s}) | {label(m)} | ' + ' | '.join(cell(d[d['step'] == k].iloc[0]) for k in steps) + ' |')
    return '\n'.join(lines)


# %%
#| export
def claim_table(dfs:dict, # setting -> the panel's summary (`summarize`)
                gots:dict, # setting -> {method: per-seed results}
               ) -> pd.DataFrame:
    "Every panel's claims (`claims`, on the paper's methods only: its claims do not involve ours), one row per panel and claim."
    parts = [claims(dfs[s][dfs[s]['method'].isin(paper_methods(list(dfs[s]['method'].unique())))], gots[s]).assign(panel=s)
             for s in dfs if not dfs[s].empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

def claim_lines(dfs:dict, # each panel's summary (`report.summarize`), by panel
                gots:dict, # each panel's collected results {method: `report.collect`'s dict}, by panel
               )->str:
    "The report's markdown of the claims: the two rules of each, then each panel's verdicts by the means and paired per seed."
    t = claim_table(dfs, gots)
    if t.empty: return "The paper's claims: not tested, no seeds yet."
    rules = t.drop_duplicates('claim')
    lines = ["The paper's claims, each judged per panel by two rules (`report.claims`): on the mean curves (written before "
             f"the runs), and paired per seed (a two-sided Wilcoxon signed-rank test at alpha = {ALPHA} over the seeds both "
             "methods ran, added after them, because every method runs the same seeds on the same batches):", '']
    lines += [f"- {r['claim']}: by the means, {r['rule']}; paired, {r['paired_rule']}." for _, r in rules.iterrows()]
    lines += ['', '| panel | claim | by the means | paired | the means | paired per seed |', '|---|---|---|---|---|---|']
    lines += [f"| ({r['panel']}) | {r['claim']} | **{r['verdict']}** | **{r['paired']}** | {r['numbers']} | {r['paired_numbers']} |"
              for _, r in t.iterrows()]
    return '\n'.join(lines)

def paired_lines(gots:dict, # each panel's collected results {method: `report.collect`'s dict}, by panel
                 out:Path|None=None, # folder for paired.csv (None: not written)
                 steps=(1000, 2000), # steps compared
                )->str:
    "The report's markdown of every panel's `paired_table` (one row per guarded method and baseline); the full table goes to `out`/paired.csv."
    parts = [paired_table(gots[s], steps).assign(panel=s) for s in gots if gots.get(s)]
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
        lines.append(f'| ({s}) | {label(m)} | {label(b)} | ' + ' | '.join(by.get(k, '-') for k in ks) + ' |')
    return '\n'.join(lines)


# %% [markdown]
# The front page's answer: the claims folded to one row each, and where AMG stands against each baseline.

# %%
#| export
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

def answer_lines(dfs:dict, # each panel's summary (`report.summarize`), by panel
                 gots:dict, # each panel's collected results {method: `report.collect`'s dict}, by panel
                 P:dict, # a resolved protocol (`report.protocol`)
                )->str:
    "The front page's answer, from the store: where AMG stands against each baseline on each panel at the last step (mean, median, paired), and the claims at a glance."
    last, n = P['steps'], len(P['seeds'])
    t = claim_table(dfs, gots)
    whole = [s for s in gots if all(m in gots.get(s, {}) for m in ('amg', *BASELINES))]
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
             '| panel | AMG mean (median) | ' + ' | '.join(label(b) for b in BASELINES) + ' |', '|---|---|' + '---|'*len(BASELINES)]
    for s in whole:
        pt = paired_table(gots[s], (last,), ('amg',)).set_index('baseline')
        a = pt.iloc[0]  # AMG's own mean and median, the same in every row
        cells = [f"{pt.loc[b, 'mean_b']:.3f}: {pt.loc[b, 'reading']} ({pt.loc[b, 'below']}/{pt.loc[b, 'n']})" for b in BASELINES]
        lines.append(f"| ({s}) | {a['mean_a']:.3f} ({a['median_a']:.3f}) | " + ' | '.join(cells) + ' |')
    pts = {s: paired_table(gots[s], (last,), ('amg',)).set_index('baseline') for s in whole}
    where = lambda b, r: [s for s in whole if pts[s].loc[b, 'reading'] == r]
    said = lambda r: '; '.join(f"than {label(b)} on {panels(where(b, r))}" for b in BASELINES if where(b, r)) or 'than no baseline'
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
    lines += ['', "The paper's Figure 1 claims, each by its rule on the means and by the paired rule (`report.claims`; "
                  "yes = reproduced):", '', claims_at_a_glance(t)]
    return '\n'.join(lines)


# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.report`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('report')
