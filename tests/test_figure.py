"Figure 1 by papermill on the tiny protocol: outputs, CSV invariants, bad parameters, the cache."
import time
from pathlib import Path

import pandas as pd
import papermill as pm
import pytest

NB = Path(__file__).resolve().parent.parent / 'nbs' / '04_figure1.ipynb'


def run_nb(tmp_path, **params):
    out = tmp_path / 'executed.ipynb'
    pm.execute_notebook(str(NB), str(out), parameters=params, kernel_name='python3', progress_bar=False,
                        cwd=str(NB.parent))
    return out


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp('fig')
    t0 = time.time()
    run_nb(d, setting='b', preset='tiny', out_dir=str(d))
    first = time.time() - t0
    return d, first


def test_writes_png_pdf_csv_and_the_csv_is_consistent(tiny):
    d, _ = tiny
    for ext in ('png', 'pdf', 'csv'):
        assert (d / f'b.{ext}').stat().st_size > 0
    df = pd.read_csv(d / 'b.csv')
    assert list(df.columns) == ['setting', 'method', 'step', 'grad_evals', 'mean', 'ci_low', 'ci_high', 'n_seeds',
                                'test_loss', 'test_acc']
    assert set(df['method']) == {'sgd', 'l2o', 'lgl2o', 'lgl2o_no_update', 'smg', 'amg', 'safe_amg'}
    assert (df['ci_low'] <= df['mean'] + 1e-12).all() and (df['mean'] <= df['ci_high'] + 1e-12).all()
    assert (df['n_seeds'] == 2).all() and df['step'].max() == 20
    assert (df['ci_high'] > df['ci_low']).any()  # two seeds differ somewhere
    # compute-fair axis: AMG spends 2T + 2 = 22 gradient evaluations per step, SGD one
    last = df[df['step'] == 20].set_index('method')['grad_evals']
    assert last['sgd'] == 20 and last['amg'] == 22 * 20 and last['smg'] == 31 * 20


def test_second_identical_run_reuses_the_cache(tiny, tmp_path):
    d, first = tiny
    t0 = time.time()
    run_nb(tmp_path, setting='b', preset='tiny', out_dir=str(d))
    second = time.time() - t0
    assert second < first / 2, f'second run {second:.1f}s vs first {first:.1f}s'


def test_a_rerun_of_the_same_panel_leaves_the_same_bytes(tiny, tmp_path):
    """What make figure1 ships is the same after a rerun: png, pdf and csv byte for byte, and the executed notebook, once
    drop_run_times has run (as make figure1 runs it), in everything but the outputs (the first run computed, the second read the store)."""
    import nbformat
    from metaguard_nb.figure import drop_run_times
    d, _ = tiny
    files = lambda: {p.name: p.read_bytes() for p in sorted(d.glob('b.*'))}
    before = files()
    assert set(before) == {'b.png', 'b.pdf', 'b.csv'}
    run_nb(tmp_path, setting='b', preset='tiny', out_dir=str(d))
    assert files() == before  # the pdf carried its creation date before
    nbs = []
    for nb in (d / 'executed.ipynb', tmp_path / 'executed.ipynb'):
        drop_run_times(nb)
        assert '_time"' not in nb.read_text() and '"duration"' not in nb.read_text() and 'iopub' not in nb.read_text()
        n = nbformat.read(nb, as_version=4); n.metadata.papermill.pop('output_path')
        nbs.append((n.metadata, [(c.id, c.metadata, c.source) for c in n.cells]))
    assert nbs[0] == nbs[1]


@pytest.mark.parametrize('params,msg', [
    (dict(setting='e'), 'use one of a, b, c, d'),
    (dict(preset='huge'), 'use one of tiny, quick, paper'),
    (dict(steps=0), 'steps=0: use a positive integer'),
])
def test_bad_parameters_fail_with_one_line_before_compute(tmp_path, params, msg):
    with pytest.raises(pm.PapermillExecutionError) as e:
        run_nb(tmp_path, out_dir=str(tmp_path), **params)
    assert msg in str(e.value.evalue) and '\n' not in e.value.evalue
    assert not list(tmp_path.rglob('*.csv')) and not list(tmp_path.rglob('*.pt'))


def test_a_trial_run_never_replaces_the_shipped_results(tmp_path, monkeypatch):
    "The tiny preset run the default way (no out_dir) in a copy of the checkout: every shipped file keeps its bytes."
    import hashlib
    import shutil
    root = Path(__file__).resolve().parent.parent
    shutil.copy(root / 'settings.ini', tmp_path)
    shutil.copytree(root / 'outputs', tmp_path / 'outputs', ignore=shutil.ignore_patterns('partial', 'cache'))
    digest = lambda: {p.relative_to(tmp_path): hashlib.sha256(p.read_bytes()).hexdigest()
                      for p in (tmp_path / 'outputs').rglob('*') if p.is_file()}
    before = digest()
    monkeypatch.setenv('METAGUARD_CHECKOUT', str(tmp_path))
    pm.execute_notebook(str(NB), str(tmp_path / 'run.ipynb'), parameters=dict(setting='c', preset='tiny'), kernel_name='python3',
                        progress_bar=False, cwd=str(NB.parent))
    after = digest()
    assert {p: h for p, h in after.items() if p in before} == before
    import nbformat  # the executed notebook names its files relative to the checkout, not the machine's path to it
    printed = ''.join(o.get('text', '') for c in nbformat.read(tmp_path / 'run.ipynb', as_version=4).cells for o in c.get('outputs', []))
    assert 'wrote outputs/figure1/tiny/c.png' in printed and str(tmp_path) not in printed
    assert {str(p) for p in after if p not in before if 'figure1' in str(p)} >= {f'outputs/figure1/tiny/c.{x}' for x in ('png', 'pdf', 'csv')}


@pytest.mark.parametrize('args,msg', [
    (['SETTING=C'], "SETTING='C' is not a Figure 1 panel"), (['PRESET=paperr'], "PRESET='paperr' is not a protocol"),
    (['DEVICE=gpu'], "DEVICE='gpu' is not a device"),
])
def test_make_figure1_refuses_a_bad_parameter_in_one_line_before_anything_runs(args, msg):
    import subprocess
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(['make', '-s', 'figure1', *args], cwd=root, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_figure_check_command_fails_in_one_line():
    import subprocess
    import sys
    r = subprocess.run([sys.executable, '-m', 'metaguard_nb.figure', 'check', '--preset', 'quick', '--device', 'cuda:7'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().startswith('error:') and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_the_report_reads_each_panel_from_the_source_with_most_seeds(tmp_path):
    "CPU and GPU, compiled and eager seeds key apart; a panel is read from one of them, never a mix."
    from metaguard_nb.figure import write_report as report
    from metaguard_nb.report import SOURCES, panel_results, protocol
    from metaguard_nb.guards import GuardConfig
    from metaguard_nb.runner import run
    P = protocol('c', 'tiny')  # 2 seeds x 20 steps
    run('sgd', 'c', steps=20, seeds=[0], store=tmp_path, progress=False, guard=GuardConfig(compile=True))
    run('sgd', 'c', steps=20, seeds=[0, 1], store=tmp_path, progress=False, guard=GuardConfig(compile=False))
    src, got, held = panel_results('c', P, tmp_path)
    assert src == ('cpu', False) and got['sgd']['seeds'] == [0, 1] and held == {('cpu', True): 1, ('cpu', False): 2, ('cuda', True): 0, ('cuda', False): 0}
    run('l2o', 'c', steps=20, seeds=[0], store=tmp_path, progress=False, guard=GuardConfig(compile=True))
    src, got, _ = panel_results('c', P, tmp_path)  # a tie, 2 and 2: the first source
    assert src == SOURCES[0] == ('cpu', True) and sorted(got) == ['l2o', 'sgd'] and got['sgd']['seeds'] == [0]
    assert panel_results('a', P, tmp_path)[:2] == (SOURCES[0], {})
    md = report('tiny', store=tmp_path, out=tmp_path / 'report')
    assert '(c) CPU, compiled step, 2 seed-runs' in md and '(a) CPU, compiled step, 0 seed-runs' in md
    assert 'The store holds 2 more seed-runs of this protocol from the other sources, not read here.' in md
    every = 'SGD, L2O, LGL2O (w/ Update), LGL2O (w/o Update), SMG, AMG, safe AMG 2 seeds each'
    assert (f'Still to run, on the source each panel is read from: (a) {every}; (b) {every}; '
            '(c) SGD, L2O 1 seed each, LGL2O (w/ Update), LGL2O (w/o Update), SMG, AMG, safe AMG 2 seeds each; (d) ' + every + '.') in md
    assert md.rstrip().endswith('Seeds one by one: no seeds of the guarded methods (SMG, AMG, safe AMG) yet.')
    assert (tmp_path / 'report' / 'figure1_seeds.png').exists()


def test_a_panel_the_store_holds_whole_is_read_not_run_again(tmp_path):
    "Every seed of every method in the store from one source (here: the eager step): the notebook reads it, whatever it was asked to run with."
    from metaguard_nb.runner import PROTOCOLS
    REPORT_METHODS = PROTOCOLS['tiny'].methods
    from metaguard_nb.guards import GuardConfig
    from metaguard_nb.runner import run
    store = tmp_path / 'results'
    for m in REPORT_METHODS: run(m, 'b', steps=20, seeds=[0, 1], store=store, progress=False, guard=GuardConfig(compile=False))
    folders = sorted(p.relative_to(store) for p in store.glob('b/*/*') if (p / 'run.json').exists())
    out = run_nb(tmp_path, setting='b', preset='tiny', out_dir=str(tmp_path), compile=1)
    assert 'every seed is in the results store: read, computed on cpu with the eager LSTM step' in out.read_text()
    assert sorted(p.relative_to(store) for p in store.glob('b/*/*') if (p / 'run.json').exists()) == folders  # nothing compiled, nothing new
    df = pd.read_csv(tmp_path / 'b.csv')
    assert set(df['method']) == set(REPORT_METHODS) and (df['n_seeds'] == 2).all()


def test_the_2x2_figure_has_one_legend_naming_every_method_of_any_panel(tmp_path):
    # AMG drawn only in panel (c) must still be named: the legend used to be panel (a)'s alone
    import matplotlib.pyplot as plt
    from metaguard_nb.figure import combined_figure
    curve = lambda m: dict(method=m, step=[0, 10], grad_evals=[0, 1], mean=[2.0, 1.0], ci_low=[1.9, 0.9], ci_high=[2.1, 1.1], n_seeds=[3, 3])
    df = lambda *ms: pd.concat([pd.DataFrame(curve(m)) for m in ms], ignore_index=True)
    fig = combined_figure({'a': df('sgd'), 'c': df('sgd', 'amg')}, tmp_path/'f.png')
    try: assert [[t.get_text() for t in lg.get_texts()] for lg in fig.legends] == [['SGD', 'AMG']]
    finally: plt.close(fig)
    assert (tmp_path/'f.png').exists()
