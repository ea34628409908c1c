"Guard invariants, counters, seed batching, determinism, resume, the quadratic check and bad input."
import math

import pytest
import torch

from metaguard_nb import guards
from metaguard_nb.data import Sampler, load
from metaguard_nb.guards import (BRANCHES, METHODS, GuardConfig, Theta, amg_candidates, choose,
                                 convergence_trace, init_state, lgl2o_candidates, method_step)
from metaguard_nb.lstm import LSTMConfig, init_theta, lstm_step, start_state, unroll
from metaguard_nb.optimizees import batched_grad, batched_loss, mlp
from metaguard_nb import runner

T = 10
LCFG, GCFG = LSTMConfig(), GuardConfig()
EXPECTED_COUNTS = {  # per step: gradient evaluations, forward evaluations, LSTM steps
    'sgd': [1, 0, 0], 'l2o': [1, 0, 1], 'lgl2o': [1, 2, 1], 'lgl2o_no_update': [1, 2, 1],
    'smg': [3 * T + 1, 2, 3 * T], 'amg': [2 * T + 2, 2, 2 * T], 'safe_amg': [2 * T + 3, 3, 2 * T]}


@pytest.fixture(scope='module')
def setup():
    net = mlp()  # the cheaper optimizee keeps these tests fast; the notebook runs the CNN
    return net, init_theta(LCFG, seed=0), load('mnist')


def batches(split, seeds, k=1):
    sin, se = Sampler(split, seeds), Sampler(split, seeds, stream='eval')
    return [guards.step_batches(sin, se, T) for _ in range(k)]


def run_steps(name, net, theta, split, seeds, k=2, cfg=GCFG):
    st = init_state(name, net.init(seeds), theta)
    recs = []
    for b in batches(split, seeds, k):
        st, r = METHODS[name](cfg, LCFG, net, st, b)
        recs.append(r)
    return st, recs


@pytest.mark.parametrize('name', ['l2o', 'lgl2o', 'smg', 'amg'])
def test_compiled_lstm_step_gives_the_eager_numbers(setup, name):
    "torch.compile'd LSTM step (forward, backward, no-grad unrolls of 2S seeds) = eager, on two steps."
    from dataclasses import replace
    net, theta, split = setup
    eager, _ = run_steps(name, net, theta, split, [0, 1], cfg=replace(GCFG, compile=False))
    comp, recs = run_steps(name, net, theta, split, [0, 1], cfg=replace(GCFG, compile=True))
    torch.testing.assert_close(comp.eta, eager.eta, atol=1e-4, rtol=0)
    assert torch.isfinite(comp.eta).all() and (comp.eta != net.init([0, 1])).any()


def test_compile_switch_reads_the_environment(monkeypatch):
    monkeypatch.setenv('METAGUARD_COMPILE', '0')
    assert GuardConfig().compile is False
    monkeypatch.setenv('METAGUARD_COMPILE', '1')
    assert GuardConfig().compile is True


def test_choose_first_finite_minimum_and_none_finite():
    nan, inf = math.nan, math.inf
    losses = [torch.tensor([1., 2., nan, nan, 0.5]), torch.tensor([1., 1., 3., inf, 0.5])]
    etas = [torch.zeros(5, 2), torch.zeros(5, 2)]
    etas[1][4, 0] = nan  # finite loss, non-finite parameters: never chosen
    assert choose(losses, etas).tolist() == [0, 1, 1, 2, 0]


@pytest.mark.parametrize('name', list(METHODS))
def test_counters_match_analytic_counts(setup, name):
    net, theta, split = setup
    st, recs = run_steps(name, net, theta, split, [0, 1])
    assert recs[-1].counters.tolist() == [EXPECTED_COUNTS[name]] * 2
    assert st.counters.tolist() == [[2 * c for c in EXPECTED_COUNTS[name]]] * 2


@pytest.mark.parametrize('name', list(METHODS))
def test_seed_batching_equals_each_seed_alone(setup, name):
    net, theta, split = setup
    together, _ = run_steps(name, net, theta, split, [0, 1, 2])
    for i, s in enumerate([0, 1, 2]):
        alone, _ = run_steps(name, net, theta, split, [s])
        torch.testing.assert_close(alone.eta[0], together.eta[i], atol=1e-5, rtol=0)
        if name in guards.ADAPTING:
            torch.testing.assert_close(alone.theta.h[0], together.theta.h[i], atol=1e-5, rtol=0)


@pytest.mark.parametrize('name', list(METHODS))
def test_two_runs_are_bit_identical(setup, name):
    net, theta, split = setup
    a, ra = run_steps(name, net, theta, split, [4])
    b, rb = run_steps(name, net, theta, split, [4])
    assert torch.equal(a.eta, b.eta) and torch.equal(ra[-1].branch, rb[-1].branch)


@pytest.mark.parametrize('name', ['lgl2o', 'lgl2o_no_update', 'smg', 'amg', 'safe_amg'])
def test_guard_keeps_the_candidate_with_the_lowest_loss(setup, name):
    net, theta, split = setup
    seeds = [0, 1, 2, 3]
    st, recs = run_steps(name, net, theta, split, seeds, k=3)
    r = recs[-1]
    first_min = r.candidates.argmin(1)  # torch.argmin returns the first minimum: the documented tie order
    assert torch.equal(r.branch, first_min)
    assert r.candidates.shape[1] == len(BRANCHES[name])


def test_lgl2o_chooses_argmin_on_the_evaluation_batch(setup):
    net, theta, split = setup
    seeds = [0, 1, 2, 3, 4, 5]
    st = init_state('lgl2o', net.init(seeds), theta)
    b = batches(split, seeds)[0]
    new, rec = METHODS['lgl2o'](GCFG, LCFG, net, st, b)
    # recompute both candidates independently
    g, l = batched_grad(net, st.eta, b.xs[:, 0], b.ys[:, 0])
    u, _ = lstm_step(LCFG, theta.W, g, l, start_state(theta.h, *st.eta.shape))
    ll, ls = batched_loss(net, st.eta + u, b.xe, b.ye), batched_loss(net, st.eta - 3 * g, b.xe, b.ye)
    want = torch.where((ll <= ls)[:, None], st.eta + u, st.eta - 3 * g)
    torch.testing.assert_close(new.eta, want)
    assert torch.equal(rec.branch, (ll > ls).long())


def test_lgl2o_ties_go_to_the_learned_candidate(setup):
    net, theta, split = setup
    st = init_state('lgl2o', net.init([0]), theta)
    b = batches(split, [0])[0]
    zero_lr = GuardConfig(lr_eta=0.0)  # SGD candidate = eta; make the learned step zero too
    W = dict(theta.W, w_out=torch.zeros_like(theta.W['w_out']), b_out=torch.zeros_like(theta.W['b_out']))
    st = st._replace(theta=Theta(W, theta.h))
    _, rec = METHODS['lgl2o'](zero_lr, LCFG, net, st, b)
    assert rec.candidates[0, 0] == rec.candidates[0, 1] and rec.branch.item() == 0


def _nan_theta(theta):
    return Theta({k: torch.full_like(v, math.nan) for k, v in theta.W.items()}, theta.h)


@pytest.mark.parametrize('name', ['lgl2o', 'lgl2o_no_update', 'smg', 'amg', 'safe_amg'])
def test_non_finite_learned_candidate_is_never_chosen(setup, name):
    net, theta, split = setup
    st = init_state(name, net.init([0, 1]), _nan_theta(theta))
    new, rec = METHODS[name](GCFG, LCFG, net, st, batches(split, [0, 1])[0])
    assert torch.isfinite(new.eta).all()
    assert (rec.branch != 0).all()


@pytest.mark.parametrize('name', ['lgl2o', 'smg', 'amg', 'safe_amg'])
def test_all_candidates_non_finite_leaves_the_state_unchanged(setup, name):
    net, theta, split = setup
    eta = net.init([0, 1])
    eta[:, 0] = math.inf  # every candidate, including "stay", is non-finite
    st = init_state(name, eta, theta)
    new, rec = METHODS[name](GCFG, LCFG, net, st, batches(split, [0, 1])[0])
    assert torch.equal(new.eta, st.eta)
    assert (rec.branch == len(BRANCHES[name])).all()
    for k in st.theta.W:
        assert torch.equal(new.theta.W[k], st.theta.W[k])


def test_lgl2o_without_update_starts_from_the_meta_trained_memory(setup):
    net, theta, split = setup
    seeds = [0, 1]
    st = init_state('lgl2o_no_update', net.init(seeds), theta)
    for b in batches(split, seeds, 3):
        st, _ = METHODS['lgl2o_no_update'](GCFG, LCFG, net, st, b)
        assert st.lstm is None  # nothing carried: the next step broadcasts theta.h afresh
    # and the step's learned candidate equals one LSTM step from the broadcast memory
    b = batches(split, seeds)[0]
    c, _ = lgl2o_candidates(GCFG, LCFG, net, st, b, update=False)
    g, l = batched_grad(net, st.eta, b.xs[:, 0], b.ys[:, 0])
    u, _ = lstm_step(LCFG, theta.W, g, l, start_state(theta.h, *st.eta.shape))
    torch.testing.assert_close(c.etas[0], st.eta + u)


def test_lgl2o_with_update_carries_the_learned_state_whoever_won(setup):
    net, theta, split = setup
    seeds = [0, 1, 2, 3]
    st = init_state('lgl2o', net.init(seeds), theta)
    for b in batches(split, seeds, 3):
        g, l = batched_grad(net, st.eta, b.xs[:, 0], b.ys[:, 0])
        prev = st.lstm if st.lstm is not None else start_state(theta.h, *st.eta.shape)
        _, want = lstm_step(LCFG, theta.W, g, l, prev)
        st, rec = METHODS['lgl2o'](GCFG, LCFG, net, st, b)
        for a, w in zip(st.lstm, want):
            torch.testing.assert_close(a, w)


def test_amg_takes_plain_sgd_fallback_exactly_when_staying_beats_learning(setup):
    net, theta, split = setup
    seeds = list(range(6))
    big = Theta(dict(theta.W, b_out=theta.W['b_out'] + 5.0), theta.h)  # a learned step that overshoots
    for th in (theta, big):
        st = init_state('amg', net.init(seeds), th)
        b = batches(split, seeds)[0]
        c, (l_now, l_learned) = amg_candidates(GCFG, LCFG, net, st, b)
        eta_f, theta_f = c.etas[1], c.thetas[1]
        sgd_branch = l_now <= l_learned
        g_e, _ = batched_grad(net, st.eta, b.xe, b.ye)
        unchanged = torch.stack([(theta_f.W[k] == st.theta.W[k]).flatten(1).all(1) for k in st.theta.W], 1).all(1)
        unchanged &= (theta_f.h == st.theta.h).flatten(1).all(1)
        assert torch.equal(unchanged, sgd_branch)
        torch.testing.assert_close(eta_f[sgd_branch], (st.eta - 3 * g_e)[sgd_branch])
        if th is big:
            assert sgd_branch.all()


def test_safe_amg_satisfies_the_gradient_descent_bound_and_converges():
    theta = init_theta(LCFG, seed=0)
    tr = convergence_trace('safe_amg', theta, LCFG, steps=120, seeds=range(3))
    assert (tr['next'] <= tr['gd'] + 1e-6 * tr['gd'].abs().clamp_min(1e-12)).all()
    assert tr['next'][:, -1].max() < 1e-8  # l* = 0


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="use one of 'sgd', 'l2o'"):
        method_step('adam')


@pytest.mark.parametrize('kwargs,match', [
    (dict(method='adam'), "use one of 'sgd'"), (dict(steps=0), 'positive integer'), (dict(steps=-3), 'positive integer'),
    (dict(seeds=[]), 'seeds is empty'), (dict(setting='e'), 'use one of a, b, c, d'),
    (dict(device='cuda:7'), 'does not exist here'), (dict(device='banana'), "use 'cpu'"),
    (dict(setting='d', checkpoint='cnn_fashionmnist'), "net='cnn', expected 'mlp'"),
])
def test_runner_bad_input_fails_before_compute(kwargs, match, tmp_path):
    args = dict(method='amg', setting='c', steps=2, seeds=[0], cache=tmp_path, progress=False) | kwargs
    with pytest.raises(ValueError, match=match):
        runner.run(**args)
    assert not any(tmp_path.rglob('*.pt'))


def test_runner_resume_equals_uninterrupted(tmp_path, monkeypatch):
    kw = dict(setting='b', steps=6, seeds=[0, 1], eval_every=2, save_every=2, progress=False)
    full = runner.run('lgl2o', cache=tmp_path / 'full', **kw)
    real, calls = METHODS['lgl2o'], {'n': 0}

    def flaky(*a, **k):
        calls['n'] += 1
        if calls['n'] == 4:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setitem(guards.METHODS, 'lgl2o', flaky)
    with pytest.raises(KeyboardInterrupt):
        runner.run('lgl2o', cache=tmp_path / 'resumed', **kw)
    monkeypatch.setitem(guards.METHODS, 'lgl2o', real)
    assert any((tmp_path / 'resumed').rglob('partial_*.pt'))
    resumed = runner.run('lgl2o', cache=tmp_path / 'resumed', **kw)
    assert torch.equal(full['record'], resumed['record'])
    assert torch.equal(full['evals'], resumed['evals'])


def test_runner_reuses_cached_seeds(tmp_path):
    kw = dict(setting='b', steps=3, eval_every=1, progress=False, cache=tmp_path)
    a = runner.run('sgd', seeds=[0, 1], **kw)
    b = runner.run('sgd', seeds=[1], **kw)  # from the cache of the first call
    assert torch.equal(a['record'][1], b['record'][0])
