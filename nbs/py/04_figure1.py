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
import argparse, builtins, math
from pathlib import Path

import matplotlib.pyplot as plt
import nbformat
import numpy as np
import pandas as pd

from metaguard_nb.data import checkout
from metaguard_nb.docs import write_readme
from metaguard_nb.guards import METHODS, get_method
from metaguard_nb.persist import atomic_write
from metaguard_nb.report import (GUARDED, SOURCES, answer_lines, best_baseline, claim_lines, label, means_lines, monitor_losses,
                                 paired_lines, panel_results, protocol, seed_lines, still_to_run, summarize)
from metaguard_nb.runner import PROTOCOLS, figure_setting

# %%
import os, tempfile
import torch
from fastcore.test import test_close, test_eq, test_fail
from metaguard_nb.report import claims, table
from metaguard_nb.runner import run


# %% [markdown]
# ## Drawing a panel
#
# Left: the paper's view (loss against steps). Right: the compute-fair view (loss against optimizee
# gradient evaluations). Log-scale y, mean line and 95% band per method.

# %%
#| export
def plot_panel(df:pd.DataFrame, # one panel's summary (`report.summarize`)
               axs=None, # axes to draw on, one per view (None: a new figure)
               title:str|None=None, # the panel title (None: none)
               legend:bool=True, # draw the legend
               views=('step', 'grad_evals'), # x axes: 'step' and/or 'grad_evals'
              ):
    "Draw one setting's curves, one axis per view: against steps, against optimizee gradient evaluations."
    if axs is None: _, axs = plt.subplots(1, len(views), figsize=(5.5*len(views), 3.8), squeeze=False)
    axs = list(np.ravel(axs))
    for method, d in df.groupby('method', sort=False):
        for ax, x in zip(axs, views):
            d_ = d[d[x] > 0] if x == 'grad_evals' else d  # log x-axis: step 0 has spent nothing
            M = get_method(method)
            ax.plot(d_[x], d_['mean'], color=M.color, lw=1.4, label=M.label)
            ax.fill_between(d_[x], d_['ci_low'].clip(lower=1e-6), d_['ci_high'], color=M.color, alpha=0.2, lw=0)
    # y-range from the means: with few seeds a t-interval can reach far below them (it is drawn, and cut at the axis)
    lo, hi = df['mean'].min(), df['mean'].max()
    for ax, x in zip(axs, views):
        ax.set(yscale='log', xlabel='step' if x == 'step' else 'optimizee gradient evaluations', ylim=(lo/1.5, hi*1.3))
        if x == 'grad_evals': ax.set_xscale('log')
    axs[0].set_ylabel('monitor-set loss')
    if title: axs[0].set_title(title, fontsize=9, loc='left')
    if legend: axs[-1].legend(fontsize=7, loc='best')
    return axs

def source_name(src:tuple, # (device, compiled)
               )->str:
    "How the report and the figures name a source (device, compiled LSTM step), e.g. 'CPU, compiled step'."
    return f"{src[0].upper()}, {'compiled' if src[1] else 'eager'} step"

def _write_png(fig, out:Path, dpi:int):
    "Save `fig` to `out` through a temporary file, so a stopped run never leaves a broken figure."
    with atomic_write(out) as tmp: fig.savefig(tmp, dpi=dpi)

def combined_figure(dfs:dict, # setting -> the panel's summary (`summarize`), in the order the panels are laid out
                    out:Path, # folder the png and pdf go to
                    view:str='step', # x axis: 'step' or 'grad_evals'
                    sources:dict|None=None, # each panel's (device, compiled), named in its title (None: not named)
                   ):
    "Every panel's curves, two panels a row (the paper's 2x2 for its four), against steps or gradient evaluations; `sources`: (device, compiled) by setting, named in the titles."
    rows = math.ceil(len(dfs)/2)
    fig, axs = plt.subplots(rows, 2, figsize=(11, 3.75*rows), squeeze=False)
    for ax in axs.flat[len(dfs):]: ax.set_axis_off()
    for ax, s in zip(axs.flat, dfs):
        df = dfs.get(s)
        if df is None or df.empty: ax.set_title(f'({s}): no seeds yet', fontsize=8); continue
        name, net, data = figure_setting(s)
        plot_panel(df, axs=[ax], legend=False, views=(view,))
        n = df.groupby('method')['n_seeds'].max()
        seeds = f'{n.min()}-{n.max()} seeds' if n.min() != n.max() else f'{n.max()} seeds'
        src = f'; {source_name(sources[s])}' if sources and s in sources else ''  # second line: a partial panel's '10-25 seeds' overran the figure
        ax.set_title(f"({s}) train: {name.replace('_', ' & ')}, test: {net} & {data}\n{seeds}{src}", fontsize=8)
    drawn = {l.get_label(): l for ax in axs.flat for l in ax.get_lines()}  # one legend for every method of any panel
    labels = [M.label for M in METHODS.values() if M.label in drawn]
    if labels: fig.legend([drawn[l] for l in labels], labels, loc='lower center', ncol=len(labels), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    _write_png(fig, out, dpi=120)
    return fig


# %% [markdown]
# Every seed of the guarded methods, a panel per row (the report's "seeds one by one" in
# [03e_report](03e_report.ipynb) counts them):

# %%
#| export
def seeds_figure(gots:dict, # setting -> {method: runner-like result}, in the order of the rows
                 out:Path, # folder the png goes to
                 sources:dict|None=None, # each panel's (device, compiled), named in its title (None: not named)
                ):
    "A panel per row and a guarded method per column: every seed (thin lines) against the best baseline's mean (dashed)."
    fig, axs = plt.subplots(len(gots), len(GUARDED), figsize=(12, 2.75*len(gots)), sharex=True, squeeze=False)
    for row, s in zip(axs, gots):
        got = gots.get(s) or {}
        base, _ = best_baseline(got)
        if base: b_mon, b_steps = monitor_losses(got[base])
        src = f'; {source_name(sources[s])}' if sources and s in sources else ''
        for ax, m in zip(row, GUARDED):
            if m not in got: ax.set_axis_off(); ax.set_title(f'({s}) {label(m)}: no seeds yet', fontsize=8); continue
            mon, steps = monitor_losses(got[m])
            for y in mon: ax.plot(steps, y, color=get_method(m).color, lw=0.7, alpha=0.6)
            if base:
                ax.plot(b_steps, b_mon.mean(0), color='k', ls='--', lw=1.2, label=f'{label(base)} (mean)')
                ax.legend(fontsize=7, loc='upper right')
            ax.set_yscale('log')
            ax.set_title(f'({s}) {label(m)}, {len(mon)} seeds{src}', fontsize=8)
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
# Every seed of AMG against the best baseline's mean, on (a) and (c) with (b) empty between them: the steps under (a)'s axis too (the row
# below it is not drawn), the loss named on each row's first drawn axis (the SMG column on their left has no seeds)
fake = lambda rows: dict(evals=torch.tensor(rows, dtype=torch.float32)[..., None].expand(-1, -1, 6), eval_steps=torch.tensor([0, 10, 20, 30, 40]))
flat = lambda v, n=3: fake([[2.3, v, v, v, v]]*n)
toy = {'sgd': flat(1.0), 'l2o': flat(0.5), 'lgl2o': flat(0.3), 'lgl2o_no_update': flat(0.8), 'amg': fake([[2.3, 0.5, 0.2, 0.1, 0.1]]*4)}
with tempfile.TemporaryDirectory() as d: fig = seeds_figure({'a': toy, 'b': {}, 'c': toy}, Path(d)/'seeds.png')
test_eq([(ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes if ax.axison],
        [('(a) AMG, 4 seeds', 'step', 'monitor-set loss'), ('(c) AMG, 4 seeds', 'step', 'monitor-set loss')])
plt.close(fig)


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
def as_preset(P:dict, # a resolved protocol (`report.protocol`)
             )->bool:
    "Does a resolved protocol (`protocol`) run its preset's seeds and steps?"
    pr = PROTOCOLS[P['preset']]
    return (pr.seeds, pr.steps) == (len(P['seeds']), P['steps'])

def output_dir(P:dict, # a resolved protocol (`report.protocol`)
               out_dir=None, # an explicit folder (None: outputs/figure1/<preset>)
              )->Path:
    "The folder of a protocol's panels: `out_dir`, or outputs/figure1/<preset> (custom-<seeds>x<steps> off the presets)."
    if out_dir: return Path(out_dir)
    name = P['preset'] if as_preset(P) else f"custom-{len(P['seeds'])}x{P['steps']}"
    return (checkout() or Path.cwd())/'outputs'/'figure1'/name

def save_panel(df:pd.DataFrame, # the panel's summary, written as csv
               fig, # the matplotlib figure
               out:Path, # folder the files go to
               setting:str, # the panel, which names the files
              ):
    "The panel's png, pdf and csv, each written whole; the pdf carries no creation date, so the same panel gives the same bytes."
    for ext in ('png', 'pdf', 'csv'):
        with atomic_write(Path(out)/f'{setting}.{ext}') as tmp:
            if ext == 'csv': df.to_csv(tmp, index=False)
            else: fig.savefig(tmp, dpi=120, **({'metadata': {'CreationDate': None}} if ext == 'pdf' else {}))

def drop_run_times(nb:Path, # an executed notebook, tidied in place
                  ):
    "Remove what differs between two runs of the same panel from an executed notebook, in place: papermill's clock times, the kernel's per-cell timestamps and the random id of the injected parameters' cell."
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
# `write_report(preset)` reads whatever seeds of the protocol are in the results store (it computes
# nothing; each panel from one source, `report.panel_results`), and writes Figure 1 against steps and
# against optimizee gradient evaluations, every seed of the guarded methods, the panels' CSVs,
# `paired.csv`, `report.md` (the tables and verdicts of [03e_report](03e_report.ipynb)) and
# `answer.md`, the README's first screen. `python -m metaguard_nb.figure report --preset paper` runs it
# and regenerates the README; a test checks that the committed files equal what the committed store
# gives. Until every seed is in, the report is labelled partial, says how many are in, and lists what
# is still to run.

# %%
#| export
def _shown(path:Path) -> str:
    "A path as the report names it: relative to the checkout where it lies inside it."
    root = checkout()
    try: return Path(path).resolve().relative_to(root.resolve()).as_posix() if root else str(path)
    except ValueError: return str(path)

def write_report(preset:str='paper', # a protocol preset, e.g. 'quick' or 'paper' (`runner.PROTOCOLS`)
                 store=None, # root folder of the results store (default: outputs/results of this checkout)
                 out=None, # folder of the report (default: outputs/figure1/<preset>)
                 sources=SOURCES, # (device, compiled) pairs a panel may be read from, in order of preference
                )->str:
    "Figure 1, its table and the verdicts from the stored seeds of `preset`, each panel from one source; writes them to `out` and returns the markdown."
    P = protocol('a', preset)
    out = Path(out) if out else output_dir(P)
    out.mkdir(parents=True, exist_ok=True)
    dfs, gots, counts, src, read, unread = {}, {}, {}, {}, {}, 0
    for s in P['panels']:
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
    total, want = sum(counts.values()), len(P['panels'])*len(P['methods'])*len(P['seeds'])
    status = 'complete' if total == want else f'partial: {total} of {want} seed-runs in'
    lines = [f"**{preset} protocol** ({len(P['seeds'])} seeds x {P['steps']} steps per method and panel; {status}). "
             f"Generated by `python -m metaguard_nb.figure report --preset {preset}` from `outputs/results/`; "
             f"figures and CSVs in `{_shown(out)}/`.", '',
             'Each panel is read from one device and LSTM step (float rounding differs between them; the store keys them apart), '
             'the one with the most seed-runs in: ' + '; '.join(
                 f"({s}) {source_name(src[s])}, "
                 f"{read[s]} seed-runs" for s in P['panels']) + '.'
             + (f' The store holds {unread} more seed-runs of this protocol from the other sources, not read here.' if unread else ''), '']
    if total != want:
        lines += [f"Still to run, on the source each panel is read from: {still_to_run(counts, len(P['seeds']), P['panels'], P['methods'])}.", '']
    lines += [means_lines(dfs, P), '', claim_lines(dfs, gots), '', paired_lines(gots, out, (P['steps']//2, P['steps'])), '', seed_lines(gots, _shown(out))]
    md = '\n'.join(lines) + '\n'
    with atomic_write(out/'report.md') as tmp: tmp.write_text(md)
    with atomic_write(out/'answer.md') as tmp: tmp.write_text(answer_lines(dfs, gots, P) + '\n')
    return md


# %% [markdown]
# The command line: `check` (what `make figure1` calls first), `report`, and `drop-run-times`.

# %%
#| export
def main(argv=None, # command-line arguments (default: the process arguments)
        ):
    "python -m metaguard_nb.figure check|report|drop-run-times: check make figure1's parameters in one line, write the report of a protocol, or tidy executed notebooks."
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
                     num(a.eval_every) if a.eval_every else None)
            return
        md = write_report(a.preset)
        if not a.no_readme: write_readme()
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
eval_every = None  # steps between monitor-set evaluations; None: the protocol's
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
protocol_name = f" ({P['preset']})" if as_preset(P) else ''
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
        mb.main_bar.comment = label(method)
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

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.figure`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('figure')
