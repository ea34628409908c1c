"A method and a panel added in one place each (the registries), inside the test only: the runner, the grid's plan and the report take them with no edit to any library file; and each registered variant computes what it says it leaves alone as its twin does."
import functools
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from metaguard_nb.figure import write_report as report
from metaguard_nb.grid import Task, plan
from metaguard_nb.guards import METHODS, GuardConfig, Method, registered, sgd_step
from metaguard_nb.runner import PANELS, PROTOCOLS, VARIANTS, Panel, Protocol, register_panel, run, variant

ROOT = Path(__file__).resolve().parent.parent
HALF = Method('half_sgd', lambda cfg, *a: sgd_step(replace(cfg, lr_eta=cfg.lr_eta / 2), *a), ('sgd',), 'SGD (half step)', 'tab:gray',
              first_batch_only=True)
KW = dict(steps=4, eval_every=2, progress=False, guard=GuardConfig(compile=False))


def test_a_toy_method_runs_through_the_runner_the_grid_plan_and_the_report(tmp_path, monkeypatch):
    with registered(HALF):
        half = run('half_sgd', 'b', seeds=[0, 1], store=tmp_path, **KW)
        sgd = run('sgd', 'b', seeds=[0, 1], store=tmp_path, **KW)
        assert half['record'].shape == (2, 4, 5) and (half['record'][..., 0] == 0).all()
        assert not torch.equal(half['evals'][:, 1:, 0], sgd['evals'][:, 1:, 0])  # it took its own (shorter) steps
        assert (tmp_path / 'b' / 'half_sgd').is_dir()
        assert plan('b', ('half_sgd',), range(3), 4, eval_every=2, guard=KW['guard'], store=tmp_path) == [Task('b', 'half_sgd', (2,))]
        monkeypatch.setitem(PROTOCOLS, 'toy', Protocol(seeds=2, steps=4, eval_every=2, panels=('b',), methods=('sgd', 'half_sgd')))
        monkeypatch.setenv('METAGUARD_COMPILE', '0')
        md = report('toy', store=tmp_path, out=tmp_path / 'report')
    assert 'complete' in md.splitlines()[0] and '| (b) | SGD (half step) |' in md
    assert 'half_sgd' not in METHODS  # registered for the block only
    with pytest.raises(ValueError, match="unknown method 'half_sgd'"):
        run('half_sgd', 'b', seeds=[0], store=tmp_path, **KW)


def test_registering_a_method_does_not_change_what_the_committed_report_counts(tmp_path, monkeypatch):
    committed = ROOT / 'outputs' / 'figure1' / 'paper' / 'report.md'
    if not committed.exists():
        pytest.skip('no paper report committed yet')
    monkeypatch.setenv('METAGUARD_COMPILE', '0')
    with registered(HALF):
        text = report('paper', out=tmp_path).replace(str(tmp_path), 'outputs/figure1/paper')
    assert text == committed.read_text()


def test_a_toy_panel_runs_through_the_runner_the_grid_plan_and_the_report(tmp_path, monkeypatch):
    register_panel('e', Panel('cnn_fashionmnist', 'mlp', 'mnist'))  # the CNN-trained optimizer on the MLP and MNIST
    try:
        r = run('sgd', 'e', seeds=[0], store=tmp_path, **KW)
        assert r['setting'] == 'e' and (tmp_path / 'e' / 'sgd').is_dir()
        assert plan('e', ('sgd', 'l2o'), range(1), 4, eval_every=2, guard=KW['guard'], store=tmp_path) == [Task('e', 'l2o', (0,))]
        run('l2o', 'e', seeds=[0], store=tmp_path, **KW)
        monkeypatch.setitem(PROTOCOLS, 'toy', Protocol(seeds=1, steps=4, eval_every=2, panels=('b', 'c', 'e'), methods=('sgd', 'l2o')))
        monkeypatch.setenv('METAGUARD_COMPILE', '0')
        md = report('toy', store=tmp_path, out=tmp_path / 'report')
        assert '| (e) | L2O |' in md and '(b) SGD, L2O 1 seed each' in md  # three panels laid out; (b) and (c) have no seeds
        assert (tmp_path / 'report' / 'figure1.png').exists() and (tmp_path / 'report' / 'e.csv').exists()
    finally:
        PANELS.pop('e', None)


# Each variant's `unchanged` methods (read from the paper protocol's seeds), and the two twins `gT_lr1` runs under its own key
# (decisions, section 9): SGD computes what `lr1`'s does, L2O what `gT`'s does.
TWINS = [(v.name, m, 'paper') for v in VARIANTS.values() for m in v.unchanged] + [('gT_lr1', 'sgd', 'lr1'), ('gT_lr1', 'l2o', 'gT')]


@functools.cache
def _evals(name, method):
    V = variant(name)
    return run(method, 'c', seeds=[0, 1], store=False, checkpoint=V.checkpoint('c'), **{**KW, 'guard': V.guard_config(compile=False)})['evals']


def _same(a, b):  # equal bit for bit, a NaN (no test-split evaluation at that step) where both have one
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())


@pytest.mark.parametrize('name, method, twin', TWINS)
def test_a_variant_computes_what_its_twin_does_for_a_method_it_leaves_alone(name, method, twin):
    "A method a variant leaves alone computes, on one machine, the same numbers bit for bit under the variant and under its twin; the store's copies are compared in tests/test_paired.py."
    assert _same(_evals(name, method), _evals(twin, method))


def test_the_twins_test_can_tell_a_method_a_variant_changes():
    "The recomputation parts where a variant does change the method: SGD at lambda_eta = 1 against 3, L2O with the g^T optimizers against the shipped ones."
    assert _same(_evals('paper', 'sgd'), _evals('paper', 'sgd').clone())
    assert not _same(_evals('lr1', 'sgd'), _evals('paper', 'sgd'))
    assert not _same(_evals('gT', 'l2o'), _evals('paper', 'l2o'))
