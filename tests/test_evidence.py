"What each judge sees and what each candidate carries: the guard's recorded scores recomputed independently, and the memory each candidate hands on."
import pytest
import torch

from metaguard_nb import guards
from metaguard_nb.data import Sampler, load
from metaguard_nb.guards import METHODS, GuardConfig, amg_candidates, init_state, lgl2o_candidates, smg_candidates
from metaguard_nb.lstm import LSTMConfig, init_theta, unroll
from metaguard_nb.optimizees import batched_loss, mlp

T, LCFG, GCFG = 10, LSTMConfig(), GuardConfig()


@pytest.fixture(scope='module')
def setup():
    net, split = mlp(), load('mnist')
    sin, se = Sampler(split, [0, 1, 2]), Sampler(split, [0, 1, 2], stream='eval')
    return net, init_theta(LCFG, seed=0), [guards.step_batches(sin, se, T) for _ in range(2)]


def coordinate_mean(state):
    "g^T's averaging: the per-coordinate LSTM state's mean over coordinates, [S, 4, H]."
    return torch.stack([s.mean(1) for s in state], 1)


def candidates(name, net, st, b):
    if name == 'smg': return smg_candidates(GCFG, LCFG, net, st, b)
    return amg_candidates(GuardConfig(sgd_candidate=name == 'safe_amg'), LCFG, net, st, b)[0]


@pytest.mark.parametrize('name', ['smg', 'amg', 'safe_amg'])
def test_the_learned_candidate_carries_g_T_average_not_the_old_memory(setup, name):
    "theta_L = (W, the coordinate mean of the unroll's last state): Algorithm 1 and 2's g^T, not theta's memory from before the unroll."
    net, theta, bs = setup
    st = init_state(name, net.init([0, 1, 2]), theta)
    for b in bs:
        c = candidates(name, net, st, b)
        learned = unroll(LCFG, net, st.eta, st.theta, b.xs, b.ys)
        torch.testing.assert_close(c.thetas[0].h, coordinate_mean(learned.state), atol=1e-6, rtol=0)
        assert not torch.allclose(c.thetas[0].h, st.theta.h, atol=1e-4)
        if name != 'smg':  # the fallback through the unroll carries its own unroll's average; the fallback keeps theta_F's
            ft = unroll(LCFG, net, c.etas[1], c.thetas[1], b.xs, b.ys)
            torch.testing.assert_close(c.thetas[2].h, coordinate_mean(ft.state), atol=1e-6, rtol=0)
            assert torch.equal(c.thetas[2].W['w_out'], c.thetas[1].W['w_out'])
        st, _ = METHODS[name].step(GCFG, LCFG, net, st, b)


def test_smg_judges_each_candidate_by_its_unroll_scored_on_B_e(setup):
    "SMG's recorded scores are L^Adapt = l(g^T(candidate); B_e) with the unroll on the inner batches, not the loss on the last inner batch."
    net, theta, bs = setup
    st = init_state('smg', net.init([0, 1, 2]), theta)
    for b in bs:
        c = smg_candidates(GCFG, LCFG, net, st, b)
        new, rec = METHODS['smg'].step(GCFG, LCFG, net, st, b)
        ends = [unroll(LCFG, net, e, th, b.xs, b.ys).eta for e, th in zip(c.etas, c.thetas)]
        on_e = torch.stack([batched_loss(net, e, b.xe, b.ye) for e in ends], 1)
        on_last = torch.stack([batched_loss(net, e, b.xs[:, -1], b.ys[:, -1]) for e in ends], 1)
        torch.testing.assert_close(rec.candidates, on_e, atol=1e-5, rtol=0)
        assert (rec.candidates - on_last).abs().max() > 1e-3
        st = new
    assert METHODS['smg'].score == 'L^Adapt(candidate) on B_e'


@pytest.mark.parametrize('name', ['lgl2o', 'lgl2o_no_update', 'amg', 'safe_amg'])
def test_the_other_judges_score_each_candidate_on_B_e_itself(setup, name):
    "LGL2O's and AMG's recorded scores are l(candidate; B_e), 'stay' included: not a loss on a batch a candidate was fitted to."
    net, theta, bs = setup
    st = init_state(name, net.init([0, 1, 2]), theta)
    for b in bs:
        if name.startswith('lgl2o'): c = lgl2o_candidates(GCFG, LCFG, net, st, b, update=name == 'lgl2o')[0]
        else: c = candidates(name, net, st, b)
        new, rec = METHODS[name].step(GCFG, LCFG, net, st, b)
        on_e = torch.stack([batched_loss(net, e, b.xe, b.ye) for e in c.etas], 1)
        k = 0 if name.startswith('lgl2o') else -1  # the batch the candidates were made on: B_1 for LGL2O, B_T for AMG's fallbacks
        on_inner = torch.stack([batched_loss(net, e, b.xs[:, k], b.ys[:, k]) for e in c.etas], 1)
        torch.testing.assert_close(rec.candidates, on_e, atol=1e-6, rtol=0)
        assert (rec.candidates - on_inner).abs().max() > 1e-3
        assert rec.candidates.shape[1] == len(METHODS[name].branches) and METHODS[name].score == 'l(candidate; B_e)'
        st = new
