"Guard invariants, counters, seed batching, determinism, resume, NaN safety, the results store and bad input."
import math
from dataclasses import replace

import pytest
import torch

from conftest import interrupted_on_call
from metaguard_nb import guards, lstm, runner, store
from metaguard_nb.data import Sampler, load
from metaguard_nb.guards import (METHODS, GuardConfig, Theta, amg_candidates, choose, get_method,
                                 init_state, lgl2o_candidates, smg_candidates)
from metaguard_nb.lstm import LSTMConfig, init_theta, lstm_step, per_seed, start_state, theta_to, unroll
from metaguard_nb.optimizees import batched_grad, batched_loss, mlp

T = 10
LCFG, GCFG = LSTMConfig(), GuardConfig()
EXPECTED_COUNTS = {  # per step: gradient evaluations, forward evaluations, LSTM steps
    'sgd': [1, 0, 0], 'l2o': [1, 0, 1], 'lgl2o': [1, 2, 1], 'lgl2o_no_update': [1, 2, 1],
    'smg': [3 * T + 1, 2, 3 * T], 'amg': [2 * T + 2, 4, 2 * T], 'safe_amg': [2 * T + 3, 5, 2 * T]}
REPORT_ONLY = {'sgd': 1, 'l2o': 1, 'smg': 1}  # l(eta_new; B_e) computed for the record only, not counted


@pytest.fixture(scope='module')
def setup():
    net = mlp()  # the cheaper optimizee keeps these tests fast; the notebook runs the CNN
    return net, init_theta(LCFG, seed=0), load('mnist')


def same(a, b):
    "Bit for bit, NaN where NaN (the test columns between test evaluations)."
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def batches(split, seeds, k=1):
    sin, se = Sampler(split, seeds), Sampler(split, seeds, stream='eval')
    return [guards.step_batches(sin, se, T) for _ in range(k)]


def run_steps(name, net, theta, split, seeds, k=2, cfg=GCFG):
    st = init_state(name, net.init(seeds), theta)
    recs = []
    for b in batches(split, seeds, k):
        st, r = METHODS[name].step(cfg, LCFG, net, st, b)
        recs.append(r)
    return st, recs


@pytest.mark.parametrize('tile', [None, 8000])
@pytest.mark.parametrize('name', ['l2o', 'lgl2o', 'smg', 'amg'])
def test_compiled_lstm_step_gives_the_eager_numbers(setup, name, tile):
    "torch.compile'd LSTM step, in one graph or in tiles (forward, recomputing backward, no-grad unrolls of 2S seeds) = eager."
    from dataclasses import replace
    net, theta, split = setup
    eager, _ = run_steps(name, net, theta, split, [0, 1], cfg=replace(GCFG, compile=False))
    comp, recs = run_steps(name, net, theta, split, [0, 1], cfg=replace(GCFG, compile=True, tile=tile))
    torch.testing.assert_close(comp.eta, eager.eta, atol=1e-4, rtol=0)
    assert torch.isfinite(comp.eta).all() and (comp.eta != net.init([0, 1])).any()
    if METHODS[name].adapts_theta:
        for k in comp.theta.W:
            torch.testing.assert_close(comp.theta.W[k], eager.theta.W[k], atol=1e-4, rtol=0)


def test_tiled_lstm_step_equals_the_eager_step_in_float64():
    "Tiles of 4,000 coordinates of 2 seeds (the last one ragged), second order: eta and every gradient as the eager step's, to 1e-12."
    net, split = mlp(), load('mnist')
    theta = theta_to(init_theta(LCFG, seed=1), dtype=torch.float64)
    xs, ys = Sampler(split, [0, 1])(3)
    results = []
    from metaguard_nb.compiled import step_function
    for kw in (dict(), dict(step=step_function(True, 8000))):
        W = {k: v.clone().requires_grad_() for k, v in per_seed(theta, 2).W.items()}
        h = theta.h.clone().requires_grad_()
        eta = net.init([0, 1]).double().requires_grad_()
        r = unroll(LCFG, net, eta, Theta(W, h), xs.double(), ys, second_order=True, **kw)
        grads = torch.autograd.grad(r.eta.square().sum() + r.theta.h.sum(), [eta, h, *W.values()])
        results.append((r.eta, grads))
    torch.testing.assert_close(results[1][0], results[0][0], atol=1e-12, rtol=0)
    for a, b in zip(results[1][1], results[0][1]):
        torch.testing.assert_close(a, b, atol=1e-12 * (1 + b.abs().max().item()), rtol=0)


def test_a_bad_tile_fails_in_one_line():
    with pytest.raises(ValueError, match='positive number of rows'):
        GuardConfig(tile=0)


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


def count_calls(monkeypatch, S):
    """Count real seed-evaluations per seed: every seed-batched gradient, every loss (a gradient evaluation when
    autograd later differentiates it, a forward evaluation otherwise) and every LSTM step, divided by S."""
    n = dict(grad=0.0, fwd=0.0, lstm=0.0)

    def grad(opt, eta, x, y):
        n['grad'] += eta.shape[0] / S
        return batched_grad(opt, eta, x, y)

    def loss(opt, eta, x, y):
        out, k = batched_loss(opt, eta, x, y), eta.shape[0] / S
        n['fwd'] += k
        if out.requires_grad:  # moved to the gradient evaluations when a backward pass goes through it
            out.register_hook(lambda g: n.update(fwd=n['fwd'] - k, grad=n['grad'] + k))
        return out

    real_step_for = guards.lstm_step_for

    def step_for(cfg, like):
        f = real_step_for(cfg, like)

        def counted(lcfg, W, g, l, state):
            n['lstm'] += g.shape[0] / S
            return f(lcfg, W, g, l, state)
        return counted
    for mod in (guards, lstm):
        monkeypatch.setattr(mod, 'batched_grad', grad)
        monkeypatch.setattr(mod, 'batched_loss', loss)
    monkeypatch.setattr(guards, 'lstm_step_for', step_for)
    return n


@pytest.mark.parametrize('name', list(METHODS))
def test_counters_match_real_calls(setup, name, monkeypatch):
    "The counters each step reports equal the optimizee and LSTM calls it really made."
    net, theta, split = setup
    seeds = [0, 1]
    st = init_state(name, net.init(seeds), theta)
    bs = batches(split, seeds, 2)
    n = count_calls(monkeypatch, len(seeds))
    for b in bs:
        st, rec = METHODS[name].step(GCFG, LCFG, net, st, b)
    assert rec.counters.tolist() == [EXPECTED_COUNTS[name]] * 2
    assert st.counters.tolist() == [[2 * c for c in EXPECTED_COUNTS[name]]] * 2
    grads, fwds, steps = EXPECTED_COUNTS[name]
    assert n == dict(grad=2 * grads, fwd=2 * (fwds + REPORT_ONLY.get(name, 0)), lstm=2 * steps)
    if name == 'smg':
        assert grads == 31
    if name == 'amg':
        assert grads == 22


def test_counters_with_the_fallback_fitted_on_the_judging_batch(setup, monkeypatch):
    "adapt_batch='eval' reuses line 3's two losses as judges: 2 forward evaluations instead of 4."
    net, theta, split = setup
    st = init_state('amg', net.init([0]), theta)
    b = batches(split, [0])[0]
    n = count_calls(monkeypatch, 1)
    _, rec = METHODS['amg'].step(GuardConfig(adapt_batch='eval'), LCFG, net, st, b)
    assert rec.counters.tolist() == [[2 * T + 2, 2, 2 * T]]
    assert n == dict(grad=2 * T + 2, fwd=2, lstm=2 * T)


@pytest.mark.parametrize('name', list(METHODS))
def test_seed_batching_equals_each_seed_alone(setup, name):
    net, theta, split = setup
    together, _ = run_steps(name, net, theta, split, [0, 1, 2])
    for i, s in enumerate([0, 1, 2]):
        alone, _ = run_steps(name, net, theta, split, [s])
        torch.testing.assert_close(alone.eta[0], together.eta[i], atol=1e-5, rtol=0)
        if METHODS[name].adapts_theta:
            torch.testing.assert_close(alone.theta.h[0], together.theta.h[i], atol=1e-5, rtol=0)


@pytest.mark.parametrize('name', list(METHODS))
def test_two_runs_are_bit_identical(setup, name):
    net, theta, split = setup
    a, ra = run_steps(name, net, theta, split, [4])
    b, rb = run_steps(name, net, theta, split, [4])
    assert torch.equal(a.eta, b.eta) and torch.equal(ra[-1].branch, rb[-1].branch)


def first_finite_min(scores):
    "Index of the first finite minimum of a list of floats; len(scores) when none is finite."
    best = None
    for i, v in enumerate(scores):
        if math.isfinite(v) and (best is None or v < scores[best]):
            best = i
    return len(scores) if best is None else best


@pytest.mark.parametrize('name', ['amg', 'safe_amg'])
def test_amg_keeps_the_candidate_whose_recomputed_loss_is_lowest(setup, name):
    "Each candidate's loss on B_e recomputed on its own; the new eta is the candidate with the first minimum."
    net, theta, split = setup
    seeds = [0, 1, 2, 3, 4, 5]
    cfg = GuardConfig(sgd_candidate=name == 'safe_amg')
    st = init_state(name, net.init(seeds), theta)
    for b in batches(split, seeds, 3):
        c, _ = amg_candidates(cfg, LCFG, net, st, b)
        new, rec = METHODS[name].step(GCFG, LCFG, net, st, b)
        for s in range(len(seeds)):
            scores = [float(batched_loss(net, e[s:s + 1], b.xe[s:s + 1], b.ye[s:s + 1])) for e in c.etas]
            k = first_finite_min(scores)
            assert int(rec.branch[s]) == k
            assert torch.equal(new.eta[s], c.etas[k][s])
        st = new


def test_smg_keeps_the_candidate_whose_recomputed_adapt_objective_is_lowest(setup):
    "L^Adapt of each candidate recomputed by its own unroll; the new eta is the candidate with the lower one."
    net, theta, split = setup
    seeds = [0, 1, 2, 3]
    st = init_state('smg', net.init(seeds), theta)
    for b in batches(split, seeds, 3):
        c = smg_candidates(GCFG, LCFG, net, st, b)
        new, rec = METHODS['smg'].step(GCFG, LCFG, net, st, b)
        scores = [batched_loss(net, unroll(LCFG, net, e, th, b.xs, b.ys).eta, b.xe, b.ye) for e, th in zip(c.etas, c.thetas)]
        for s in range(len(seeds)):
            k = int(rec.branch[s])
            assert torch.equal(new.eta[s], c.etas[k][s])
            assert scores[k][s] <= scores[1 - k][s] + 1e-5  # side by side and alone round differently
        st = new


def test_lgl2o_chooses_argmin_on_the_evaluation_batch(setup):
    net, theta, split = setup
    seeds = [0, 1, 2, 3, 4, 5]
    st = init_state('lgl2o', net.init(seeds), theta)
    b = batches(split, seeds)[0]
    new, rec = METHODS['lgl2o'].step(GCFG, LCFG, net, st, b)
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
    _, rec = METHODS['lgl2o'].step(zero_lr, LCFG, net, st, b)
    assert rec.candidates[0, 0] == rec.candidates[0, 1] and rec.branch.item() == 0


def _nan_theta(theta):
    return Theta({k: torch.full_like(v, math.nan) for k, v in theta.W.items()}, theta.h)


@pytest.mark.parametrize('name', ['lgl2o', 'lgl2o_no_update', 'smg', 'amg', 'safe_amg'])
def test_non_finite_learned_candidate_is_never_chosen(setup, name):
    net, theta, split = setup
    st = init_state(name, net.init([0, 1]), _nan_theta(theta))
    new, rec = METHODS[name].step(GCFG, LCFG, net, st, batches(split, [0, 1])[0])
    assert torch.isfinite(new.eta).all()
    assert (rec.branch != 0).all()


@pytest.mark.parametrize('name', ['lgl2o', 'smg', 'amg', 'safe_amg'])
def test_all_candidates_non_finite_leaves_the_state_unchanged(setup, name):
    net, theta, split = setup
    eta = net.init([0, 1])
    eta[:, 0] = math.inf  # every candidate, including "stay", is non-finite
    st = init_state(name, eta, theta)
    new, rec = METHODS[name].step(GCFG, LCFG, net, st, batches(split, [0, 1])[0])
    assert torch.equal(new.eta, st.eta)
    assert (rec.branch == len(METHODS[name].branches)).all()
    for k in st.theta.W:
        assert torch.equal(new.theta.W[k], st.theta.W[k])


def test_lgl2o_without_update_starts_from_the_meta_trained_memory(setup):
    net, theta, split = setup
    seeds = [0, 1]
    st = init_state('lgl2o_no_update', net.init(seeds), theta)
    for b in batches(split, seeds, 3):
        st, _ = METHODS['lgl2o_no_update'].step(GCFG, LCFG, net, st, b)
        assert st.carry is None  # nothing carried: the next step broadcasts theta.h afresh
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
        prev = st.carry if st.carry is not None else start_state(theta.h, *st.eta.shape)
        _, want = lstm_step(LCFG, theta.W, g, l, prev)
        st, rec = METHODS['lgl2o'].step(GCFG, LCFG, net, st, b)
        for a, w in zip(st.carry, want):
            torch.testing.assert_close(a, w)


def test_amg_takes_plain_sgd_fallback_exactly_when_staying_beats_learning(setup):
    net, theta, split = setup
    seeds = list(range(6))
    big = Theta(dict(theta.W, b_out=theta.W['b_out'] + 5.0), theta.h)  # a learned step that overshoots
    for th in (theta, big):
        st = init_state('amg', net.init(seeds), th)
        b = batches(split, seeds)[0]
        c, plain = amg_candidates(GCFG, LCFG, net, st, b)
        eta_f, theta_f = c.etas[1], c.thetas[1]
        l_now = batched_loss(net, st.eta, b.xs[:, -1], b.ys[:, -1])  # fitted on the last inner batch B_T
        l_learned = batched_loss(net, c.etas[0], b.xs[:, -1], b.ys[:, -1])
        assert torch.equal(plain, l_now <= l_learned)
        g_T, _ = batched_grad(net, st.eta, b.xs[:, -1], b.ys[:, -1])
        unchanged = torch.stack([(theta_f.W[k] == st.theta.W[k]).flatten(1).all(1) for k in st.theta.W], 1).all(1)
        unchanged &= (theta_f.h == st.theta.h).flatten(1).all(1)
        assert torch.equal(unchanged, plain)
        torch.testing.assert_close(eta_f[plain], (st.eta - 3 * g_T)[plain])
        if th is big:
            assert plain.all()


def _ref_weights(opt):
    "The reference optimizer's parameters under theta.W's names (the same order)."
    return dict(zip(['w_ih1', 'w_hh1', 'b_ih1', 'b_hh1', 'w_ih2', 'w_hh2', 'b_ih2', 'b_hh2', 'w_out', 'b_out'], opt.parameters()))


@pytest.mark.parametrize('overshoot', [0.0, 5.0])
@pytest.mark.parametrize('name', ['smg', 'amg'])
def test_fallbacks_equal_plain_autograd_on_one_seed(setup, name, overshoot):
    "Eq. 5 (SMG) and Eq. 6 (AMG) recomputed by plain autograd through nn.LSTMCell on one seed, in float64."
    from metaguard_nb.reference import RefNet, RefOptimizer, ref_unroll
    from metaguard_nb.metatrain import load_checkpoint
    net, _, split = setup
    theta = load_checkpoint('mlp_mnist')[1]  # trained: its unroll beats staying, so both branches of Eq. 6 are met
    th = theta_to(Theta(dict(theta.W, b_out=theta.W['b_out'] + overshoot), theta.h), dtype=torch.float64)
    b = batches(split, [3])[0]
    b = b._replace(xs=b.xs.double(), xe=b.xe.double())
    st = init_state(name, net.init([3]).double(), th)
    if name == 'smg':
        c = smg_candidates(GCFG, LCFG, net, st, b)
    else:
        c, plain = amg_candidates(GCFG, LCFG, net, st, b)
    ref_net, opt = RefNet(net.module, net.loss_fn, dtype=torch.float64), RefOptimizer(LCFG, th.W)
    eta, h = st.eta[0].clone().requires_grad_(), th.h.clone().requires_grad_()
    eta_T, _, _ = ref_unroll(ref_net, opt, eta, h, b.xs[0], b.ys[0])
    x_T, y_T = b.xs[0, -1], b.ys[0, -1]
    objective = ref_net.loss(eta_T, x_T, y_T)  # Eq. 3 on B_T
    if name == 'amg':
        l_now = ref_net.loss(eta, x_T, y_T)
        assert bool(plain[0]) == bool(l_now <= objective)
        if l_now <= objective:
            objective = l_now  # Eq. 6: the gradient of the min is the smaller term's
    params = list(opt.parameters())
    grads = torch.autograd.grad(objective, [eta, h, *params], allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, [eta, h, *params])]
    torch.testing.assert_close(c.etas[1][0], eta.detach() - 3.0 * grads[0], atol=1e-10, rtol=0)
    torch.testing.assert_close(c.thetas[1].h[0], h.detach() - 0.1 * grads[1], atol=1e-10, rtol=0)
    for (k, w), g in zip(_ref_weights(opt).items(), grads[2:]):
        torch.testing.assert_close(c.thetas[1].W[k][0], w.detach() - 0.1 * g, atol=1e-10, rtol=0)
    if name == 'amg':
        assert bool(plain[0]) == (overshoot > 0)  # the overshooting optimizer sends AMG to plain SGD, the trained one not


@pytest.mark.parametrize('bad', [math.nan, math.inf])
def test_amg_non_finite_unroll_sends_the_fallback_to_plain_sgd(setup, bad):
    "A batch that blows up the learned unroll of seed 1: its l(eta_T) is not finite, min(l(eta), NaN) = l(eta)."
    net, theta, split = setup
    seeds = [0, 1, 2]
    st = init_state('amg', net.init(seeds), theta)
    clean = batches(split, seeds)[0]
    xs = clean.xs.clone()
    xs[1, 0] = bad  # seed 1's first inner batch
    b = clean._replace(xs=xs)
    c, plain = amg_candidates(GCFG, LCFG, net, st, b)
    assert not torch.isfinite(c.etas[0][1]).all()  # the learned unroll of seed 1 blew up
    assert bool(plain[1])
    g_T, _ = batched_grad(net, st.eta, b.xs[:, -1], b.ys[:, -1])
    torch.testing.assert_close(c.etas[1][1], st.eta[1] - 3 * g_T[1])
    for k in st.theta.W:
        assert torch.equal(c.thetas[1].W[k][1], st.theta.W[k][1])
    new, rec = METHODS['amg'].step(GCFG, LCFG, net, st, b)
    assert torch.isfinite(new.eta).all() and all(torch.isfinite(w).all() for w in new.theta.W.values())
    assert int(rec.branch[1]) in (1, 3)  # the plain-SGD fallback or staying: the only finite candidates
    clean_new, _ = METHODS['amg'].step(GCFG, LCFG, net, st, clean)
    for s in (0, 2):  # the other seeds do not see seed 1's NaN
        assert torch.equal(new.eta[s], clean_new.eta[s])


@pytest.mark.parametrize('bad', [math.nan, math.inf])
@pytest.mark.parametrize('name', ['smg', 'amg', 'safe_amg'])
def test_a_candidate_with_a_non_finite_theta_is_never_chosen(setup, name, bad):
    "Seed 1's LSTM weights are not finite: every candidate of seed 1 carries them, so none is chosen and its state is kept."
    net, theta, split = setup
    seeds = [0, 1, 2]
    st = init_state(name, net.init(seeds), theta)
    W = {k: v.clone() for k, v in st.theta.W.items()}
    W['w_hh1'][1, 0, 0] = bad
    st = st._replace(theta=Theta(W, st.theta.h))
    new, rec = METHODS[name].step(GCFG, LCFG, net, st, batches(split, seeds)[0])
    assert int(rec.branch[1]) == len(METHODS[name].branches)
    assert torch.equal(new.eta[1], st.eta[1])
    assert all(torch.isfinite(new.theta.W[k][s]).all() for k in W for s in (0, 2))
    assert (rec.branch[[0, 2]] < len(METHODS[name].branches)).all()


def test_unknown_method_lists_valid_names():
    with pytest.raises(ValueError, match="use one of 'sgd', 'l2o'"):
        get_method('adam')


@pytest.mark.parametrize('kwargs,match', [
    (dict(method='adam'), "use one of 'sgd'"), (dict(steps=0), 'positive integer'), (dict(steps=-3), 'positive integer'),
    (dict(seeds=[]), 'seeds is empty'), (dict(setting='e'), 'use one of a, b, c, d'),
    (dict(device='cuda:7'), 'does not exist here'), (dict(device='banana'), "use 'cpu'"),
    (dict(setting='d', checkpoint='cnn_fashionmnist'), "net='cnn', expected 'mlp'"),
])
def test_runner_bad_input_fails_before_compute(kwargs, match, tmp_path):
    args = dict(method='amg', setting='c', steps=2, seeds=[0], store=tmp_path, progress=False) | kwargs
    with pytest.raises(ValueError, match=match):
        runner.run(**args)
    assert not any(tmp_path.rglob('*.pt'))


def test_runner_resume_equals_uninterrupted(tmp_path, monkeypatch):
    kw = dict(setting='b', steps=6, seeds=[0, 1], eval_every=2, save_every=2, progress=False)
    full = runner.run('lgl2o', store=tmp_path / 'full', **kw)
    real = METHODS['lgl2o']
    monkeypatch.setitem(guards.METHODS, 'lgl2o', replace(real, step=interrupted_on_call(4, real.step)))
    with pytest.raises(KeyboardInterrupt):
        runner.run('lgl2o', store=tmp_path / 'resumed', **kw)
    monkeypatch.setitem(guards.METHODS, 'lgl2o', real)
    assert any((tmp_path / 'resumed' / 'partial').rglob('seeds0-1_6.pt'))
    resumed = runner.run('lgl2o', store=tmp_path / 'resumed', **kw)
    assert torch.equal(full['record'], resumed['record'])
    same(full['evals'], resumed['evals'])
    assert full['candidates'].shape == (2, 6, 2) and torch.equal(full['candidates'], resumed['candidates'])  # the evidence survives a resume


def test_runner_reuses_cached_seeds(tmp_path, monkeypatch):
    kw = dict(setting='b', steps=3, eval_every=1, progress=False, store=tmp_path)
    a = runner.run('sgd', seeds=[0, 1], **kw)

    def recompute(*args, **kwargs):
        raise AssertionError('seed 1 was computed again: the store was missed')
    monkeypatch.setitem(guards.METHODS, 'sgd', replace(METHODS['sgd'], step=recompute))
    b = runner.run('sgd', seeds=[1], **kw)  # from the store of the first call
    assert torch.equal(a['record'][1], b['record'][0])


def test_guard_config_rejects_an_unknown_adapt_batch():
    with pytest.raises(ValueError, match="use 'inner'"):
        GuardConfig(adapt_batch='same')
    with pytest.raises(ValueError, match='positive integer'):
        GuardConfig(eval_batch_size=0)


def test_results_of_another_numerics_version_are_not_reused(tmp_path, monkeypatch):
    kw = dict(setting='b', steps=2, eval_every=1, progress=False, store=tmp_path, seeds=[0])
    runner.run('sgd', **kw)
    monkeypatch.setattr(store, 'NUMERICS', store.NUMERICS + 1)
    calls = {'n': 0}
    real = METHODS['sgd']

    def counted(*a, **k):
        calls['n'] += 1
        return real.step(*a, **k)
    monkeypatch.setitem(guards.METHODS, 'sgd', replace(real, step=counted))
    runner.run('sgd', **kw)
    assert calls['n'] == 2


def test_an_interrupted_evaluation_does_not_replay_a_step(tmp_path, monkeypatch):
    "Ctrl-C during the evaluation after step 2: the resumed run equals an uninterrupted one, no step recorded twice."
    kw = dict(setting='b', steps=6, seeds=[0, 1], eval_every=2, save_every=2, progress=False)
    full = runner.run('lgl2o', store=tmp_path / 'full', **kw)
    real = runner.evaluate
    monkeypatch.setattr(runner, 'evaluate', interrupted_on_call(2, real))  # the evaluation after step 2 (the first is step 0's)
    with pytest.raises(KeyboardInterrupt):
        runner.run('lgl2o', store=tmp_path / 'resumed', **kw)
    monkeypatch.setattr(runner, 'evaluate', real)
    resumed = runner.run('lgl2o', store=tmp_path / 'resumed', **kw)
    assert torch.equal(full['record'], resumed['record'])
    same(full['evals'], resumed['evals'])


def test_a_longer_stored_run_serves_only_runs_whose_evaluations_it_holds(tmp_path):
    "A 6-step seed (evaluations at 0, 2, 4, 6) cannot give a 5-step run's evaluation at step 5; it can give 4 steps."
    kw = dict(setting='b', seeds=[0], eval_every=2, progress=False)
    runner.run('sgd', steps=6, store=tmp_path, **kw)
    for steps in (5, 4):
        stored = runner.run('sgd', steps=steps, store=tmp_path, **kw)
        fresh = runner.run('sgd', steps=steps, store=False, **kw)
        assert stored['eval_steps'].tolist() == fresh['eval_steps'].tolist()
        same(stored['evals'], fresh['evals'])
        assert torch.equal(stored['record'], fresh['record'])


def test_a_run_that_keeps_nothing_writes_no_file(tmp_path, monkeypatch):
    "store=False: not even the resume state of an interrupted run is written."
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(store, 'store_dir', lambda: tmp_path / 'default_store')
    monkeypatch.setitem(guards.METHODS, 'sgd', replace(METHODS['sgd'], step=interrupted_on_call(3, METHODS['sgd'].step)))
    with pytest.raises(KeyboardInterrupt):
        runner.run('sgd', 'b', steps=4, seeds=[0], eval_every=2, save_every=2, store=False, progress=False)
    assert not any(tmp_path.rglob('*'))


def test_the_store_holds_one_small_file_per_seed_and_its_key(tmp_path):
    r = runner.run('sgd', 'b', steps=4, seeds=[0, 3], eval_every=2, store=tmp_path, progress=False)
    folder = tmp_path / 'b' / 'sgd' / store.key_hash(r['key'])
    assert sorted(f.name for f in folder.iterdir()) == ['run.json', 'seed0_4.npz', 'seed3_4.npz']
    assert r['key']['numerics'] == guards.NUMERICS and r['key']['device'] == 'cpu' and len(r['key']['checkpoint_weights']) == 12
    back = store.load_seed(store.seed_file(folder, 3, 4))
    assert torch.equal(back['record'], r['record'][1])
    same(back['evals'], r['evals'][1])


def test_each_length_of_a_seed_is_its_own_file_and_none_is_replaced(tmp_path):
    kw = dict(setting='b', seeds=[0], eval_every=2, progress=False, store=tmp_path)
    long = runner.run('sgd', steps=6, **kw)
    folder = tmp_path / 'b' / 'sgd' / store.key_hash(long['key'])
    before = store.seed_file(folder, 0, 6).read_bytes()
    runner.run('sgd', steps=5, **kw)  # not served by the 6-step seed (no evaluation at step 5): computed, stored beside it
    runner.run('sgd', steps=6, **kw)  # read, not written again
    assert store.stored_lengths(folder, 0) == [5, 6] and store.seed_file(folder, 0, 6).read_bytes() == before


def test_backtrack_off_by_default_keeps_every_key_and_is_refused_out_of_range():
    "A new option enters the store's key only where it differs from its default: every committed result keeps its folder."
    assert 'backtrack' not in guards.guard_key(GuardConfig()) and guards.guard_key(GuardConfig(backtrack=0.5))['backtrack'] == 0.5
    for bad in (0.0, 1.5, -1):
        with pytest.raises(ValueError, match=r'use a factor in \(0, 1\]'):
            GuardConfig(backtrack=bad)


def test_backtracking_fallback_recomputed(setup):
    "The fallback's step is lambda_eta times each seed's factor; the factor halves where 'stay' won and doubles (up to 1) elsewhere."
    net, theta, split = setup
    seeds, cfg = [0, 1, 2, 3], GuardConfig(backtrack=0.5, lr_eta=30.0)  # a step too long: 'stay' wins somewhere
    st = init_state('amg', net.init(seeds), theta)
    scales = []
    for b in batches(split, seeds, 4):
        s = st.scale if st.scale is not None else torch.ones(len(seeds))
        c, plain = amg_candidates(cfg, LCFG, net, st, b)
        g, _ = batched_grad(net, st.eta, b.xs[:, -1], b.ys[:, -1])
        for i in range(len(seeds)):  # where line 3 is plain SGD: eta - lambda_eta * s * grad l(eta; B_T)
            if plain[i]: torch.testing.assert_close(c.etas[1][i], st.eta[i] - 30.0 * s[i] * g[i], rtol=1e-5, atol=1e-5)
        new, rec = METHODS['amg'].step(cfg, LCFG, net, st, b)
        stayed = rec.branch == len(METHODS['amg'].branches) - 1
        assert torch.equal(new.scale, torch.where(stayed, s * 0.5, (s * 2).clamp(max=1.0)))
        scales.append(new.scale)
        st = new
    assert any((sc < 1).any() for sc in scales)  # the test exercised a stay


def test_adapt_waiting_off_by_default_keeps_every_key_and_is_refused_unless_bool():
    assert 'adapt_waiting' not in guards.guard_key(GuardConfig()) and guards.guard_key(GuardConfig(adapt_waiting=True))['adapt_waiting'] is True
    with pytest.raises(ValueError, match='use True or False'):
        GuardConfig(adapt_waiting=1)


def test_adapt_while_waiting_recomputed(setup):
    "Under adapt_waiting, where 'stay' wins the seed keeps eta and takes theta - lambda_theta grad_theta l(eta_T; B_T), recomputed here one seed at a time; elsewhere the step is the paper's AMG's."
    net, theta, split = setup
    seeds = [0, 1, 2, 3]
    big = Theta(dict(theta.W, b_out=theta.W['b_out'] + 5.0), theta.h)  # a learned step that overshoots ...
    cfg = GuardConfig(adapt_waiting=True, lr_eta=30.0, compile=False)  # ... and a fallback step too long: 'stay' wins
    paper = replace(cfg, adapt_waiting=False)
    st, stays = init_state('amg', net.init(seeds), big), 0
    for b in batches(split, seeds, 3):
        new, rec = METHODS['amg'].step(cfg, LCFG, net, st, b)
        ref, ref_rec = METHODS['amg'].step(paper, LCFG, net, st, b)
        assert torch.equal(rec.branch, ref_rec.branch)  # the candidates' etas and losses are the paper's
        torch.testing.assert_close(new.eta, ref.eta, rtol=0, atol=0)
        for i in range(len(seeds)):
            one = lambda t: t[i:i + 1]
            if rec.branch[i] == len(METHODS['amg'].branches) - 1:  # 'stay'
                stays += 1
                W = {k: one(v).detach().requires_grad_() for k, v in st.theta.W.items()}
                h = one(st.theta.h).detach().requires_grad_()
                r = unroll(LCFG, net, one(st.eta), Theta(W, h), one(b.xs), one(b.ys))
                l = batched_loss(net, r.eta, one(b.xs)[:, -1], one(b.ys)[:, -1])
                grads = torch.autograd.grad(l.sum(), [*W.values(), h])
                for (k, w), g in zip(W.items(), grads):
                    torch.testing.assert_close(one(new.theta.W[k]), w - 0.1 * g)
                torch.testing.assert_close(one(new.theta.h), h - 0.1 * grads[-1])
                assert not torch.equal(one(new.theta.h), one(st.theta.h))  # the optimizer moved while eta waited
            else:
                for k in st.theta.W:
                    torch.testing.assert_close(one(new.theta.W[k]), one(ref.theta.W[k]), rtol=0, atol=0)
        st = new
    assert stays > 0  # the test exercised a stay
