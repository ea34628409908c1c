# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Does the verdict hold?
#
# > The paper's open choices tested one at a time: the verdict on "AMG beats all baselines" by the mean, the median and paired per seed, for each variant, from the results store.

# %% [markdown]
# At the paper's protocol, AMG does not beat every baseline on any panel of Figure 1, by the means or
# paired per seed ([04_figure1](04_figure1.ipynb)). Is that the method, or our reading of it? The paper
# leaves choices open that can move the verdict, and this chapter changes them one at a time, each a
# registered variant of the runner ([03b_runner](03b_runner.ipynb), `runner.VARIANTS`) that runs
# through the same results store, keyed apart:
#
# - **V1, meta-training as $g^T$ defines it** (`gT`). The paper: "This averaging operation is applied
#   after T steps as part of $g^T$". AMG and SMG start every unroll from the coordinate mean of the
#   previous one, but the shipped optimizers were meta-trained carrying the per-coordinate state from
#   window to window ([decisions](decisions.md), section 5), a regime the guards never run them in. The
#   `gT` optimizers end every meta-training window with the average and start the next from it
#   (`MetaTrainConfig.memory='mean'`, [02b_metatrain](02b_metatrain.ipynb)).
# - **V2, the step size** (`lr1`). Every method uses lambda_eta = 3, taken from LGL2O. On sigmoid
#   networks the loss's curvature against 2/lambda decides how often every candidate is worse than
#   staying; `lr1` sets lambda_eta = 1 for every method that uses it (SGD, LGL2O's SGD candidate, AMG's
#   fallback).
# - **V3, SMG's fallback** (`second_order`, `lr_theta0`). Eq. 5 is first-order by default: SMG's
#   fallback applies at eta a gradient taken ten learned steps away. `second_order` keeps the exact
#   gradient through the unroll; `lr_theta0` leaves theta out of the fallback.
#
# Each variant runs only the methods it changes; the others (SGD under V1, L2O under V2, the four
# baselines under V3) are the paper protocol's own seeds, read from the store.

# %%
#| default_exp robustness

# %%
#| export
import argparse, builtins, json, warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from fastprogress.fastprogress import progress_bar

from metaguard_nb.data import Sampler, checkout, load
from metaguard_nb.report import ALPHA, BASELINES, collect, label, markdown_table, monitor_losses, paired, paired_reading, panel_results, seed_losses, seed_split, significantly_lower
from metaguard_nb.guards import METHODS, GuardConfig, State, amg_candidates, get_method, init_state, step_batches
from metaguard_nb.lstm import Theta
from metaguard_nb.optimizees import batched_grad, batched_loss
from metaguard_nb.persist import atomic_write, save_atomic
from metaguard_nb.runner import PANELS, PROTOCOLS, RUN_SEED_OFFSET, figure_setting, make_problem, setting_checkpoint, variant as get_variant

# %%
from fastcore.test import test_close, test_eq, test_fail
from IPython.display import Markdown, display

# %% [markdown]
# ## The study
#
# What runs, as the grid runs it: `python -m metaguard_nb.grid --variant lr1 --settings c a --methods
# sgd lgl2o lgl2o_no_update amg` computes whatever seeds of V2 are missing, and so on for each row.
# A variant that moves a verdict, with all its seeds in, by the mean or paired per seed
# (`earns_follow_ups`), earns the follow-ups the plan names (V1: the other two panels, and SMG on all
# four; V2: lambda_eta = 0.3 and V1 with V2 on (c)). `lr1` moved it on (c) (`moved_words` below says
# where and by which reading), so `STUDY` holds V2's follow-ups: `lr0.3` (lambda_eta = 0.3 for every
# method) and `gT_lr1` (the `gT` optimizers at lambda_eta = 1), both on (c). With them the chapter
# reads the verdict on (c) as a function of lambda_eta, for both meta-trainings. `gT` moved it too, on
# (a) (a move in a cell with all 25 seeds in is final, whatever the other cells will say), so `STUDY`
# holds V1's follow-ups: `gT` on (b) and (d), and SMG with the `gT` optimizers on all four panels. A
# test in tests/test_paired.py holds `STUDY` to both rules. A variant runs on the panels its rows name,
# and the tables below read a panel, the paper's protocol included, once some variant has seeds in there
# (`panels_in`): (b) and (d) join (a) and (c) when V1's first seeds there are in.

# %%
#| export
PAPER = PROTOCOLS['paper']

@dataclass(frozen=True)
class Study:
    "One row of the study: a variant's methods on some panels, at a protocol's size."
    variant:str # a registered variant (runner.VARIANTS)
    settings:str # the panels
    methods:tuple # the methods the variant changes and the study runs
    seeds:int=PAPER.seeds # seeds 0..seeds-1
    steps:int=PAPER.steps

STUDY = (Study('lr1', 'ca', ('sgd', 'lgl2o', 'lgl2o_no_update', 'amg')),  # in the order they run (`plan`)
         Study('gT', 'ca', ('l2o', 'lgl2o', 'lgl2o_no_update', 'amg', 'safe_amg')),
         Study('second_order', 'c', ('smg',), seeds=10, steps=1000),
         Study('lr_theta0', 'c', ('smg',), seeds=10, steps=1000),
         # V2's follow-ups, planned because `lr1` moved the verdict on (c) (`moved_words`): lambda_eta = 0.3, and V1 with V2
         Study('lr0.3', 'c', ('sgd', 'lgl2o', 'lgl2o_no_update', 'amg')),
         Study('gT_lr1', 'c', ('sgd', 'l2o', 'lgl2o', 'lgl2o_no_update', 'amg')),  # no method reads another variant's seeds
         # V1's follow-ups, planned because `gT` moved the verdict on (a) (`moved_words`): the other two panels, and SMG on all four
         Study('gT', 'bd', ('l2o', 'lgl2o', 'lgl2o_no_update', 'amg', 'safe_amg')),
         Study('gT', 'abcd', ('smg',)),
         Study('backtrack', 'ca', ('amg',)))  # beyond the paper (issue: a guard that cannot freeze)

def planned_panels(variant:str, # a registered variant's name
                   study=STUDY, # the planned runs (`STUDY`)
                  )->str:
    "The panels `variant` runs on in the study, one letter each (for the paper protocol, every panel a variant runs on: each is read against it)."
    if variant == 'paper': return ''.join(sorted(set(''.join(st.settings for st in study))))
    return ''.join(dict.fromkeys(''.join(st.settings for st in study if st.variant == variant)))

def status(study=STUDY, # the planned runs (`STUDY`)
           store=None, # root folder of the results store (default: outputs/results of this checkout)
          )->pd.DataFrame:
    "Seed-runs in the store against seed-runs planned, per row of the study and panel."
    rows = []
    for st in study:
        for s in st.settings:
            _, got, _ = panel_results(s, dict(seeds=list(range(st.seeds)), steps=st.steps, eval_every=PAPER.eval_every), store, variant=st.variant)
            rows.append(dict(variant=st.variant, setting=s, methods=st.methods, planned=len(st.methods)*st.seeds,
                             done=sum(len(got[m]['seeds']) for m in st.methods if m in got)))
    return pd.DataFrame(rows)


# %% [markdown]
# ## The verdict, three ways
#
# For a variant and a panel, "AMG beats all baselines" at a step is read three ways: by the mean (AMG's
# mean below every baseline's, the paper's reading of its figure), by the median (AMG's median seed
# below every baseline's), and paired per seed (AMG lower than each baseline by a two-sided Wilcoxon
# signed-rank test at alpha = 0.05, `report.significantly_lower`). Every statistic is over the seeds
# that AMG and all four baselines have in the store, and the table says how many.

# %%
#| export
def budget_losses(r:dict, # a runner-like result: seeds, evals [S, K, 6] (column 3: optimizee gradient evaluations so far)
                  budget:float, # optimizee gradient evaluations
                 )->tuple:
    "The compute-fair view of a result: ({seed: monitor loss at its last evaluation within `budget`}, {seed: that evaluation's step})."
    mon, steps = monitor_losses(r)
    k = np.maximum((r['evals'][..., 3].double().numpy() <= budget).sum(1) - 1, 0)
    seeds = [int(s) for s in r['seeds']]
    return dict(zip(seeds, mon[np.arange(len(k)), k].tolist())), dict(zip(seeds, np.array(steps)[k].tolist()))

def beats_all(got:dict, # method -> per-seed results of one panel (`report.panel_results`)
              step:int, # the step compared
              method:str='amg', # the guarded method
              fair:bool=False, # compute-fair: every method at SGD's budget of optimizee gradient evaluations at `step`
             )->dict|None:
    "Does `method` beat all four baselines at `step`, by the mean, the median and paired per seed? None until it and all four are in."
    if any(m not in got for m in (method, *BASELINES)): return None
    if fair:  # SGD spends one gradient evaluation a step: its count at `step` is the budget
        budget = float(got['sgd']['evals'][:, int(np.abs(np.array(monitor_losses(got['sgd'])[1]) - step).argmin()), 3].double().mean())
        losses = lambda m: budget_losses(got[m], budget)[0]
        a, at_step = budget_losses(got[method], budget)
    else: losses = lambda m: seed_losses(got[m], step); a = losses(method)
    seeds = sorted(set(a).intersection(*(set(got[b]['seeds']) for b in BASELINES)))
    a = {k: a[k] for k in seeds}
    base = {b: {k: v for k, v in losses(b).items() if k in a} for b in BASELINES}
    ps = {b: paired(a, base[b]) for b in BASELINES}
    return dict(n=len(seeds), mean=all(p['mean_a'] < p['mean_b'] for p in ps.values()),
                median=all(p['median_a'] < p['median_b'] for p in ps.values()),
                paired=all(significantly_lower(p) for p in ps.values()),
                lower_than=[label(b) for b, p in ps.items() if significantly_lower(p)],
                **(dict(budget=budget, method_step=float(np.median([at_step[k] for k in seeds]))) if fair else {}))

READ = ('paper', 'lr1', 'lr0.3', 'gT', 'gT_lr1', 'backtrack')  # the variants the chapter and the README read

def panels_in(st:pd.DataFrame, # `status`
              variants=READ, # variants read
             )->str:
    "The panels the tables read, one letter each, in order: those where a variant read other than the paper's has seed-runs in the store (before any is in, every panel one is planned on)."
    read = st[st['variant'].isin([v for v in variants if v != 'paper'])]
    return ''.join(sorted(set(read[read['done'] > 0]['setting']) or set(read['setting'])))

def read_panels(variants=READ, # variants to read
                settings=''.join(PANELS), # panels, one letter each (a panel a variant is not planned on is not read)
                store=None, # root folder of the results store (default: outputs/results of this checkout)
                seeds=PAPER.seeds, # seeds of the protocol
                steps=PAPER.steps, # the runs' length
               )->list:
    "[(variant, panel, its results read from the store)] for every variant and panel it is planned on (`planned_panels`): read once, for `verdict_table` and `frozen_table` both."
    return [(v, s, panel_results(s, dict(seeds=list(range(seeds)), steps=steps, eval_every=PAPER.eval_every), store, variant=v)[1])
            for v in variants for s in settings if s in planned_panels(v)]

def verdict_table(variants=READ, # variants to read
                  settings=''.join(PANELS), # panels, one letter each (a panel a variant is not planned on is not read)
                  steps=(PAPER.steps//2, PAPER.steps), # steps compared
                  store=None, # root folder of the results store (default: outputs/results of this checkout)
                  seeds=PAPER.seeds, # seeds of the protocol
                  panels=None, # the results already read (`read_panels`, runs at least max(steps) long), else read here
                 )->pd.DataFrame:
    "Variant x panel x step: AMG against every baseline by the mean, the median and paired per seed, with n seeds."
    rows = []
    for v, s, got in panels or read_panels(variants, settings, store, seeds, max(steps)):
        for k in steps:
            b = beats_all(got, k)
            rows.append(dict(variant=v, setting=s, step=k, **(b or dict(n=0, mean=None, median=None, paired=None, lower_than=[]))))
    return pd.DataFrame(rows)

def yes_no(v, # a reading: True, False, or None where nothing was read
           n:int|None=None, # the seeds it was read on (0: none)
          )->str:
    "A reading in a word: 'yes', 'no', or '-' where there is nothing to read (None, or n = 0)."
    return '-' if v is None or n == 0 else 'yes' if v else 'no'

def verdict_cell(r, # a row of `verdict_table`
                )->str:
    "A cell of the verdict in the README's form: 'mean / median / paired (n=...)'."
    return f"{yes_no(r.mean, r.n)} / {yes_no(r.median, r.n)} / {yes_no(r.paired, r.n)} (n={r.n})"

def frozen_table(variants=READ, # variants to read
                 settings=''.join(PANELS), # panels, one letter each (a panel a variant is not planned on is not read)
                 store=None, # root folder of the results store (default: outputs/results of this checkout)
                 seeds=PAPER.seeds, # seeds of the protocol
                 panels=None, # the results already read (`read_panels`), else read here
                )->pd.DataFrame:
    "Variant x panel x guarded method the variant changes, with seeds in: how many seeds did not move over the last tenth of the run, and how many of those chose 'stay' throughout it (`report.seed_split`)."
    rows = [dict(variant=v, setting=s, method=r.method, n=r.n, frozen=r.unchanged, stay_throughout=r.stayed)
            for v, s, got in panels or read_panels(variants, settings, store, seeds) for r in seed_split(got).itertuples()
            if r.method not in get_variant(v).unchanged]  # a method the variant leaves as it is: its paper row
    return pd.DataFrame(rows, columns=['variant', 'setting', 'method', 'n', 'frozen', 'stay_throughout'])

def method_grid(t:pd.DataFrame, # rows with columns variant, setting, method
                cells:list, # one markdown cell per row of `t`
               )->str:
    "A markdown table of `cells`: a row per variant and panel (in `t`'s order), a column per method (in the registry's order); blank where `t` has no row."
    d = t.assign(row=[f"`{v}` ({s})" for v, s in zip(t['variant'], t['setting'])], cell=cells)
    w = d.pivot(index='row', columns='method', values='cell')
    w = w.reindex(index=list(dict.fromkeys(d['row'])), columns=[m for m in METHODS if m in w.columns]).fillna('')
    return markdown_table(w.rename(columns=label).rename_axis('variant (panel)').rename_axis(None, axis=1))

def frozen_words(f:pd.DataFrame, # `frozen_table`
                )->str:
    "The frozen seeds of every guarded method, variant and panel: a sentence and a table."
    stay = lambda r: '' if r.stay_throughout is None or pd.isna(r.stay_throughout) else f" ({int(r.stay_throughout)} on 'stay')"
    return (f"Seeds frozen at step {PAPER.steps:,} (the same monitor loss over the last tenth of the run) of the seeds in, and how many of "
            "them chose 'stay' at every step of it (blank: a method the variant leaves as it is, read from the paper's row):\n\n"
            + method_grid(f, [f"{r.frozen}/{r.n}{stay(r)}" for r in f.itertuples()]))


# %% [markdown]
# On toy seeds: AMG ends lower than every baseline on 15 of 16 seeds, and far higher on one, which
# lifts its mean above theirs: the median and the paired test say AMG, the mean says the baselines.

# %%
import torch
def _toy(rows):  # a runner-like result: monitor loss at steps 0, 10, 20
    return dict(seeds=list(range(len(rows))), eval_steps=torch.tensor([0, 10, 20]),
                evals=torch.tensor(rows, dtype=torch.float64)[..., None].expand(-1, -1, 6))
low = [[2.3, 1.0, 0.5 + 0.01*k] for k in range(16)]
toy = {'amg': _toy(low[:-1] + [[2.3, 1.0, 9.0]]), **{b: _toy([[2.3, 1.0, 0.7 + 0.02*k] for k in range(16)]) for b in BASELINES}}
v = beats_all(toy, 20)
test_eq((v['n'], v['mean'], v['median'], v['paired']), (16, False, True, True))
test_eq(beats_all({'amg': toy['amg']}, 20), None)


# %% [markdown]
# The compute-fair reading puts every method at SGD's budget of optimizee gradient evaluations: AMG
# spends several per step (its candidates and its fallback's unroll), the baselines one. On the toy,
# AMG spends five per step, so at SGD's 20 it has reached only step 0 and loses to every baseline:

# %%
def _spent(r, per_step):  # the toy result with `per_step` gradient evaluations per step in column 3
    ev = r['evals'].clone(); ev[..., 3] = r['eval_steps'].double()*per_step
    return {**r, 'evals': ev}
fair_toy = {m: _spent(r, 5 if m == 'amg' else 1) for m, r in toy.items()}
v = beats_all(fair_toy, 20, fair=True)
test_eq((v['n'], v['budget'], v['method_step'], v['mean'], v['paired'], v['lower_than']), (16, 20.0, 0.0, False, False, []))
test_eq(budget_losses(fair_toy['amg'], 50)[1][0], 10)  # 50 evaluations: step 10, the last evaluation within them

# %% [markdown]
# ## What the store holds
#
# The study's seed-runs in the store against those planned (the grid commits finished shards as they
# come; a row short of its plan is read on the seeds that are in):

# %%
study_status = status()  # once, for this table and `plan` below
study_status


# %% [markdown]
# What is left, as the commands that compute it (each computes only the seeds that are missing; add
# `--workers`, `--threads` or `--scheduler` for your machine or cluster, [03d_grid](03d_grid.ipynb)):

# %%
#| export
def plan(study=STUDY, # the planned runs (`STUDY`)
         store=None, # root folder of the results store (default: outputs/results of this checkout)
         st:pd.DataFrame|None=None, # `status(study, store)` already computed, else computed here
        )->list:
    "The grid commands that compute the study's missing seed-runs, one per row of the study with a panel short of its plan, in the study's order."
    st, cmds = (status(study, store) if st is None else st).itertuples(), []  # a row per study row and panel, in the study's order
    for row in study:
        short = [r.setting for r in [next(st) for _ in row.settings] if r.done < r.planned]
        if short: cmds.append(f"python -m metaguard_nb.grid --variant {row.variant} --settings {' '.join(short)} --methods "
                              f"{' '.join(row.methods)} --seeds {row.seeds}" + (f" --steps {row.steps}" if row.steps != PAPER.steps else ''))
    return cmds


# %%
import tempfile
with tempfile.TemporaryDirectory() as _empty:  # a store with nothing in: every row is missing, in the study's order
    test_eq(plan((Study('lr1', 'ca', ('sgd', 'amg')), Study('second_order', 'c', ('smg',), seeds=10, steps=1000)), _empty),
            ['python -m metaguard_nb.grid --variant lr1 --settings c a --methods sgd amg --seeds 25',
             'python -m metaguard_nb.grid --variant second_order --settings c --methods smg --seeds 10 --steps 1000'])
left = plan(st=study_status)
test_eq(any('--variant lr1 ' in c for c in left), study_status.query("variant == 'lr1'").eval('done < planned').any())  # a complete row: no command

# %%
print('\n'.join(left) or 'nothing left: every planned seed-run is in the store')

# %% [markdown]
# And the verdict, variant by variant, on every panel where a variant has seeds in (`panels_in`), at
# steps 1,000 and 2,000 (in words at the end of the chapter):

# %%
panels = read_panels(settings=panels_in(study_status))  # once, for every table below: the panels with a variant's seeds in
verdicts = verdict_table(panels=panels)
verdicts

# %% [markdown]
# Frozen seeds, the trap's mark, for every guarded method, variant and panel with seeds in: how many
# seeds ended with the same monitor-set loss over the last tenth of the run, and how many of those chose
# 'stay' at every step of it:

# %%
frozen = frozen_table(panels=panels)
frozen


# %% [markdown]
# Which candidate wins. V1 rests on a premise: the shipped optimizers, meta-trained carrying the
# per-coordinate state, are run inside AMG from g^T's coordinate mean, a regime they never saw, so
# AMG's learned candidate rarely wins. Read from the branch records, for every method with more than one
# candidate, variant and panel: the share of all steps (pooled over the seeds in) on which each
# candidate won, and the median seed's share of learned steps. If `gT` repairs the regime, AMG's learned
# share rises under it.

# %%
#| export
def branch_table(variants=READ, # variants to read
                 settings=''.join(PANELS), # panels, one letter each (a panel a variant is not planned on is not read)
                 store=None, # root folder of the results store (default: outputs/results of this checkout)
                 seeds=PAPER.seeds, # seeds of the protocol
                 panels=None, # the results already read (`read_panels`), else read here
                )->pd.DataFrame:
    "Variant x panel x method with more than one candidate that the variant changes, with seeds in: each candidate's share of all steps, pooled over seeds, and the median seed's learned share."
    names = list(dict.fromkeys(b for m in METHODS.values() if len(m.branches) > 1 for b in m.branches))  # every registered choice
    rows = []
    for v, s, got in panels or read_panels(variants, settings, store, seeds):
        for m, r in got.items():
            own = get_method(m).branches
            if len(own) < 2 or m in get_variant(v).unchanged or 'record' not in r: continue
            b = r['record'][..., 0].numpy()  # [S, steps]: the index of the winning candidate among `own`
            rows.append(dict(variant=v, setting=s, method=m, n=len(b), **{c: float((b == own.index(c)).mean()) if c in own else np.nan for c in names},
                             learned_median=float(np.median((b == own.index('learned')).mean(1)))))
    return pd.DataFrame(rows, columns=['variant', 'setting', 'method', 'n', *names, 'learned_median'])

def branch_words(t:pd.DataFrame, # `branch_table`
                 variant:str='gT', # the variant compared with the paper's protocol
                 method:str='amg', # the method read
                )->str:
    "How often `method`'s learned candidate wins under `variant` against the paper's protocol, panel by panel, in one sentence."
    row = lambda v, s: t[(t['variant'] == v) & (t['setting'] == s) & (t['method'] == method)]
    parts = [f"({s}) {m.iloc[0]['learned']:.0%} of steps, the median seed {m.iloc[0]['learned_median']:.0%} (n={m.iloc[0]['n']}), "
             f"against {p.iloc[0]['learned']:.0%} and {p.iloc[0]['learned_median']:.0%} with the paper's optimizers (n={p.iloc[0]['n']})"
             for s in dict.fromkeys(t['setting']) if len(m := row(variant, s)) and len(p := row('paper', s))]
    return (f"{label(method)}'s learned candidate wins under `{variant}`: " + '; '.join(parts) + '.') if parts else ''


# %%
_r = lambda rows: dict(record=torch.tensor(rows)[..., None].expand(-1, -1, 3))  # branch indices [S, steps] as a step record
_bt = branch_table(panels=[('paper', 'c', {'amg': _r([[3, 3, 0, 1], [3, 3, 3, 3]]), 'lgl2o': _r([[0, 0, 0, 1], [0, 1, 0, 0]]), 'sgd': _r([[0]*4]*2)}),
                           ('gT', 'c', {'amg': _r([[0, 0, 0, 3], [0, 2, 3, 3], [0, 0, 1, 3]])})]).set_index(['variant', 'method'])
test_eq(_bt.loc[('paper', 'amg'), ['n', 'learned', 'fallback', 'stay', 'learned_median']].tolist(), [2, 1/8, 1/8, 6/8, 1/8])
test_eq(np.isnan(_bt.loc[('paper', 'amg'), 'sgd']) and np.isnan(_bt.loc[('paper', 'lgl2o'), 'stay']), True)  # a candidate the method lacks
test_eq(_bt.loc[('paper', 'lgl2o'), ['learned', 'sgd']].tolist(), [6/8, 2/8])
test_eq(('paper', 'sgd') in _bt.index, False)  # one candidate: nothing to choose
test_eq(branch_words(_bt.reset_index()), "AMG's learned candidate wins under `gT`: (c) 50% of steps, the median seed 50% (n=3), "
        "against 12% and 12% with the paper's optimizers (n=2).")

# %%
branches = branch_table(panels=panels)
display(branches.round(3))
display(Markdown(branch_words(branches)))


# %% [markdown]
# A variant changes the baselines too, not only AMG: the `gT` optimizers drive L2O and LGL2O, and
# `lr1` changes SGD and LGL2O's SGD candidate. So the verdict can move because AMG moved or because a
# baseline did. Each method a variant changes, against the same seeds of the paper's protocol at step
# 2,000 (mean, median, and paired: in how many seeds the variant ends lower, and the Wilcoxon test):

# %%
#| export
def paired_cells(p:dict, # a paired comparison (`paired`)
                 other:str, # the prefix of the other side's mean and median columns, e.g. 'paper'
                )->dict:
    "The columns a table keeps of a paired comparison: n, both means and medians, the seeds lower, the Wilcoxon p and the reading."
    return {'n': p['n'], 'mean': p['mean_a'], f'{other}_mean': p['mean_b'], 'median': p['median_a'], f'{other}_median': p['median_b'],
            'lower': p['below'], 'wilcoxon_p': p['wilcoxon_p'], 'reading': paired_reading(p)}

def shift_table(variants=READ, # variants to read
                settings=''.join(PANELS), # panels, one letter each (a panel a variant is not planned on is not read)
                store=None, # root folder of the results store (default: outputs/results of this checkout)
                seeds=PAPER.seeds, # seeds of the protocol
                panels=None, # the results already read (`read_panels`), else read here
                step:int=PAPER.steps, # the step compared
               )->pd.DataFrame:
    "Variant x panel x method the variant changes, with seeds in: its monitor loss at `step` against the paper protocol's on the same seeds."
    panels = panels or read_panels(variants, settings, store, seeds)
    paper = {s: got for v, s, got in panels if v == 'paper'}
    rows = []
    for v, s, got in panels:
        for m, r in got.items():
            if v == 'paper' or m in get_variant(v).unchanged or m not in paper.get(s, {}): continue
            rows.append(dict(variant=v, setting=s, method=m, **paired_cells(paired(seed_losses(r, step), seed_losses(paper[s][m], step)), 'paper')))
    return pd.DataFrame(rows, columns=['variant', 'setting', 'method', 'n', 'mean', 'paper_mean', 'median', 'paper_median', 'lower',
                                       'wilcoxon_p', 'reading'])

def shift_words(t:pd.DataFrame, # `shift_table`
               )->str:
    "What each variant does to the methods it changes: a sentence and a table."
    if not len(t): return ''
    return (f"Against the same seeds of the paper's protocol at step {PAPER.steps:,}, each method a variant changes: its mean against the "
            "paper's, the paired reading, and the seeds where it ends lower, of n, with the Wilcoxon p (blank: a method the variant "
            "leaves as it is):\n\n"
            + method_grid(t, [f"{r.mean:.3f} vs {r.paper_mean:.3f}: {r.reading} ({r.lower}/{r.n}, p = {r.wilcoxon_p:.2g})" for r in t.itertuples()]))


# %%
shift = shift_table(panels=panels)
shift.round(4)


# %% [markdown]
# ## The verdict as a function of lambda_eta
#
# `lr1` moved the verdict on (c), and its follow-ups put each meta-training at more than one step
# size: the shipped optimizers (meta-trained carrying the state from window to window) at lambda_eta =
# 0.3, 1 and 3 (`lr0.3`, `lr1`, the paper's), the `gT` optimizers at 1 and 3 (`gT_lr1`, `gT`). A
# variant is such a point when its record changes lambda_eta, the optimizers, or both, and nothing
# else:

# %%
#| export
def step_size_point(v:str, # a registered variant's name
                   )->tuple|None:
    "(its optimizers, its lambda_eta) for a variant that changes at most these two, else None: a point of `step_size_table`."
    var = get_variant(v)
    if set(dict(var.guard)) - {'lr_eta'}: return None
    return var.checkpoints or 'shipped', var.guard_config().lr_eta


# %%
test_eq([step_size_point(v) for v in ('paper', 'lr1', 'lr0.3', 'gT', 'gT_lr1')],
        [('shipped', 3.0), ('shipped', 1.0), ('shipped', 0.3), ('gT', 3.0), ('gT', 1.0)])
test_eq([step_size_point(v) for v in ('backtrack', 'second_order', 'lr_theta0')], [None]*3)


# %% [markdown]
# At each point, every method's monitor loss at a step over the seeds it has in, and the verdict by
# optimizers and lambda_eta, in the README's form (mean / median / paired, n seeds that AMG and all four
# baselines have in):

# %%
#| export
def _points(variants):  # the variants among `variants` that are step-size points: shipped optimizers first, lambda_eta ascending
    pts = {v: step_size_point(v) for v in dict.fromkeys(variants)}
    return sorted((v for v in pts if pts[v]), key=lambda v: (pts[v][0] != 'shipped', pts[v]))

def step_size_table(panels:list, # the results read (`read_panels`)
                    setting:str='c', # the panel
                    step:int=PAPER.steps, # the step read
                   )->pd.DataFrame:
    "Optimizers x lambda_eta x method on `setting`: the monitor loss at `step` over the seeds in (n, mean, median, quartiles)."
    got = {v: g for v, s, g in panels if s == setting}
    rows = []
    for v in _points(got):
        o, lr = step_size_point(v)
        for m in (*BASELINES, 'amg'):
            x = np.array(list(seed_losses(got[v][m], step).values()) if m in got[v] else [])
            q = np.quantile(x, [0.25, 0.5, 0.75]) if len(x) else [np.nan]*3
            rows.append(dict(optimizers=o, lr_eta=lr, variant=v, method=m, step=step, n=len(x),
                             mean=x.mean() if len(x) else np.nan, median=q[1], q25=q[0], q75=q[2]))
    return pd.DataFrame(rows, columns=['optimizers', 'lr_eta', 'variant', 'method', 'step', 'n', 'mean', 'median', 'q25', 'q75'])

def step_size_verdicts(t:pd.DataFrame, # `verdict_table`
                       setting:str='c', # the panel
                      )->pd.DataFrame:
    "The verdict on `setting` by optimizers and lambda_eta (rows) and step (columns), each cell as `verdict_cell` writes it."
    d = t[t['setting'] == setting]
    rows = [dict(zip(('optimizers', 'lr_eta'), step_size_point(v)), **{f'step {r.step:,}': verdict_cell(r) for r in d[d['variant'] == v].itertuples()})
            for v in _points(d['variant'])]
    return pd.DataFrame(rows).set_index(['optimizers', 'lr_eta'])

def step_size_words(t:pd.DataFrame, # `step_size_table`
                    v:pd.DataFrame, # `verdict_table`
                    setting:str='c', # the panel
                   )->str:
    "The verdict on `setting` as a function of lambda_eta, in words: where AMG beats every baseline paired per seed, which points have no seeds in yet, and how each method's median moves with the step size."
    name = lambda pt: f"lambda_eta = {pt[1]:g} ({pt[0]} optimizers)"
    d = v[v['setting'] == setting]
    pts = [(pt, r) for r in d.itertuples() if (pt := step_size_point(r.variant))]
    where = lambda k, col: ', '.join(name(pt) for pt, r in pts if r.step == k and r.n > 0 and getattr(r, col)) or 'none of them'
    steps = sorted(d['step'].unique())
    out = [f"On ({setting}), of the step-size points with seeds in, AMG beats every baseline paired per seed at "
           + '; '.join(f"step {k:,}: {where(k, 'paired')}" for k in steps)
           + ' (by the mean at ' + '; '.join(f"step {k:,}: {where(k, 'mean')}" for k in steps) + ').']
    if (todo := list(dict.fromkeys(name(pt) for pt, r in pts if r.n == 0))): out.append(f"Not read yet (no seeds in): {', '.join(todo)}.")
    moves = []
    for o, g in t[t['n'] > 0].groupby('optimizers', sort=False):
        for m, h in g.groupby('method', sort=False):
            if len(h) > 1 and h['median'].nunique() > 1:
                moves.append(f"{label(m)} " + ', '.join(f"{r.median:.3f} at {r.lr_eta:g}" for r in h.itertuples()) + f" ({o})")
    if moves: out.append(f"Each method's median at step {int(t['step'].iloc[0]):,} by lambda_eta, where it moves: " + '; '.join(moves) + '.')
    return ' '.join(out)


# %% [markdown]
# On toy seeds, with `_toy` from above (the baselines of the first toy, used again for V3 below):
# three points of the two meta-trainings, and `backtrack`, which is not one of them:

# %%
_base = {b: toy[b] for b in BASELINES}  # the first toy's baselines
_pts = [(v, 'c', {**_base, 'amg': _toy([[2.3, 1.0, e + 0.015*k] for k in range(16)])})
        for v, e in (('lr1', 0.5), ('paper', 0.9), ('gT', 0.8), ('backtrack', 0.4))]
_sz = step_size_table(_pts, step=20)
test_eq(list(dict.fromkeys(zip(_sz['optimizers'], _sz['lr_eta']))), [('shipped', 1.0), ('shipped', 3.0), ('gT', 3.0)])
test_eq(_sz.query("variant == 'lr1' and method == 'amg'")['n'].item(), 16)
test_close(_sz.query("variant == 'lr1' and method == 'amg'")['median'].item(), 0.5 + 0.015*7.5)
test_eq(_sz.query("variant == 'paper' and method == 'sgd'")['q75'].item(), np.quantile([0.7 + 0.02*k for k in range(16)], 0.75))
_sv = step_size_verdicts(verdict_table(panels=_pts, steps=(10, 20)))
test_eq(_sv.loc[('shipped', 1.0), 'step 20'], 'yes / yes / yes (n=16)')
test_eq(_sv.loc[('shipped', 3.0), 'step 20'], 'no / no / no (n=16)')
test_eq(list(_sv.index), [('shipped', 1.0), ('shipped', 3.0), ('gT', 3.0)])
_sw = step_size_words(_sz, verdict_table(panels=_pts, steps=(10, 20)))
test_eq(_sw.startswith("On (c), of the step-size points with seeds in, AMG beats every baseline paired per seed at step 10: none of them; "
                       "step 20: lambda_eta = 1 (shipped optimizers) (by the mean at step 10: none of them; step 20: lambda_eta = 1"), True)
test_eq("AMG 0.613 at 1, 1.013 at 3 (shipped)" in _sw, True)
test_eq('SGD' in _sw or 'Not read yet' in _sw, False)  # the baselines did not move; every point has seeds


# %% [markdown]
# The picture: each method's median monitor loss at step 2,000 (bars: the quartiles of its seeds)
# against lambda_eta, one panel per meta-training (dotted: the paper's lambda_eta). L2O takes no SGD
# step, so its line is flat; the others move with the step size, and the verdict moves with whichever
# moves more.

# %%
#| export
def step_size_figure(t:pd.DataFrame, # `step_size_table`
                     setting:str='c', # the panel, for the titles
                    ):
    "Median monitor loss (bars: quartiles) against lambda_eta, one line per method, one panel per meta-training (dotted: the paper's lambda_eta); points with no seeds in are left out."
    opts, have = list(dict.fromkeys(t['optimizers'])), t[t['n'] > 0]
    fig, axs = plt.subplots(1, len(opts), figsize=(5.5*len(opts), 3.8), sharey=True, squeeze=False)
    for ax, o in zip(axs[0], opts):
        ax.axvline(GuardConfig().lr_eta, color='0.8', ls=':', lw=1, zorder=0)
        for m in dict.fromkeys(t['method']):
            if not len(g := have[(have['optimizers'] == o) & (have['method'] == m)]): continue
            M = get_method(m)
            ax.errorbar(g['lr_eta'], g['median'], yerr=[g['median'] - g['q25'], g['q75'] - g['median']], color=M.color, marker='o',
                        capsize=3, lw=1.2, label=f"{M.label} (n={'/'.join(str(n) for n in g['n'])})")
        lrs = sorted(set(t[t['optimizers'] == o]['lr_eta']))
        ax.set(xscale='log', yscale='log', xlabel='lambda_eta', title=f"({setting}) at step {int(t['step'].iloc[0]):,}: {o} optimizers")
        ax.set_xticks(lrs, [f'{x:g}' for x in lrs]); ax.minorticks_off(); ax.legend(fontsize=7)
    if len(have):  # plain-number ticks on the log axis, within the data
        lo, hi = have['q25'].min(), have['q75'].max()
        ticks = [y for y in (0.05, 0.1, 0.2, 0.5, 1, 2, 5) if lo <= y <= hi]
        if len(ticks) > 1: axs[0, 0].set_yticks(ticks, [f'{y:g}' for y in ticks]); axs[0, 0].yaxis.set_minor_formatter(plt.NullFormatter())
    axs[0, 0].set_ylabel('monitor loss: median, quartiles')
    fig.tight_layout()
    return fig


# %%
plt.close(step_size_figure(_sz))  # the toy draws

# %% [markdown]
# From the store, on (c) (a point whose seeds have not run yet shows n = 0 and no marker):

# %%
sizes = step_size_table(panels)
step_size_figure(sizes);

# %%
display(Markdown(step_size_words(sizes, verdicts)))
step_size_verdicts(verdicts)

# %%
sizes.round(4)


# %% [markdown]
# ## The 'stay' trap, measured
#
# At the paper's protocol, some of AMG's seeds on panel (c) stop moving for good (the frozen table above
# counts them, row `paper` (c)): 'stay' wins every step from some step on, for hundreds of steps
# ([04_figure1](04_figure1.ipynb), "Seeds one by one").
# AMG keeps eta and theta when 'stay' wins, so the next step builds the same kinds of candidates from
# the same state on fresh batches; if every candidate is systematically worse than staying, the seed
# can never leave. Why would every candidate be worse? Three measurements at a frozen seed's eta:
#
# 1. **The margins.** On 50 fresh steps' batches from the frozen state, each candidate's score minus
#    staying's, as AMG's judge computes them on B_e: how often each candidate would have won, and by
#    how much it loses.
# 2. **The step size.** l(eta - lambda grad l(eta; B); B_e) - l(eta; B_e) for lambda in 0.1, 0.3, 1
#    and 3, on the same 50 batch pairs: does a plain gradient step of the paper's lambda_eta = 3 go
#    down from here at all, and would a shorter one?
# 3. **The curvature.** The largest eigenvalue of the Hessian of the loss on the seed's monitor set
#    (2,048 training examples) at eta, by power iteration on Hessian-vector products
#    (`torch.func.jvp` of `torch.func.grad`), against 2/lambda_eta: a gradient step is guaranteed to
#    descend only where the curvature along it is below 2/lambda.
#
# To get there, `trap` reruns a committed shard of seeds from step 0 with the same batches (the
# same call: the same seeds side by side, the compiled step), keeps each seed's state at the start of
# its latest run of stays, and compares its branches with the stored ones: another CPU, or another
# thread count, rounds differently, and a replayed seed can leave the stored trajectory (a seed that
# froze in the committed run need not freeze in the replay). So the replay goes on
# until some seed has chosen 'stay' 100 times in a row, and the measurement takes that seed, at the
# first step of its run of stays, and, for contrast, the shard's seed that the store has lowest at the
# end, at the replay's last step.

# %%
#| export
def last_stay_run(branch:np.ndarray, # one seed's branch per step
                  stay:int, # the index of 'stay' among the method's branches
                 )->int:
    "The first step (0-based) of the last unbroken run of `stay` at the end of a branch record; len(branch) if it does not end on 'stay'."
    k = len(branch)
    while k > 0 and branch[k - 1] == stay: k -= 1
    return k

def top_hessian_eigenvalue(problem, # the optimizee
                           eta:torch.Tensor, # one seed's parameters [m]
                           x, # inputs of the batch the loss is taken on
                           y, # its labels
                           iters:int=50, # power iterations
                           seed:int=0, # seed of the start vector's generator
                          )->float:
    "The largest-magnitude eigenvalue of the Hessian of l(.; x, y) at one seed's eta [m], by power iteration on Hessian-vector products."
    f = lambda e: problem.loss(e, x, y)
    hvp = lambda v: torch.func.jvp(torch.func.grad(f), (eta,), (v,))[1]
    v = torch.randn(eta.shape, generator=torch.Generator().manual_seed(seed), dtype=eta.dtype)
    v, lam = v/v.norm(), 0.0
    with warnings.catch_warnings():  # torch's forward AD loads its decompositions with torch.jit.script once, which warns
        warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated', category=FutureWarning)
        for _ in range(iters):
            hv = hvp(v)
            lam = float(v @ hv)
            v = hv/hv.norm()
    return lam

def one_seed(st, # a seed-batched state
             i:int, # the seed's row
            ):
    "Seed i of a seed-batched State, as a State of one seed."
    th = st.theta if st.theta.h.dim() == 2 else Theta({k: w[i:i + 1] for k, w in st.theta.W.items()}, st.theta.h[i:i + 1])
    return State(st.eta[i:i + 1], th, None if st.carry is None else tuple(c[i:i + 1] for c in st.carry), st.counters[i:i + 1])

def trap_margins(p, # the replay's Problem
                 st, # a State of one seed (`one_seed`)
                 setting:str, # a registered Figure 1 panel, e.g. 'c'
                 seed:int, # the panel and run seed it belongs to (for its data and its fresh streams)
                 method:str='amg', # a registered method's name (`guards.METHODS`), e.g. 'amg'
                 n:int=50, # fresh steps of batches
                 lrs=(0.1, 0.3, 1.0, 3.0), # gradient step sizes lambda to try
                 guard=None, # guard settings (None: the paper's, with the SGD candidate for safe AMG)
                 stream:str='trap', # the generator stream of the fresh batches
                )->dict:
    "From state `st`, `n` fresh steps' batches: each candidate's score minus staying's, and l(eta - lambda grad; B_e) - l(eta; B_e) for each lambda."
    guard = guard or GuardConfig(sgd_candidate=method == 'safe_amg')
    train = load(figure_setting(setting)[2])
    run_seed = [RUN_SEED_OFFSET + seed]  # the seed's own data, drawn from streams that no run draws from
    inner, evals = Sampler(train, run_seed, stream=stream), Sampler(train, run_seed, guard.eval_batch_size, stream=stream + '-eval')
    names, diffs, steps = get_method(method).branches, [], []
    for _ in range(n):
        b = step_batches(inner, evals, guard.T)
        c, _ = amg_candidates(guard, p.lstm_cfg, p.optimizee, st, b)
        L = torch.stack(c.losses, 1).detach()[0]
        diffs.append(L[:-1] - L[-1])
        g, _ = batched_grad(p.optimizee, st.eta, b.xs[:, 0], b.ys[:, 0])
        with torch.no_grad(): steps.append(torch.stack([batched_loss(p.optimizee, st.eta - lr*g, b.xe, b.ye)[0] - L[-1] for lr in lrs]))
    d, s = torch.stack(diffs).double(), torch.stack(steps).double()
    return dict(n=n, candidates={nm: dict(wins=int((d[:, i] < 0).sum()), mean=float(d[:, i].mean()), median=float(d[:, i].median()))
                                 for i, nm in enumerate(names[:-1])},
                steps={str(lr): dict(down=int((s[:, i] < 0).sum()), mean=float(s[:, i].mean())) for i, lr in enumerate(lrs)})


# %%
#| export
def robustness_file(name:str, # a file of the study's, e.g. 'trap.json'
                   )->Path:
    "Where the study keeps `name`: outputs/robustness of this checkout (else of the working directory)."
    return (checkout() or Path.cwd())/'outputs'/'robustness'/name

def trap(setting:str='c', # a registered Figure 1 panel, e.g. 'c'
         method:str='amg', # a registered method's name (`guards.METHODS`), e.g. 'amg'
         shard=(0, 1, 2, 3, 4), # the committed seeds replayed together
         n:int=50, # fresh steps of batches per measurement
         store=None, # root folder of the results store (default: outputs/results of this checkout)
         out:Path|None=None, # the json file (default: outputs/robustness/trap.json)
         max_steps:int=PAPER.steps, # replay at most this many steps
         min_stay:int=100, # 'stay' this many steps in a row counts as frozen
         save_every:int=50, # save the resume state every this many steps
        )->dict:
    "Replay a committed shard until a seed freezes (`min_stay` stays in a row), then measure the trap at the start of its stays; written to outputs/robustness/trap.json. Resumable."
    stay = get_method(method).branches.index('stay')
    stored = collect(setting, method, list(shard), PAPER.steps, device='cpu', store=store, compile=True)
    rec = {s: stored['record'][i, :, 0].numpy().astype(int) for i, s in enumerate(stored['seeds'])}
    out = Path(out) if out else robustness_file('trap.json')
    resume = out.with_name(out.stem + '.resume.pt')  # not committed: the replay's state, so a stopped replay goes on
    guard = GuardConfig(compile=True)
    p = make_problem(setting, [RUN_SEED_OFFSET + s for s in shard], 'cpu', setting_checkpoint(setting), guard.eval_batch_size)
    step, st, used = get_method(method).step, init_state(method, p.eta0, p.theta), get_method(method).inner_batches(guard.T)
    k, starts, hist = 0, {}, []  # per seed: (step, state) at the first step of its current run of stays
    if resume.exists():
        rs = torch.load(resume, weights_only=False)
        k, st, starts, hist = rs['k'], rs['state'], rs['starts'], rs['hist']
        p.inner.set_state(rs['inner']); p.evals.set_state(rs['evals'])
    run_of = lambda i: len(hist) - last_stay_run(torch.stack(hist, 1)[i].numpy(), stay) if hist else 0
    bar = progress_bar(range(k, max_steps))
    for k in bar:
        st, r = step(guard, p.lstm_cfg, p.optimizee, st, step_batches(p.inner, p.evals, guard.T, used))
        hist.append(r.branch.clone())
        for i, s in enumerate(shard):
            if int(r.branch[i]) == stay and (len(hist) == 1 or int(hist[-2][i]) != stay): starts[s] = (k, one_seed(st, i))
        if (k + 1) % save_every == 0:
            save_atomic(dict(k=k + 1, state=st, starts=starts, hist=hist, inner=p.inner.state(), evals=p.evals.state()), resume)
        if any(run_of(i) >= min_stay for i in range(len(shard))): break
    steps = len(hist)
    br = torch.stack(hist, 1).numpy()
    agree = {s: int(next((j for j in range(steps) if br[i, j] != rec[s][j]), steps)) for i, s in enumerate(shard)}
    frozen = [s for i, s in enumerate(shard) if run_of(i) >= min_stay]
    if not frozen: raise ValueError(f'no seed of {shard} froze ({min_stay} stays in a row) in {steps} replayed steps: replay longer (max_steps)')
    chosen = frozen[0]
    k0, st0 = starts[chosen]
    moving = min((s for s in shard if s not in frozen), key=lambda s: float(stored['evals'][stored['seeds'].index(s), -1, 0]), default=None)
    i_mov = list(shard).index(moving) if moving is not None else None
    mx, my = p.monitor
    def measure(state, i):
        return dict(**trap_margins(p, state, setting, shard[i], method, n),
                    top_eigenvalue=top_hessian_eigenvalue(p.optimizee, state.eta[0], mx[i], my[i]))
    res = dict(setting=setting, method=method, shard=list(shard), replayed_steps=steps, lr_eta=guard.lr_eta, two_over_lr=2/guard.lr_eta,
               stored_stay_from={str(s): int(last_stay_run(rec[s], stay)) for s in shard}, replay_agrees_until={str(s): agree[s] for s in shard},
               frozen_in_replay=[int(s) for s in frozen], seed=int(chosen), from_step=int(k0) + 1,
               frozen=measure(st0, list(shard).index(chosen)),
               moving=None if moving is None else dict(seed=int(moving), step=steps, **measure(one_seed(st, i_mov), i_mov)))
    with atomic_write(out) as tmp: tmp.write_text(json.dumps(res, indent=1))
    return res


# %% [markdown]
# The pieces on a toy scale (two seeds of (c), three steps, two fresh batch pairs): a branch record's
# last run of stays, one seed cut from a batch, and the measurements run. A quadratic's Hessian has
# a known top eigenvalue.

# %%
test_eq(last_stay_run(np.array([0, 3, 3, 1, 3, 3, 3]), 3), 4); test_eq(last_stay_run(np.array([3, 3, 1]), 3), 3)
test_eq(last_stay_run(np.array([3, 3]), 3), 0)
p_toy = make_problem('c', [RUN_SEED_OFFSET, RUN_SEED_OFFSET + 1], 'cpu', setting_checkpoint('c'))
st_toy = init_state('amg', p_toy.eta0, p_toy.theta)
for _ in range(3): st_toy, _ = get_method('amg').step(GuardConfig(), p_toy.lstm_cfg, p_toy.optimizee, st_toy, step_batches(p_toy.inner, p_toy.evals))
one = one_seed(st_toy, 1)
test_eq((one.eta.shape[0], one.theta.h.shape[0]), (1, 1)); test_eq(one.eta, st_toy.eta[1:])
m_toy = trap_margins(p_toy, one, 'c', 1, n=2)
test_eq(sorted(m_toy['candidates']), ['fallback', 'fallback_unrolled', 'learned']); test_eq(sorted(m_toy['steps']), ['0.1', '0.3', '1.0', '3.0'])
class Quadratic:  # l(e) = 0.5 sum_i c_i e_i^2: Hessian diag(c), top eigenvalue max c
    def loss(self, e, x, y): return 0.5*(torch.tensor([1., 4., 9.])*e**2).sum()
test_eq(round(top_hessian_eigenvalue(Quadratic(), torch.ones(3), None, None, iters=100), 4), 9.0)


# %% [markdown]
# The measurement itself (`python -m metaguard_nb.robustness trap`, some minutes on a CPU) is
# committed in `outputs/robustness/trap.json`; here it is read back:

# %%
#| export
def trap_lines(res:dict, # the trap measurement (`robustness.trap`'s dict, as in outputs/robustness/trap.json)
              )->str:
    "The trap measurement in words and tables (markdown)."
    mov = res['moving']
    lines = [f"Panel ({res['setting']}), {label(res['method'])}, seeds {res['shard']} replayed for {res['replayed_steps']} steps. "
             f"The stored records end on 'stay' from steps {res['stored_stay_from']} (by seed); the replay's branches agree "
             f"with the stored ones until steps {res['replay_agrees_until']}, and seeds {res['frozen_in_replay']} froze in the "
             f"replay too. Measured at seed {res['seed']}'s state when its stays began (after step {res['from_step']})"
             + (f", and at seed {mov['seed']}'s at the replay's end for contrast:" if mov else ':'), '',
             f"| | frozen seed {res['seed']} |" + (f" moving seed {mov['seed']} |" if mov else ''), '|---|---|' + ('---|' if mov else '')]
    cases = [res['frozen']] + ([res['moving']] if res['moving'] else [])
    n = res['frozen']['n']
    for nm in res['frozen']['candidates']:
        lines.append(f"| {nm}: beats staying in | " + ' | '.join(f"{c['candidates'][nm]['wins']} of {n} batch pairs (mean margin "
                                                                   f"{c['candidates'][nm]['mean']:+.4f})" for c in cases) + ' |')
    for lr in res['frozen']['steps']:
        lines.append(f"| eta - {lr} grad l: below l(eta) on B_e in | " + ' | '.join(
            f"{c['steps'][lr]['down']} of {n} (mean change {c['steps'][lr]['mean']:+.4f})" for c in cases) + ' |')
    lines.append(f"| top Hessian eigenvalue of l on the monitor set (2/lambda_eta = {res['two_over_lr']:.3f}) | "
                 + ' | '.join(f"{c['top_eigenvalue']:.3f}" for c in cases) + ' |')
    return '\n'.join(lines)


# %%
trap_file = robustness_file('trap.json')
trap_res = json.loads(trap_file.read_text()) if trap_file.exists() else None
display(Markdown(trap_lines(trap_res) if trap_res else '(not measured yet: `python -m metaguard_nb.robustness trap`)'))


# %% [markdown]
# What it says, read from the measurement:

# %%
#| export
def trap_words(res:dict, # the trap measurement (`robustness.trap`'s dict, as in outputs/robustness/trap.json)
              )->str:
    "The trap measurement's conclusion in words, every number read from it."
    fz, mv, n, lr = res['frozen'], res['moving'], res['frozen']['n'], res['lr_eta']
    wins = {k: v['wins'] for k, v in fz['candidates'].items()}
    best = min(fz['candidates'], key=lambda k: fz['candidates'][k]['mean'])
    down = {k: v['down'] for k, v in fz['steps'].items()}
    works = [k for k, v in down.items() if v > n//2]
    out = (f"On panel ({res['setting']}), where {label(res['method'])}'s seed {res['seed']} froze in a replay, no candidate beat staying "
           f"on any of {n} fresh batch pairs "
           f"({', '.join(f'{k} {v} times' for k, v in wins.items())}); the closest, the {best.replace('_', ' ')} candidate, lost by "
           f"{fz['candidates'][best]['mean']:.3g} on average. The largest eigenvalue of the loss's Hessian there is {fz['top_eigenvalue']:.3g}, "
           f"{fz['top_eigenvalue']/res['two_over_lr']:.0f} times 2/lambda_eta = {res['two_over_lr']:.3g}: a gradient step of lambda_eta = "
           f"{lr:g} overshoots along the sharpest direction, and it went down on B_e in {down[str(float(lr))]} of {n} pairs, "
           + (f"while a step of {', '.join(works)} went down in most of them" if works else "as did every shorter step tried")
           + '.')
    if mv: out += (f" At the moving seed {mv['seed']} the top eigenvalue is {mv['top_eigenvalue']:.3g}, "
                   f"{'below' if mv['top_eigenvalue'] < res['two_over_lr'] else 'above'} 2/lambda_eta, and its fallback beat staying "
                   f"{mv['candidates']['fallback']['wins']} times of {mv['n']}.")
    return out


# %%
if trap_res: display(Markdown(trap_words(trap_res)))

# %% [markdown]
# So the 'stay' trap is a step-size trap. AMG's only candidate that descends by construction, the
# fallback, steps with a fixed lambda_eta; where the loss's curvature along the gradient exceeds
# 2/lambda_eta, that step overshoots, the learned unroll (trained where the loss was smoother)
# overshoots too, and 'stay' wins. With eta and theta kept, the next step builds the same
# candidates from the same point, so 'stay' wins again, for good. Two remedies follow from it: a
# smaller lambda_eta for every method (the variant `lr1`), and, beyond the paper, a guard
# whose fallback shortens its step each time 'stay' wins (a backtracking line search on the
# fallback), which cannot stay frozen where a short enough gradient step descends.

# %% [markdown]
# The issue that asked for a guard that cannot freeze proposed two more remedies; the measurement
# weighs them. *Adapting while waiting* (`GuardConfig(adapt_waiting=True)`, [03_guards](03_guards.ipynb))
# moves theta when 'stay' wins: it changes the learned candidates, not the plain fallback, and on the
# steep quadratic it leaves seeds frozen where backtracking frees them. *A judge that knows its noise*
# would make safe AMG's SGD point the default, replaced only by a candidate better by more than k
# standard errors of the paired per-example differences on B_e:

# %%
if trap_res:
    sgd, n = trap_res['frozen']['steps'][str(float(trap_res['lr_eta']))], trap_res['frozen']['n']
    display(Markdown(
        f"at the frozen seed, the SGD point (a step of lambda_eta = {trap_res['lr_eta']:g}) rose above l(eta) on "
        f"{n - sgd['down']} of {n} batch pairs, by {sgd['mean']:.3g} on average. 'Stay' beats it systematically, not by noise, "
        "so a noise-aware judge would choose to stay there too: it does not reach this trap, and it is not built."))

# %% [markdown]
# ## SMG's fallback (V3)
#
# V3 changes SMG alone, at the smaller size the plan gives it: 10 seeds x 1,000 steps on (c).
# `second_order` takes Eq. 5's gradient through the ten learned steps of the unroll instead of the
# first-order one; `lr_theta0` leaves theta out of the fallback. Each is read at step 1,000 against
# the four baselines and against the paper's first-order SMG on the same seeds, paired per seed (the
# paper protocol's runs are 2,000 steps long; the store cuts them at 1,000). The paper's own row is
# the reference: where SMG stands at step 1,000 before anything changes.

# %%
#| export
V3 = ('second_order', 'lr_theta0')  # the variants that change SMG's fallback
PAPER_SMG = "the paper's SMG"  # how `smg_table` names the paper protocol's SMG as a comparison

def smg_table(variants=V3, # variants that change SMG
              setting:str='c', # the panel
              store=None, # root folder of the results store (default: outputs/results of this checkout)
              seeds:int=10, # seeds 0..seeds-1 (V3's size in `STUDY`)
              step:int=1000, # the step compared (V3's run length in `STUDY`)
              panels=None, # the results already read (`read_panels` of 'paper' and `variants` on `setting`), else read here
             )->pd.DataFrame:
    "SMG under the paper's protocol and each of `variants` at `step`: against each baseline, and a variant's against the paper's SMG, paired per seed on the seeds both ran (n = 0: no seeds in)."
    panels = panels or read_panels(('paper', *variants), setting, store, seeds, step)
    paper = next((got for v, s, got in panels if v == 'paper'), {})
    rows = []
    for v, s, got in panels:
        if 'smg' not in got: rows.append(dict(variant=v, setting=s, step=step, n=0)); continue
        a = seed_losses(got['smg'], step)
        against = {label(b): got[b] for b in BASELINES if b in got}
        if v != 'paper' and 'smg' in paper: against[PAPER_SMG] = paper['smg']
        for name, r in against.items():
            rows.append(dict(variant=v, setting=s, step=step, against=name, **paired_cells(paired(a, seed_losses(r, step)), 'against')))
    return pd.DataFrame(rows, columns=['variant', 'setting', 'step', 'against', 'n', 'mean', 'against_mean', 'median', 'against_median',
                                       'lower', 'wilcoxon_p', 'reading']).astype({'n': 'Int64', 'lower': 'Int64'})

def smg_words(t:pd.DataFrame, # `smg_table`
             )->str:
    "What V3 says about SMG, in plain words: each variant's SMG against the baselines and against the paper's SMG, and whether a change makes SMG lower than a baseline."
    if not len(t): return ''
    parts, moved, tested = [], [], []
    for v, g in t.groupby('variant', sort=False):
        name = "the paper's SMG (first-order Eq. 5)" if v == 'paper' else f"`{v}` ({get_variant(v).about.removeprefix('SMG and AMG: ')})"
        if not g['n'].max() > 0: parts.append(f"{name}: no seeds in yet"); continue
        base, own = g[g['against'] != PAPER_SMG], g[g['against'] == PAPER_SMG]
        txt = f"{name}, n={int(base['n'].max())}: mean {base['mean'].iloc[0]:.3f} (median {base['median'].iloc[0]:.3f})"
        if len(own):
            r = own.iloc[0]
            txt += f", against the paper's SMG on the same seeds {r['reading']} ({int(r['lower'])} of {int(r['n'])}, p = {r['wilcoxon_p']:.2g})"
        parts.append(txt + '; against ' + ', '.join(f"{r.against} {r.reading} ({int(r.lower)} of {int(r.n)})" for r in base.itertuples()))
        if v != 'paper':
            tested.append(f'`{v}`')
            if (low := list(base[base['reading'] == 'lower']['against'])): moved.append(f"`{v}` (lower than {', '.join(low)})")
    step, s = int(t['step'].iloc[0]), t['setting'].iloc[0]
    out = (f"**SMG's fallback (V3)** on ({s}) at step {step:,}, paired per seed (seeds where SMG ends lower, of n; the two-sided "
           f"Wilcoxon test at alpha = {ALPHA}): " + '; '.join(parts) + '.')
    if moved: out += f" So SMG ends lower than a baseline paired per seed under {', '.join(moved)}."
    elif tested: out += f" So no change tested ({', '.join(tested)}) makes SMG lower than any baseline paired per seed."
    return out


# %% [markdown]
# On toy seeds: the paper's SMG ends above every baseline, a variant's below every baseline and below
# the paper's SMG, and a variant without seeds says so:

# %%
test_eq({(st.seeds, st.steps) for st in STUDY if st.variant in V3}, {(10, 1000)})  # smg_table's defaults are V3's size
_smg = lambda end: _toy([[2.3, 1.0, end + 0.015*k] for k in range(16)])
_v3 = [('paper', 'c', {**_base, 'smg': _smg(0.9)}), ('second_order', 'c', {**_base, 'smg': _smg(0.5)}), ('lr_theta0', 'c', _base)]
_st = smg_table(panels=_v3, step=20)
test_eq(list(_st[_st['variant'] == 'paper']['reading']), ['higher']*4)
test_eq(list(_st[_st['variant'] == 'second_order']['against']), [label(b) for b in BASELINES] + [PAPER_SMG])
test_eq(list(_st[_st['variant'] == 'second_order']['reading']), ['lower']*5)
test_eq(_st[_st['variant'] == 'lr_theta0']['n'].tolist(), [0])
_w = smg_words(_st)
test_eq("`lr_theta0` (the fallback leaves theta as it is (lambda_theta = 0)): no seeds in yet" in _w, True)
test_eq(_w.endswith("So SMG ends lower than a baseline paired per seed under `second_order` (lower than "
                    + ', '.join(label(b) for b in BASELINES) + ")."), True)
test_eq(smg_words(_st[_st['variant'] != 'second_order']), smg_words(_st[_st['variant'] != 'second_order']).split(' So ')[0])

# %% [markdown]
# From the store: SMG at step 1,000 on (c), the paper's and each V3 variant's, against every baseline
# and against the paper's SMG (a variant without seeds in shows n = 0):

# %%
smg_panels = read_panels(('paper', *V3), 'c', seeds=10, steps=1000)  # V3's size in `STUDY`
smg = smg_table(panels=smg_panels)
display(Markdown(smg_words(smg)))
smg.round(4)

# %% [markdown]
# Where SMG's loss goes. A network that has learned nothing predicts the ten classes uniformly, at a
# loss of ln 10; a seed above it has lost everything it learned. For the paper's SMG and each
# V3 variant, over the seeds in, to step 1,000: the share of steps the fallback won; how many seeds end
# above ln 10, how many passed it at some evaluation after step 0, and the share of all evaluations
# above it; and, where the candidates' L^Adapt on B_e are stored (the paper protocol's SMG runs predate
# that field), the share of steps on which the fallback's score is above ln 10, and each candidate's
# median score.

# %%
#| export
UNIFORM = float(np.log(10))  # the loss of a uniform guess over ten classes: a network that has learned nothing

def smg_evidence(panels:list, # the results read (`read_panels`)
                 step:int=1000, # read up to this step (V3's run length in `STUDY`)
                )->pd.DataFrame:
    "SMG per variant and panel, to `step`: the fallback's share of steps, seeds above ln 10 at `step` and at any evaluation after step 0, the share of evaluations above it, and (where stored) the candidates' scores against ln 10."
    rows, own = [], get_method('smg').branches
    for v, s, got in panels:
        if 'smg' not in got: continue
        r = got['smg']
        mon, at = monitor_losses(r)
        at = np.array(at)
        end = np.array(list(seed_losses(r, step).values()))  # the one rule for a seed's loss at a step
        above = mon[:, (at > 0) & (at <= step)] > UNIFORM
        row = dict(variant=v, setting=s, step=step, n=len(end), fallback=float((r['record'][:, :step, 0].numpy() == own.index('fallback')).mean()),
                   above_at_step=int((end > UNIFORM).sum()), above_ever=int(above.any(1).sum()), above_share=float(above.mean()))
        if 'candidates' in r:
            c, names = r['candidates'][:, :step].double().numpy(), list(r['candidate_names'])
            f, l = c[..., names.index('fallback')], c[..., names.index('learned')]
            row.update(fallback_score_above=float((f > UNIFORM).mean()), fallback_score_median=float(np.median(f)),
                       learned_score_median=float(np.median(l)))
        rows.append(row)
    return pd.DataFrame(rows, columns=['variant', 'setting', 'step', 'n', 'fallback', 'above_at_step', 'above_ever', 'above_share', 'fallback_score_above',
                                       'fallback_score_median', 'learned_score_median'])

def smg_evidence_words(t:pd.DataFrame, # `smg_evidence`
                      )->str:
    "Where SMG's loss goes under each variant, in one sentence."
    def part(r):
        name = "the paper's SMG" if r.variant == 'paper' else f'`{r.variant}`'
        txt = (f"{name}, n={r.n}: the fallback wins {r.fallback:.0%} of steps; {r.above_at_step} of {r.n} seeds end above ln 10 "
               f"({r.above_ever} passed it at some evaluation; {r.above_share:.0%} of all evaluations are above it)")
        if not np.isnan(r.fallback_score_above):
            txt += (f"; the fallback's L^Adapt on B_e is above ln 10 on {r.fallback_score_above:.0%} of steps, median "
                    f"{r.fallback_score_median:.3g} against the learned candidate's {r.learned_score_median:.3g}")
        return txt
    if not len(t): return ''
    return (f"Where SMG's loss goes on ({t['setting'].iloc[0]}), to step {int(t['step'].iloc[0]):,} (ln 10 = {UNIFORM:.3f}, the loss of a uniform guess): "
            + '; '.join(part(r) for r in t.astype({'fallback_score_above': float}).itertuples()) + '.')


# %% [markdown]
# On toy seeds: a variant whose fallback's scores explode and whose seeds climb past ln 10, beside one
# without stored scores:

# %%
def _smg_run(rows, branches, scores=None):  # a runner-like SMG result: monitor loss at steps 0, 10, 20, a branch record, scores
    r = _toy(rows)
    r['record'] = torch.tensor(branches, dtype=torch.float32)[..., None].expand(-1, -1, 5)
    if scores is not None: r.update(candidates=torch.tensor(scores, dtype=torch.float32), candidate_names=['learned', 'fallback'])
    return r
_ev = smg_evidence([('paper', 'c', {'smg': _smg_run([[2.3, 1.0, 0.4], [2.3, 1.0, 0.5]], [[0, 1]*10 + [1, 1], [1]*22])}),
                    ('second_order', 'c', {'smg': _smg_run([[2.3, 1.0, 3.0], [2.3, 2.5, 2.0]], [[0]*20 + [1, 1]]*2,
                                                           [[[1.0, 50.0]]*22, [[0.5, 0.6]]*10 + [[3.0, 80.0]]*10 + [[0.1, 0.1]]*2])}),
                    ('lr_theta0', 'c', {})], step=20)
test_eq(_ev['variant'].tolist(), ['paper', 'second_order'])  # a variant without SMG seeds has no row
test_eq(_ev[['fallback', 'above_at_step', 'above_ever', 'above_share']].values.tolist(), [[0.75, 0, 0, 0.0], [0.0, 1, 2, 0.5]])  # steps after 20 are not read
test_eq(np.isnan(_ev['fallback_score_above'].iloc[0]), True)  # the paper's runs: no scores stored
test_eq(_ev.iloc[1][['fallback_score_above', 'fallback_score_median', 'learned_score_median']].tolist(), [0.75, 50.0, 1.0])
test_eq(_ev['step'].tolist(), [20, 20])
test_eq(smg_evidence_words(_ev), "Where SMG's loss goes on (c), to step 20 (ln 10 = 2.303, the loss of a uniform guess): the paper's SMG, n=2: "
        "the fallback wins 75% of steps; 0 of 2 seeds end above ln 10 (0 passed it at some evaluation; 0% of all evaluations are above it); "
        "`second_order`, n=2: the fallback wins 0% of steps; 1 of 2 seeds end above ln 10 (2 passed it at some evaluation; 50% of all "
        "evaluations are above it); the fallback's L^Adapt on B_e is above ln 10 on 75% of "
        "steps, median 50 against the learned candidate's 1.")

# %% [markdown]
# From the store:

# %%
smg_ev = smg_evidence(smg_panels)
display(Markdown(smg_evidence_words(smg_ev)))
smg_ev.round(3)


# %% [markdown]
# ## The summary the README shows

# %%
#| export
def verdict_words(t:pd.DataFrame, # `verdict_table`
                 ) -> str:
    "What the variants say about 'AMG beats all baselines', in plain words: by reading, where it holds and where it has not been tested yet."
    tested, untested = t[t['n'] > 0], t[t['n'] == 0]
    where = lambda col: [f"`{r.variant}` ({r.setting}) at step {r.step:,}" for r in tested.itertuples() if getattr(r, col)]
    part = lambda col, name: (f"by {name} on {', '.join(where(col))}" if where(col) else f"by {name} nowhere")
    out = [f"AMG beats every baseline {part('paired', 'the paired test')}; {part('mean', 'the mean')}; {part('median', 'the median')}"
           f" (of {len(tested)} variant, panel and step cells with seeds in)."]
    last = tested[tested['step'] == tested['step'].max()] if len(tested) else tested
    if len(last):  # where the paired rule fails, which baselines hold it up
        out.append(f"Paired per seed at step {int(last['step'].max()):,}, AMG is lower than " + '; '.join(
            f"{', '.join(r.lower_than) or 'no baseline'} on `{r.variant}` ({r.setting}, n={r.n})" for r in last.itertuples()) + '.')
    if len(untested):
        out.append(f"Not yet tested (no AMG seeds in with all four baselines): {', '.join(dict.fromkeys(f'`{r.variant}` ({r.setting})' for r in untested.itertuples()))}.")
    others = tested[tested['variant'] != 'paper']
    if len(others) and not others['paired'].any() and not others['mean'].any():
        out.append("So far no choice the paper leaves open turns its claim into a finding: where the variants have run, AMG beats "
                   "every baseline neither by the mean nor paired per seed.")
    return ' '.join(out)

READINGS = {'mean': 'the mean', 'median': 'the median', 'paired': 'the paired test'}  # the verdict's three readings, as the words name them

def moved_cells(t:pd.DataFrame, # `verdict_table`
               )->pd.DataFrame:
    "Where a variant with all its seeds in reads 'AMG beats every baseline' otherwise than the paper's protocol in the same panel and step: a row per variant, panel, step and reading that differs, with both answers."
    paper = {(r.setting, r.step): r for r in t[t['variant'] == 'paper'].itertuples()}
    rows = [dict(variant=r.variant, setting=r.setting, step=r.step, reading=c, says=bool(getattr(r, c)), paper_says=bool(getattr(p, c)))
            for r in t[(t['variant'] != 'paper') & (t['n'] == PAPER.seeds)].itertuples() if (p := paper.get((r.setting, r.step))) is not None
            for c in READINGS if bool(getattr(r, c)) != bool(getattr(p, c))]
    return pd.DataFrame(rows, columns=['variant', 'setting', 'step', 'reading', 'says', 'paper_says'])

def moved_words(t:pd.DataFrame, # `verdict_table`
               )->str:
    "Where a variant with all its seeds in reads 'AMG beats every baseline' otherwise than the paper's protocol in the same panel and step, and by which readings."
    moves = [f"`{v}` ({s}) at step {k:,} by " + ', '.join(f"{READINGS[r.reading]} ({yes_no(r.says)}; the paper's {yes_no(r.paper_says)})"
                                                         for r in g.itertuples())
             for (v, s, k), g in moved_cells(t).groupby(['variant', 'setting', 'step'], sort=False)]
    return (f"Against the paper's protocol in the same cell (variants with all {PAPER.seeds} seeds in), a variant moves the verdict: "
            + ('; '.join(moves) if moves else 'nowhere') + '.')

def earns_follow_ups(t:pd.DataFrame, # `verdict_table` of the paper's protocol and `variant` on `settings`
                     variant:str, # the variant whose follow-ups the plan names
                     settings:str, # the panels the plan reads it on
                    )->bool|None:
    "The plan's rule for follow-ups: does `variant` move the verdict on any of `settings`, by the mean or paired per seed (the issue's 'either reading')? True once one cell with all its seeds in moved; False once every cell is complete and none did; None until then."
    mine = t[(t['variant'] == variant) & t['setting'].isin(list(settings))]
    if not len(mine): return None
    m = moved_cells(t)  # cells with all their seeds in only: a move there is final, whatever the other cells will say
    if ((m['variant'] == variant) & m['setting'].isin(list(settings)) & m['reading'].isin(['mean', 'paired'])).any(): return True
    return False if (mine['n'] == PAPER.seeds).all() else None

def fair_readings(panels:list, # the results read (`read_panels`)
                  variant:str='backtrack', # the variant read
                  step:int=PAPER.steps, # the step whose SGD budget is used
                 )->dict:
    "Panel -> the compute-fair reading of `variant`'s AMG (`beats_all(..., fair=True)`), for `beyond_words`."
    return {s: beats_all(got, step, fair=True) for v, s, got in panels if v == variant}

def beyond_words(t:pd.DataFrame, # `verdict_table`
                 f:pd.DataFrame, # `frozen_table`
                 sh:pd.DataFrame, # `shift_table`
                 variant:str='backtrack', # the guard that cannot freeze (a registered variant)
                 step:int=PAPER.steps, # the step read
                 fair:dict|None=None, # panel -> the compute-fair reading at `step` (`beats_all(..., fair=True)`), where read
                )->str:
    "The answer for a guard beyond the paper, per panel: does it beat every baseline (three readings), how many seeds freeze, and how it ends against the paper's AMG on the same seeds."
    def row(d, v, s, **k):  # the rows of variant v, panel s and the given column values
        m = (d['variant'] == v) & (d['setting'] == s)
        for c, x in k.items(): m &= d[c] == x
        return d[m]
    def readings(r):  # the three readings of a `beats_all` result, and which baselines it is lower than where paired fails
        return (f"by the mean {yes_no(r['mean'])}, by the median {yes_no(r['median'])}, paired per seed {yes_no(r['paired'])}"
                + ('' if r['paired'] else f" (lower than {', '.join(r['lower_than']) or 'no baseline'})"))
    parts, wins, full = [], [], []
    for s in [s for s in dict.fromkeys(t['setting']) if s in planned_panels(variant)]:  # the panels it is read on
        r = row(t, variant, s, step=step)
        if not len(r) or r.iloc[0]['n'] == 0:
            parts.append(f"On ({s}) it has no seeds in yet."); wins.append(False); full.append(False); continue
        r = r.iloc[0]
        txt = f"On ({s}), n={r['n']}: {readings(r)}"
        fr, fp = row(f, variant, s, method='amg'), row(f, 'paper', s, method='amg')
        if len(fr) and len(fp): txt += f"; {fr.iloc[0]['frozen']} of {fr.iloc[0]['n']} seeds frozen (the paper's AMG: {fp.iloc[0]['frozen']} of {fp.iloc[0]['n']})"
        sr = row(sh, variant, s, method='amg')
        if len(sr): txt += (f"; against the paper's AMG on the same seeds, {sr.iloc[0]['reading']} (below it on {sr.iloc[0]['lower']} of "
                            f"{sr.iloc[0]['n']} seeds, Wilcoxon p = {sr.iloc[0]['wilcoxon_p']:.2g})")
        if (fair or {}).get(s):
            c = fair[s]
            txt += (f"; compute-fair, at SGD's budget of {c['budget']:,.0f} gradient evaluations (AMG at step {c['method_step']:,.0f}): "
                    + readings(c))
        parts.append(txt + '.'); wins.append(bool(r['paired'])); full.append(r['n'] == PAPER.seeds)
    reach = (f"With all {PAPER.seeds} seeds in on every panel read, " if all(full) else
             f"So far (not every panel read has all {PAPER.seeds} seeds in), ")
    answer = ("it beats every baseline by the paired test on every panel read, the rule for becoming `MetaGuard`'s default" if all(wins) else
              "it does not beat every baseline by the paired test on every panel read, so `MetaGuard`'s default stays the "
              f"paper's AMG and `{variant}` is an option")
    return (f"**Beyond the paper, a guard that cannot freeze** (`{variant}`: {get_variant(variant).about.removeprefix('beyond the paper: ')}): "
            f"does AMG then beat every baseline at step {step:,}? " + ' '.join(parts) + f" {reach}{answer}.")

def panel_words(settings, # panel letters, in order (repeats read once)
               )->str:
    "The panels in words: '(a) and (c)', '(a), (b), (c) and (d)'."
    on = [f'({s})' for s in dict.fromkeys(settings)]
    return ' and '.join(filter(None, (', '.join(on[:-1]), on[-1])))

def summary(store=None, # root folder of the results store (default: outputs/results of this checkout)
            out:Path|None=None, # the markdown file (default: outputs/robustness/summary.md)
           )->str:
    "The front page's block: the verdict table in words and the study's progress; written to outputs/robustness/summary.md."
    st = status(store=store)
    panels = read_panels(settings=panels_in(st), store=store)
    t, f, sh = verdict_table(panels=panels), frozen_table(panels=panels), shift_table(panels=panels)
    lines = [f"**Does the verdict hold under the paper's open choices?** AMG against all four baselines on panels {panel_words(t['setting'])}, "
             "for each variant ([07_does_the_verdict_hold](nbs/07_does_the_verdict_hold.ipynb)): does it beat every baseline "
             "by the mean / by the median / paired per seed (n seeds that AMG and all four baselines have in the store)?", '',
             '| variant | what it changes | ' + ' | '.join(f"({r.setting}) step {r.step:,}" for r in t[t['variant'] == 'paper'].itertuples()) + ' |',
             '|---|---|' + '---|'*int((t['variant'] == 'paper').sum())]
    cols = [(r.setting, r.step) for r in t[t['variant'] == 'paper'].itertuples()]
    for v, g in t.groupby('variant', sort=False):  # a panel the variant is not planned on: 'not planned'
        cells = {(r.setting, r.step): verdict_cell(r) for r in g.itertuples()}
        lines.append(f"| `{v}` | {get_variant(v).about} | " + ' | '.join(cells.get(c, 'not planned') for c in cols) + ' |')
    done, planned = int(st['done'].sum()), int(st['planned'].sum())
    twice = st.duplicated(['variant', 'setting'])  # a variant's later row on a panel: named by its methods
    name = lambda r: f" {', '.join(map(label, r.methods))}" if twice[r.Index] else ''
    trap_file = robustness_file('trap.json')
    trap = ["Why AMG's seeds freeze on 'stay', measured in the chapter: " + trap_words(json.loads(trap_file.read_text())), '']\
        if trap_file.exists() else []
    lines += ['', verdict_words(t), '', moved_words(t), '', beyond_words(t, f, sh, fair=fair_readings(panels)), '', *([shift_words(sh), ''] if len(sh) else []), frozen_words(f), '', *([w, ''] if (w := smg_words(smg_table(store=store))) else []), *trap, f"The study's runs: {done} of {planned} seed-runs in the store "
                  f"({', '.join(f'{r.variant} ({r.setting}){name(r)} {r.done}/{r.planned}' for r in st.itertuples())})."]
    md = '\n'.join(lines) + '\n'
    out = Path(out) if out else robustness_file('summary.md')
    with atomic_write(out) as tmp: tmp.write_text(md)
    return md

def main(argv=None, # command-line arguments (default: the process arguments)
        ):
    "python -m metaguard_nb.robustness summary|trap|plan: write the README's block from the store, measure the 'stay' trap (minutes), or print the grid commands of what is left."
    ap = argparse.ArgumentParser(prog='python -m metaguard_nb.robustness')
    ap.add_argument('what', choices=['summary', 'trap', 'plan'])
    a = ap.parse_args(argv)
    print(summary() if a.what == 'summary' else trap() if a.what == 'trap' else '\n'.join(plan()))

if __name__ == '__main__' and not hasattr(builtins, '__IPYTHON__'): main()  # not when a notebook runs this cell

# %%
_t = pd.DataFrame([dict(variant='paper', setting='c', step=k, n=25, mean=False, median=False, paired=False, lower_than=lt)
                   for k, lt in ((1000, ['SGD']), (2000, ['SGD', 'L2O']))]
                  + [dict(variant='lr1', setting='c', step=2000, n=0, mean=None, median=None, paired=None, lower_than=[])])
test_eq('Paired per seed at step 2,000, AMG is lower than SGD, L2O on `paper` (c, n=25).' in verdict_words(_t), True)
test_eq('`lr1` (c)' in verdict_words(_t).split('Not yet tested')[1], True)
_m = pd.concat([_t[_t['variant'] == 'paper'], pd.DataFrame([dict(variant='lr1', setting='c', step=k, n=n, mean=True, median=False,
                                                                 paired=k == 1000, lower_than=[]) for k, n in ((1000, 25), (2000, 24))])])
test_eq(moved_words(_m), "Against the paper's protocol in the same cell (variants with all 25 seeds in), a variant moves the verdict: "
        "`lr1` (c) at step 1,000 by the mean (yes; the paper's no), the paired test (yes; the paper's no).")  # step 2,000: 24 seeds, not read
test_eq(moved_words(_t).endswith('moves the verdict: nowhere.'), True)
test_eq(moved_cells(_m)[['step', 'reading']].values.tolist(), [[1000, 'mean'], [1000, 'paired']])
test_eq(earns_follow_ups(_m, 'lr1', 'c'), True)  # step 1,000 is complete and moved: decided, though step 2,000 has 24 seeds
test_eq(earns_follow_ups(_m.assign(n=25), 'lr1', 'c'), True)
test_eq(earns_follow_ups(_m.assign(mean=False, paired=False), 'lr1', 'c'), None)  # nothing moved yet, and step 2,000 is not complete
test_eq(earns_follow_ups(_m.assign(n=25, mean=False, paired=False), 'lr1', 'c'), False)  # the median alone does not earn them
test_eq(earns_follow_ups(_m.assign(n=24), 'lr1', 'c'), None)  # a move on 24 seeds is not read
test_eq((planned_panels('paper'), planned_panels('lr1'), planned_panels('gT_lr1'), planned_panels('adapt_waiting')), ('abcd', 'ca', 'c', ''))
_st = pd.DataFrame([dict(variant=v, setting=s, done=d) for v, s, d in
                    (('lr1', 'c', 3), ('lr1', 'a', 0), ('gT', 'd', 1), ('gT', 'b', 0), ('second_order', 'b', 9), ('paper', 'b', 5))])
test_eq(panels_in(_st), 'cd')  # (a), (b): nothing in, or only a variant not read, or the paper's own
test_eq(panels_in(_st, ('paper', 'second_order')), 'b')
test_eq(panels_in(_st.assign(done=0)), 'abcd')  # nothing in yet: every panel planned, each read as n = 0
test_eq([panel_words(p) for p in ('c', 'aacc', 'abcd')], ['(c)', '(a) and (c)', '(a), (b), (c) and (d)'])

# %%
_f = pd.DataFrame([dict(variant=v, setting='c', method='amg', n=n, frozen=k, stay_throughout=k) for v, n, k in (('paper', 25, 5), ('backtrack', 12, 0))])
_sh = pd.DataFrame([dict(variant='backtrack', setting='c', method='amg', n=12, mean=0.2, paper_mean=1.0, median=0.1, paper_median=0.3,
                         lower=10, wilcoxon_p=0.003, reading='lower')])
test_eq(frozen_words(_f).split('\n\n')[1], "| variant (panel) | AMG |\n| --- | --- |\n| `paper` (c) | 5/25 (5 on 'stay') |\n| `backtrack` (c) | 0/12 (0 on 'stay') |")
_sh2 = pd.concat([_sh, _sh.assign(variant='lr1', setting='a', method='sgd', wilcoxon_p=0.0004)])  # a method each: blank cells between
test_eq(shift_words(_sh2).split('\n\n')[1], "| variant (panel) | SGD | AMG |\n| --- | --- | --- |\n"
        "| `backtrack` (c) |  | 0.200 vs 1.000: lower (10/12, p = 0.003) |\n| `lr1` (a) | 0.200 vs 1.000: lower (10/12, p = 0.0004) |  |")
_b = pd.concat([_t, pd.DataFrame([dict(variant='backtrack', setting=s, step=2000, n=n, mean=n > 0, median=n > 0, paired=False,
                                       lower_than=['SGD'] if n else []) for s, n in (('c', 12), ('a', 0))])])
test_eq(beyond_words(_b, _f, _sh), "**Beyond the paper, a guard that cannot freeze** (`backtrack`: "
        + get_variant('backtrack').about.removeprefix('beyond the paper: ')
        + "): does AMG then beat every baseline at step 2,000? On (c), n=12: by the mean yes, by the median yes, paired per seed no "
        "(lower than SGD); 0 of 12 seeds frozen (the paper's AMG: 5 of 25); against the paper's AMG on the same seeds, lower (below it "
        "on 10 of 12 seeds, Wilcoxon p = 0.003). On (a) it has no seeds in yet. So far (not every panel read has all 25 seeds in), it "
        "does not beat every baseline by the paired test on every panel read, so `MetaGuard`'s default stays the paper's AMG and "
        "`backtrack` is an option.")
test_eq('(b)' in beyond_words(pd.concat([_b, _t.assign(setting='b')]), _f, _sh), False)  # a panel it is not planned on: not named
test_eq("Wilcoxon p = 0.003); compute-fair, at SGD's budget of 2,000 gradient evaluations (AMG at step 90): by the mean no, by the "
        "median yes, paired per seed no (lower than SGD, LGL2O (w/o Update)). On (a)"
        in beyond_words(_b, _f, _sh, fair={'c': dict(budget=2000., method_step=90., mean=False, median=True, paired=False,
                                                    lower_than=['SGD', 'LGL2O (w/o Update)'])}), True)
_won = _b.assign(n=25, mean=True, median=True, paired=True)  # every panel complete and won: the answer says so, without 'so far'
test_eq(beyond_words(_won, _f, _sh).endswith("With all 25 seeds in on every panel read, it beats every baseline by the paired test on "
                                             "every panel read, the rule for becoming `MetaGuard`'s default."), True)

# %% [markdown]
# What the variants say, in words (the README's block below the answer is this, with the table), and
# the answer for the guard beyond the paper:

# %%
display(Markdown(verdict_words(verdicts)))
display(Markdown(moved_words(verdicts)))
display(Markdown(beyond_words(verdicts, frozen, shift, fair=fair_readings(panels))))

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.robustness`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('robustness')
