"The paired reading of the report, recomputed from the committed seed files with plain numpy and scipy."
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / 'outputs' / 'results'
# The guard fields of the paper protocol's keys; an option added later enters a key only when it is on.
PAPER_GUARD = {'T', 'adapt_batch', 'compile', 'eval_batch_size', 'lr_eta', 'lr_theta', 'second_order', 'sgd_candidate', 'tile'}


def paper_folder(setting, method):
    "The committed folder of (setting, method) at the paper protocol: the shipped checkpoint, default guard, CPU, compiled step."
    for run in (STORE / setting / method).glob('*/run.json'):
        key = json.loads(run.read_text())
        g = key['guard']
        if (key['device'] == 'cpu' and g['compile'] and g['lr_eta'] == 3.0 and g['lr_theta'] == 0.1 and not g['second_order']
                and set(g) == PAPER_GUARD and 'memory' not in key['checkpoint'] and len(list(run.parent.glob('seed*_2000.npz'))) == 25):
            return run.parent
    pytest.skip(f'no committed paper-protocol seeds of ({setting}, {method})')


def g_T_trained(key):
    "Does the run's key name a checkpoint meta-trained as g^T defines it (`memory='mean'`, the `gT` variants' optimizers)?"
    return key['checkpoint'].get('memory') == 'mean'


def losses_at(folder, step):
    out = {}
    for f in folder.glob('seed*_2000.npz'):
        with np.load(f) as z:
            out[int(f.stem[4:].split('_')[0])] = float(z['evals'][list(z['eval_steps']).index(step), 0])
    return out


@pytest.mark.parametrize('step', [1000, 2000])
def test_the_paired_table_of_panel_c_is_what_the_seed_files_give(step):
    from metaguard_nb.report import BASELINES, GUARDED, panel_results, paired_table, protocol
    _, got, _ = panel_results('c', protocol('c', 'paper'))
    table = paired_table(got, steps=(step,)).set_index(['method', 'baseline'])
    for m in GUARDED:
        a = losses_at(paper_folder('c', m), step)
        for b in BASELINES:
            bb = losses_at(paper_folder('c', b), step)
            seeds = sorted(a)
            x, y = np.array([a[s] for s in seeds]), np.array([bb[s] for s in seeds])
            row = table.loc[(m, b)]
            assert row['n'] == 25 and row['below'] == int((x < y).sum()) and row['above'] == int((x > y).sum())
            assert row['median_a'] == pytest.approx(np.median(x), abs=1e-6)
            assert row['sign_p'] == pytest.approx(stats.binomtest(int((x < y).sum()), int((x != y).sum())).pvalue, rel=1e-9)
            assert row['wilcoxon_p'] == pytest.approx(stats.wilcoxon(x, y).pvalue, rel=1e-6)
            lower = stats.wilcoxon(x, y, alternative='less').pvalue < 0.025
            assert (row['reading'] == 'lower') == lower


def test_the_paired_claim_is_the_wilcoxon_rule_against_every_baseline():
    from metaguard_nb.report import claims, panel_results, protocol, summarize
    P = protocol('a', 'paper')
    for s in 'abcd':
        _, got, _ = panel_results(s, P)
        row = claims(summarize(got, s), got).set_index('claim').loc['AMG beats all baselines']
        amg = losses_at(paper_folder(s, 'amg'), 2000)
        each = []
        for b in ('sgd', 'l2o', 'lgl2o', 'lgl2o_no_update'):
            base = losses_at(paper_folder(s, b), 2000)
            x, y = np.array([amg[k] for k in sorted(amg)]), np.array([base[k] for k in sorted(amg)])
            each.append(stats.wilcoxon(x, y, alternative='less').pvalue < 0.025)
        assert row['paired'] == ('reproduced' if all(each) else 'not reproduced')


@pytest.mark.parametrize('setting', ['a', 'c'])
def test_the_frozen_seed_counts_are_what_the_seed_files_give(setting):
    "A seed is frozen when its monitor loss is the same at every evaluation of the last tenth of the run; 'stay' throughout read from its branch record."
    from metaguard_nb.guards import get_method
    from metaguard_nb.robustness import frozen_table
    f = frozen_table(variants=('paper',), settings=setting).set_index('method')
    for m in ('amg', 'safe_amg'):
        frozen = stayed = 0
        stay = get_method(m).branches.index('stay')
        for path in paper_folder(setting, m).glob('seed*_2000.npz'):
            with np.load(path) as z:
                steps, mon = list(z['eval_steps']), z['evals'][:, 0]
                k = steps.index(2000 - 200)  # the last tenth of 2,000 steps, evaluated every 10
                if (mon[k:] == mon[-1]).all():
                    frozen += 1
                    stayed += int((z['branch'][2000 - 200:] == stay).all())
        assert f.loc[m, 'n'] == 25 and f.loc[m, 'frozen'] == frozen and f.loc[m, 'stay_throughout'] == stayed
        assert frozen > 0  # the committed protocol has frozen seeds of both guards on (a) and (c)


@pytest.mark.parametrize('method', ['amg', 'lgl2o'])
def test_the_candidate_shares_on_c_are_what_the_seed_files_give(method):
    "The branch table's row of the paper protocol on (c): each candidate's share of all steps and the median seed's learned share, from the npz files' branch records."
    from metaguard_nb.guards import get_method
    from metaguard_nb.robustness import branch_table
    row = branch_table(variants=('paper',), settings='c').set_index('method').loc[method]
    names = get_method(method).branches
    b = np.stack([np.load(f)['branch'] for f in sorted(paper_folder('c', method).glob('seed*_2000.npz'))])
    assert b.shape == (25, 2000) and row['n'] == 25
    for k, name in enumerate(names): assert row[name] == pytest.approx((b == k).mean(), abs=1e-12)
    assert row['learned_median'] == pytest.approx(np.median((b == names.index('learned')).mean(1)), abs=1e-12)
    assert 0 < row['learned'] < 1  # both kinds of step happen on (c): the shares are not a constant


def test_what_a_variant_does_to_a_baseline_is_what_the_seed_files_give():
    "The shift table's row for LGL2O (w/ Update) under `gT` on (a), recomputed from the two folders' seed files with numpy and scipy."
    from metaguard_nb.robustness import shift_table
    keys = {run.parent: json.loads(run.read_text()) for run in (STORE / 'a' / 'lgl2o').glob('*/run.json')}
    gT = [folder for folder, key in keys.items() if g_T_trained(key) and key['guard']['lr_eta'] == 3.0
          and len(list(folder.glob('seed*_2000.npz'))) == 25]
    if not gT: pytest.skip('no committed gT seeds of (a, lgl2o)')
    a, b = losses_at(gT[0], 2000), losses_at(paper_folder('a', 'lgl2o'), 2000)
    d = np.array([a[s] - b[s] for s in sorted(a)])
    row = shift_table(variants=('paper', 'gT'), settings='a').set_index('method').loc['lgl2o']
    assert row['n'] == 25 and row['lower'] == int((d < 0).sum())
    assert np.isclose(row['mean'], np.mean(list(a.values()))) and np.isclose(row['paper_mean'], np.mean(list(b.values())))
    assert np.isclose(row['wilcoxon_p'], stats.wilcoxon(d).pvalue)
    ranks = stats.rankdata(np.abs(d))
    assert (row['reading'] == 'lower') == (stats.wilcoxon(d).pvalue < 0.05 and ranks[d < 0].sum() > ranks[d > 0].sum())


def test_the_compute_fair_reading_is_what_the_seed_files_give():
    "AMG on (c) at SGD's budget of gradient evaluations at step 2,000 (its last evaluation within it), against every baseline there, from the npz files."
    from metaguard_nb.report import BASELINES, panel_results, protocol
    from metaguard_nb.robustness import beats_all, budget_losses
    _, got, _ = panel_results('c', protocol('c', 'paper'))

    def at_budget(folder, budget):
        out = {}
        for f in folder.glob('seed*_2000.npz'):
            with np.load(f) as z:
                k = int(np.nonzero(z['evals'][:, 3] <= budget)[0].max())
                out[int(f.stem[4:].split('_')[0])] = float(z['evals'][k, 0])
        return out
    with np.load(next(paper_folder('c', 'sgd').glob('seed0_2000.npz'))) as z: budget = float(z['evals'][-1, 3])
    a = at_budget(paper_folder('c', 'amg'), budget)
    assert budget_losses(got['amg'], budget)[0] == pytest.approx(a, abs=1e-6)
    seeds = sorted(a)
    ps = {b: (np.array([a[s] for s in seeds]), np.array([at_budget(paper_folder('c', b), budget)[s] for s in seeds])) for b in BASELINES}
    lower = lambda x, y: stats.wilcoxon(x, y).pvalue < 0.05 and stats.rankdata(np.abs(x - y))[x < y].sum() > stats.rankdata(np.abs(x - y))[x > y].sum()
    v = beats_all(got, 2000, fair=True)
    assert v['budget'] == budget and v['n'] == 25
    assert v['mean'] == all(x.mean() < y.mean() for x, y in ps.values())
    assert v['paired'] == all(lower(x, y) for x, y in ps.values())


def test_smgs_rows_at_step_1000_are_what_the_seed_files_give():
    "V3's table: the paper's SMG on (c), seeds 0-9 cut at step 1,000, against each baseline there; and a V3 variant against the paper's SMG once its seeds are in."
    from metaguard_nb.report import BASELINES, label
    from metaguard_nb.robustness import PAPER_SMG, smg_table
    t = smg_table().set_index(['variant', 'against'])
    cut = lambda folder: {s: v for s, v in losses_at(folder, 1000).items() if s < 10}
    smg = cut(paper_folder('c', 'smg'))
    pairs = [(('paper', label(b)), smg, cut(paper_folder('c', b))) for b in BASELINES]
    for run in (STORE / 'c' / 'smg').glob('*/run.json'):  # a V3 folder: second_order on, or lambda_theta = 0, at 1,000 steps
        g, files = json.loads(run.read_text())['guard'], list(run.parent.glob('seed*_1000.npz'))
        v = 'second_order' if g['second_order'] else 'lr_theta0' if g['lr_theta'] == 0 else None
        if v and files:
            mine = {int(f.stem[4:].split('_')[0]): float(np.load(f)['evals'][-1, 0]) for f in files}
            pairs.append(((v, PAPER_SMG), mine, smg))
    for key, a, b in pairs:
        seeds = sorted(a)
        x, y = np.array([a[s] for s in seeds]), np.array([b[s] for s in seeds])
        row = t.loc[key]
        assert row['n'] == len(seeds) and row['lower'] == int((x < y).sum())
        assert row['mean'] == pytest.approx(x.mean(), abs=1e-6) and row['against_median'] == pytest.approx(np.median(y), abs=1e-6)
        assert row['wilcoxon_p'] == pytest.approx(stats.wilcoxon(x, y).pvalue, rel=1e-6)
        assert (row['reading'] == 'lower') == (stats.wilcoxon(x, y, alternative='less').pvalue < 0.025)
    assert len(smg) == 10


def test_v2s_follow_ups_are_planned_because_lr1_moves_the_verdict_on_c():
    "The plan's rule: lambda_eta = 0.3 and V1 with V2 run on (c) only where `lr1` moves the verdict there (mean or paired), read with all 25 seeds in."
    from metaguard_nb.robustness import STUDY, earns_follow_ups, verdict_table
    moved = earns_follow_ups(verdict_table(variants=('paper', 'lr1'), settings='c'), 'lr1', 'c')
    if moved is None: pytest.skip('lr1 (c) is not complete in the store')
    follow_ups = {st.variant for st in STUDY} & {'lr0.3', 'gT_lr1'}
    assert bool(follow_ups) == moved


def test_v1s_follow_ups_are_planned_if_gT_moves_the_verdict_on_a_or_c():
    "The plan's rule for V1: if `gT` moves the verdict on (a) or (c) (mean or paired, all 25 seeds in), it runs on (b) and (d) too, with SMG on all four; if not, it stops at (a) and (c)."
    from metaguard_nb.robustness import STUDY, earns_follow_ups, verdict_table
    moved = earns_follow_ups(verdict_table(variants=('paper', 'gT'), settings='ac'), 'gT', 'ac')
    if moved is None: pytest.skip('gT is not complete on (a) and (c) in the store')
    rows = [st for st in STUDY if st.variant == 'gT']
    panels = {s for st in rows for s in st.settings}
    smg = {s for st in rows if 'smg' in st.methods for s in st.settings}
    assert (panels == set('abcd') and smg == set('abcd')) if moved else (panels == set('ac') and not smg)


def test_the_step_size_points_on_c_are_what_the_seed_files_give():
    "`step_size_table` on (c) at step 2,000: SGD at lambda_eta = 1 and 3 (the shipped optimizers' points), recomputed from the seed files."
    from metaguard_nb.robustness import read_panels, step_size_table
    t = step_size_table(read_panels(('paper', 'lr1'), 'c')).set_index(['lr_eta', 'method'])
    keys = {run.parent: json.loads(run.read_text()) for run in (STORE / 'c' / 'sgd').glob('*/run.json')}
    lr1 = [folder for folder, key in keys.items() if key['device'] == 'cpu' and key['guard']['lr_eta'] == 1.0
           and not g_T_trained(key) and len(list(folder.glob('seed*_2000.npz'))) == 25]  # not `gT_lr1`'s twin
    if not lr1: pytest.skip('no committed lr1 seeds of (c, sgd)')
    for lr, folder in ((1.0, lr1[0]), (3.0, paper_folder('c', 'sgd'))):
        x = np.array(list(losses_at(folder, 2000).values()))
        row = t.loc[(lr, 'sgd')]
        assert row['n'] == 25 and row['step'] == 2000
        assert np.isclose(row['median'], np.median(x)) and np.isclose(row['q25'], np.quantile(x, 0.25)) and np.isclose(row['mean'], x.mean())
    assert t.loc[(1.0, 'l2o'), 'median'] == t.loc[(3.0, 'l2o'), 'median']  # L2O takes no SGD step: `lr1` reads the paper's seeds


@pytest.mark.parametrize('method, ignores', [('sgd', 'the optimizers'), ('l2o', 'lambda_eta')])
def test_a_method_computes_the_same_numbers_under_a_variant_that_leaves_it_alone(method, ignores):
    """SGD uses no meta-trained optimizer and L2O takes no SGD step: where the store holds two runs of one that differ only there
    (`gT_lr1` against `lr1`, or against `gT`), every common seed agrees through step 20 to float32 rounding.

    Not bit for bit: the twins were computed on different machines or in calls of different sizes (the info records AVX2 for
    `lr1`'s first seeds and `gT`'s L2O, AVX512 for `gT_lr1`'s; `lr1`'s later seeds ran one to a call, `gT_lr1`'s five), and rounding
    parts a seed's trajectory later on (`python scripts/store_twins.py`).
    Measured on (c), 2026-12-07: twins agree to 6.4e-6 through step 20 where runs that differ in what the method reads part by 0.018
    or more. That the two computations are the same, bit for bit on one machine, is tested by recomputing (tests/test_registry.py)."""
    import itertools
    keys = {run.parent: json.loads(run.read_text()) for run in (STORE / 'c' / method).glob('*/run.json')}
    def without(k):  # the key less what `method` does not read
        if ignores == 'the optimizers': return {**k, 'checkpoint': None, 'checkpoint_weights': None}
        return {**k, 'guard': {**k['guard'], 'lr_eta': None}}
    pairs = [(f1, f2) for (f1, k1), (f2, k2) in itertools.combinations(keys.items(), 2) if k1 != k2 and without(k1) == without(k2)]
    common = [(f1, f2, name) for f1, f2 in pairs for name in sorted({p.name for p in f1.glob('seed*.npz')} & {p.name for p in f2.glob('seed*.npz')})]
    if not common: pytest.skip(f'no two runs of (c, {method}) in the store that differ only in {ignores}')
    for f1, f2, name in common:
        with np.load(f1 / name) as a, np.load(f2 / name) as b:
            assert list(a['eval_steps'][:3]) == list(b['eval_steps'][:3]) == [0, 10, 20]
            assert np.allclose(a['evals'][:3], b['evals'][:3], rtol=0, atol=1e-4, equal_nan=True), (f1, f2, name)
