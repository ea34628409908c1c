"The optimizees, the LSTM optimizer, the unroll and the shipped checkpoints."
import math
from pathlib import Path

import pytest
import torch
from conftest import interrupted_on_call

from metaguard_nb.data import Sampler, load
from metaguard_nb.lstm import LSTMConfig, Theta, init_theta, preprocess, theta_to, unroll
from metaguard_nb.metatrain import SETTINGS, checkpoint_dir, load_checkpoint, monitor_set, sgd_run
from metaguard_nb.optimizees import Optimizee, batched_loss, cnn, mlp, optimizee


def test_parameter_counts():
    assert mlp().m == 15910 and cnn().m == 7306


def test_unknown_optimizee_lists_names():
    with pytest.raises(ValueError, match="use one of 'mlp', 'cnn'"):
        optimizee('resnet')


@pytest.mark.parametrize('x', [0.0, math.exp(-10) * 1.0001, -math.exp(-10) * 1.0001, math.exp(-10) * 0.9999,
                               -math.exp(-10) * 0.9999, 1e8, -1e8, -0.5])
def test_preprocess_matches_formula(x):
    p = 10.0
    want = (math.log(abs(x)) / p, math.copysign(1.0, x)) if abs(x) >= math.exp(-p) else (-1.0, math.exp(p) * x)
    got = preprocess(torch.tensor([x], dtype=torch.float64), p)[0].tolist()
    assert got == pytest.approx(want, abs=1e-12)


@pytest.mark.parametrize('make,data', [(mlp, 'mnist'), (cnn, 'fashionmnist')])
def test_seed_batching_equals_each_seed_alone(make, data):
    net, cfg = make(), LSTMConfig()
    th = init_theta(cfg, seed=3)
    seeds = [5, 6, 7]
    xs, ys = Sampler(load(data), seeds)(10)
    eta = net.init(seeds)
    together = unroll(cfg, net, eta, th, xs, ys)
    for s in range(3):
        alone = unroll(cfg, net, eta[s:s + 1], th, xs[s:s + 1], ys[s:s + 1])
        torch.testing.assert_close(alone.eta[0], together.eta[s], atol=1e-5, rtol=0)
        torch.testing.assert_close(alone.theta.h[0], together.theta.h[s], atol=1e-5, rtol=0)


def test_unroll_is_deterministic():
    net, cfg = cnn(), LSTMConfig()
    xs, ys = Sampler(load('fashionmnist'), [0, 1])(10)
    runs = [unroll(cfg, net, net.init([0, 1]), init_theta(cfg), xs, ys).eta for _ in range(2)]
    assert torch.equal(*runs)


@pytest.mark.parametrize('second_order', [False, True])
def test_meta_gradient_matches_finite_differences(second_order):
    # first order is exact where the dropped Hessian terms vanish: a linear loss, gradient-only inputs
    cfg = LSTMConfig(hidden=4, use_loss_input=second_order)
    g = torch.Generator().manual_seed(2)
    loss = torch.nn.functional.cross_entropy if second_order else (lambda out, y: out.sum() / len(y))
    problem = Optimizee(torch.nn.Linear(3, 2), loss_fn=loss)  # 8 parameters, 4 examples, two steps
    eta = problem.init([2]).double()
    x, y = torch.randn(1, 2, 4, 3, generator=g, dtype=torch.float64), torch.randint(2, (1, 2, 4), generator=g)
    th = theta_to(init_theta(cfg, seed=2), dtype=torch.float64)

    def f(eta, w_ih1, b_out, h):
        W = dict(th.W, w_ih1=w_ih1, b_out=b_out)
        return unroll(cfg, problem, eta, Theta(W, h), x, y, second_order=second_order, meta_loss=True).losses.mean()
    args = tuple(t.clone().requires_grad_() for t in (eta, th.W['w_ih1'], th.W['b_out'], th.h + 0.05))
    assert torch.autograd.gradcheck(f, args)


def test_checkpoint_refuses_wrong_setting():
    path = checkpoint_dir() / 'mlp_mnist.pt'
    if not path.exists():
        pytest.skip('mlp_mnist checkpoint not shipped')
    with pytest.raises(ValueError, match="net='mlp', expected 'cnn'"):
        load_checkpoint(path, expect={'net': 'cnn'})


@pytest.mark.parametrize('name', list(SETTINGS))
def test_shipped_checkpoints_match_their_settings(name):
    cfg, theta, ck = load_checkpoint(name, expect=SETTINGS[name].to_dict())
    assert len(ck['curve']) == cfg.windows and all(math.isfinite(c) for c in ck['curve'][-50:])
    assert theta.h.shape == (4, cfg.hidden)


def test_shipped_cnn_optimizer_beats_sgd_early():
    "Measured, not assumed: L2O vs SGD (lr 3) after 100 steps on its own training setting, 5 seeds."
    cfg, theta, _ = load_checkpoint('cnn_fashionmnist')
    problem, seeds = cfg.optimizee(), [1000 + s for s in range(5)]
    xs, ys = Sampler(load(cfg.dataset), seeds)(100)
    eta0 = problem.init(seeds)
    mx, my = monitor_set(cfg.dataset, seeds)
    with torch.no_grad():
        l2o = batched_loss(problem, unroll(cfg.lstm, problem, eta0, theta, xs, ys).eta, mx, my)
    sgd = batched_loss(problem, sgd_run(problem, eta0, xs, ys, lr=3.0), mx, my)
    assert l2o.mean() < sgd.mean(), f'L2O {l2o.mean():.4f} vs SGD {sgd.mean():.4f}'


def test_meta_training_interrupted_mid_window_resumes_to_the_same_result(tmp_path, monkeypatch):
    "Ctrl-C inside window 3 (after its batches were drawn): the resumed run equals an uninterrupted one, bit for bit."
    from dataclasses import replace
    from metaguard_nb import metatrain
    tiny = replace(SETTINGS['mlp_mnist'], windows=6, horizon=20, trajectories=2)
    th_a, curve_a = metatrain.meta_train(tiny, tmp_path / 'a.pt', progress=False)
    real = metatrain.window_loss
    monkeypatch.setattr(metatrain, 'window_loss', interrupted_on_call(4, real))
    with pytest.raises(KeyboardInterrupt):
        metatrain.meta_train(tiny, tmp_path / 'b.pt', progress=False, save_every=100)
    monkeypatch.setattr(metatrain, 'window_loss', real)
    th_b, curve_b = metatrain.meta_train(tiny, tmp_path / 'b.pt', progress=False)
    assert curve_a == curve_b
    assert torch.equal(th_a.h, th_b.h) and all(torch.equal(th_a.W[k], th_b.W[k]) for k in th_a.W)


def test_make_checkpoints_fails_when_a_meta_training_fails():
    "Both settings train side by side; a failure in either fails the target (it used to wait and return 0), in one line each."
    import subprocess
    root = Path(__file__).resolve().parent.parent
    r = subprocess.run(['make', '-s', 'checkpoints', 'MEMORY=bogus'], cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0, r.stdout + r.stderr
    assert "error: memory='bogus': use 'carry' or 'mean'" in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]
    assert 'a meta-training failed (cnn_fashionmnist rc 1, mlp_mnist rc 1)' in r.stdout + r.stderr
