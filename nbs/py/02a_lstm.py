# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The learned optimizer $g_\theta$ (Eq. 1) and its unroll $g^T$
#
# > The coordinate-wise LSTM optimizer, its preprocessing, and the T-step unroll.

# %% [markdown]
# > "The learned optimizer is expressed as a function
# >
# > $$\eta_t, h_t \leftarrow g_\theta(\eta_{t-1}, h_{t-1}, \sigma(\eta_{t-1})), \tag{1}$$
# >
# > ... The function $\sigma(\eta_{t-1})$ includes auxiliary variables regarding the previous optimizee
# > parameters, such as loss and gradient, denoted as
# > $\sigma(\eta_{t-1}) = (l(\eta_{t-1}), \nabla_\eta l(\eta)|_{\eta=\eta_{t-1}})$." (paper, section 2)

# %% [markdown]
# The optimizer is the coordinate-wise two-layer LSTM of Andrychowicz et al. (2016): one small
# LSTM, its weights shared by all m coordinates, reads each coordinate's gradient (and the current
# loss) and writes that coordinate's update. Its memory h is part of theta: learned at
# meta-training, broadcast to every coordinate when an unroll starts, and averaged back over the
# coordinates when the unroll ends. Sections 3 and 4 of [the decisions](decisions.md) fix the details.

# %%
#| default_exp lstm

# %%
#| export
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from metaguard_nb.data import generator
from metaguard_nb.optimizees import Optimizee, batched_grad, batched_loss

# %%
from fastcore.test import test_close, test_eq, test_fail, test_ne


# %% [markdown]
# ## Preprocessing the inputs
#
# Gradients and losses span many orders of magnitude, so each scalar $x$ becomes two features
# (Andrychowicz et al., appendix A), with $p = 10$:
#
# $$x \mapsto \begin{cases} \left(\frac{\log |x|}{p},\ \operatorname{sign} x\right) & \text{if } |x| \ge e^{-p} \\ (-1,\ e^p x) & \text{otherwise.} \end{cases}$$
#
# The log is taken of |x| clamped at e^-p, so that the branch not taken never produces an
# infinity or a NaN gradient.

# %%
#| export
def preprocess(x:torch.Tensor, # any shape
               p:float=10.0, # the cut-off exponent
              ) -> torch.Tensor:
    "Log/sign preprocessing: x [...] -> features [..., 2]."
    big = x.abs() >= math.exp(-p)
    a = torch.where(big, x.abs().clamp_min(math.exp(-p)).log()/p, -torch.ones_like(x))
    b = torch.where(big, torch.sign(x), math.exp(p)*x)
    return torch.stack([a, b], -1)


# %%
e = math.exp(-10)
x = torch.tensor([0., e*1.001, -e*1.001, e*0.999, -e*0.999, 1e6, -3.])
want = [[-1, 0], [math.log(e*1.001)/10, 1], [math.log(e*1.001)/10, -1], [-1, 0.999], [-1, -0.999],
        [math.log(1e6)/10, 1], [math.log(3)/10, -1]]
test_close(preprocess(x), torch.tensor(want), eps=1e-5)
xg = x.clone().requires_grad_()
preprocess(xg).sum().backward()
assert torch.isfinite(xg.grad).all()


# %% [markdown]
# ## $\theta = (W, h)$
#
# "For notational simplicity, the initial memory state $h_0$ is included in the parameter vector
# $\theta$." `Theta` makes that literal: the LSTM weights `W` (a dict of tensors, in
# `torch.nn.LSTMCell`'s layout so that the cell can be checked against PyTorch's) and the memory
# `h` = (h1, c1, h2, c2), one vector of `hidden` numbers each. Both may carry a leading seed
# dimension: at meta-training theta is shared; at meta-test the guards adapt one theta per seed.

# %%
#| export
@dataclass(frozen=True)
class LSTMConfig:
    "The learned optimizer's architecture (decisions, section 3); recorded in every checkpoint."
    hidden:int=20 # LSTM units per layer
    out_scale:float=0.1 # update = out_scale * linear(h2)
    p:float=10.0 # preprocessing cut-off exponent
    use_loss_input:bool=True # feed the preprocessed loss beside the gradient (4 features, else 2)

    @property
    def n_in(self) -> int: return 4 if self.use_loss_input else 2

class Theta(NamedTuple):
    "The learned optimizer's parameters: LSTM weights `W` and memory `h` [..., 4, hidden]."
    W: dict
    h: torch.Tensor

def init_theta(cfg:LSTMConfig, # the LSTM optimizer's configuration (`LSTMConfig`)
               seed:int=0, # seed of the initialisation
              )->Theta:
    "PyTorch's default LSTMCell/Linear initialisation, U(-1/sqrt(hidden), 1/sqrt(hidden)), and zero memory."
    g, H, k = generator(seed, 'theta'), cfg.hidden, 1/math.sqrt(cfg.hidden)
    shapes = {'w_ih1': (4*H, cfg.n_in), 'w_hh1': (4*H, H), 'b_ih1': (4*H,), 'b_hh1': (4*H,),
              'w_ih2': (4*H, H), 'w_hh2': (4*H, H), 'b_ih2': (4*H,), 'b_hh2': (4*H,),
              'w_out': (1, H), 'b_out': (1,)}
    W = {n: (torch.rand(s, generator=g)*2 - 1)*k for n, s in shapes.items()}
    return Theta(W, torch.zeros(4, H))

def theta_to(theta:Theta, # the LSTM optimizer's weights and memory (`lstm.Theta`)
             device=None, # target device (None: unchanged)
             dtype=None, # target dtype (None: unchanged)
            )->Theta:
    return Theta({n: w.to(device=device, dtype=dtype) for n, w in theta.W.items()}, theta.h.to(device=device, dtype=dtype))

def per_seed(theta:Theta, # one theta, shared
             S:int, # number of seeds
            )->Theta:
    "One independent copy of theta per seed (leading dimension S), as the adapting guards need."
    return Theta({n: w.expand(S, *w.shape).clone() for n, w in theta.W.items()}, theta.h.expand(S, *theta.h.shape).clone())


# %%
cfg = LSTMConfig()
th = init_theta(cfg)
test_eq(th.W['w_ih1'].shape, (80, 4)); test_eq(th.h.shape, (4, 20))
test_eq(sum(w.numel() for w in th.W.values()), 80*4 + 80*20 + 160 + 80*20*2 + 160 + 21)
test_eq(per_seed(th, 3).W['w_hh2'].shape, (3, 80, 20))


# %% [markdown]
# ## One step of g (Eq. 1)
#
# Per coordinate $i$, with $x_i = (\text{pre}(\nabla_i l),\ \text{pre}(l))$ the four features:
#
# $$h^1_i, c^1_i \leftarrow \text{LSTMCell}_1(x_i;\ h^1_i, c^1_i), \qquad h^2_i, c^2_i \leftarrow \text{LSTMCell}_2(h^1_i;\ h^2_i, c^2_i),$$
# $$u_i = 0.1\,(w_{out} \cdot h^2_i + b_{out}), \qquad \eta_i \leftarrow \eta_i + u_i,$$
#
# where each cell is PyTorch's: gates $(i, f, g, o) = W_{ih} x + b_{ih} + W_{hh} h + b_{hh}$,
# $c \leftarrow \sigma(f) c + \sigma(i) \tanh(g)$, $h \leftarrow \sigma(o) \tanh(c)$. The four states
# $(h^1, c^1, h^2, c^2)$ of all coordinates are Eq. 1's memory $h_t$. All m coordinates of all S
# seeds go through one batched matmul per gate block: the state is `[S, m, hidden]`, and `W` is
# either shared or `[S, ...]` (the `.mT` and broadcasting handle both).
#
# The loss is the same for every coordinate of a seed, so its share of the first cell's gates,
# `preprocess(l) @ w_ih1[:, 2:].T`, is a per-seed bias: computed once per seed instead of m times
# (the same sum, in another order; measured: a fifth of the LSTM's time, nbs/A3_bench).

# %%
#| export
def _cell(x_part, h, c, w_hh):
    "torch.nn.LSTMCell's equations (gate order i, f, g, o), given the input's share of the gates, biases included."
    gates = x_part + h @ w_hh.mT
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f)*c + torch.sigmoid(i)*torch.tanh(g)
    return torch.sigmoid(o)*torch.tanh(c), c

def start_state(h:torch.Tensor, # theta's memory [4, H] or [S, 4, H]
                S:int, # number of seeds
                m:int, # coordinates per seed
               )->tuple:
    "Broadcast theta's memory to every coordinate: four tensors [S, m, H] (views, no copy)."
    h = h.expand(S, *h.shape[-2:])
    return tuple(h[:, k, None, :].expand(S, m, h.shape[-1]) for k in range(4))

def seed_terms(cfg:LSTMConfig, # the LSTM optimizer's configuration (`LSTMConfig`)
               W:dict, # theta's weights
               loss:torch.Tensor, # the loss per seed [S] (or [] for one seed)
              )->tuple:
    "The per-seed parts of the gates, computed once per step: (bias1 [(S,) 1, 4H], w_grad [(S,) 2, 4H], bias2 [(S,) 1, 4H])."
    w_ih1, bias1 = W['w_ih1'], (W['b_ih1'] + W['b_hh1']).unsqueeze(-2)
    if cfg.use_loss_input: bias1 = bias1 + preprocess(loss, cfg.p).unsqueeze(-2) @ w_ih1[..., 2:].mT  # [S, 1, 4H]
    return bias1.contiguous(), w_ih1[..., :2].mT.contiguous(), (W['b_ih2'] + W['b_hh2']).unsqueeze(-2).contiguous()

def coordinate_step(cfg:LSTMConfig, # the LSTM optimizer's configuration (`LSTMConfig`)
                    grad, # the gradient [S, m]
                    bias1, # `seed_terms`' first-layer bias
                    w_grad, # `seed_terms`' input weights of the gradient features
                    bias2, # `seed_terms`' second-layer bias
                    w_hh1, # first layer, hidden-to-hidden weights
                    w_ih2, # second layer, input-to-hidden weights
                    w_hh2, # second layer, hidden-to-hidden weights
                    w_out, # output layer weights
                    b_out, # output layer bias
                    h1, # first layer hidden state [S, m, H]
                    c1, # first layer cell state [S, m, H]
                    h2, # second layer hidden state [S, m, H]
                    c2, # second layer cell state [S, m, H]
                   )->tuple:
    "The per-coordinate part of g: (update [S, m], h1, c1, h2, c2), given `seed_terms`."
    x = preprocess(grad, cfg.p)  # [S, m, 2]
    x_part = x[..., :1]*w_grad[..., :1, :] + x[..., 1:]*w_grad[..., 1:, :]  # [S, m, 4H]: two features, two products
    h1, c1 = _cell(x_part + bias1, h1, c1, w_hh1)
    h2, c2 = _cell(h1 @ w_ih2.mT + bias2, h2, c2, w_hh2)
    u = (h2 @ w_out.mT + b_out.unsqueeze(-2)).squeeze(-1)*cfg.out_scale
    return u, h1, c1, h2, c2

def lstm_step(cfg:LSTMConfig, # the LSTM optimizer's configuration (`LSTMConfig`)
              W:dict, # theta's weights, shared or per seed
              grad:torch.Tensor, # gradient [S, m]
              loss:torch.Tensor, # loss [S]
              state:tuple, # (h1, c1, h2, c2), each [S, m, H]
              coordinates=coordinate_step, # the per-coordinate part (its compiled twin: see below)
             )->tuple:
    "One application of g: (update [S, m], new state)."
    u, *state = coordinates(cfg, grad, *seed_terms(cfg, W, loss), W['w_hh1'], W['w_ih2'], W['w_hh2'], W['w_out'], W['b_out'], *state)
    return u, tuple(state)


# %% [markdown]
# The cell is PyTorch's `LSTMCell`, checked directly:

# %%
S, m = 2, 5
g0, l0 = torch.randn(S, m), torch.rand(S)
u, st = lstm_step(cfg, th.W, g0, l0, start_state(th.h, S, m))
c1 = torch.nn.LSTMCell(4, 20); c2 = torch.nn.LSTMCell(20, 20)
with torch.no_grad():
    for c, k in ((c1, '1'), (c2, '2')):
        c.weight_ih.copy_(th.W['w_ih'+k]); c.weight_hh.copy_(th.W['w_hh'+k]); c.bias_ih.copy_(th.W['b_ih'+k]); c.bias_hh.copy_(th.W['b_hh'+k])
    x = torch.cat([preprocess(g0), preprocess(l0)[:, None].expand(S, m, 2)], -1).reshape(S*m, 4)
    h1, _ = c1(x); h2, _ = c2(h1)
    test_close(u.reshape(-1), 0.1*(h2 @ th.W['w_out'].T + th.W['b_out']).squeeze(-1), eps=1e-6)
test_eq(u.shape, (S, m)); test_eq(len(st), 4)

# %% [markdown]
# **Fast, on many seeds.** `lstm_step` is the readable definition. The guards run its compiled twin,
# in tiles of coordinates whose backward pass recomputes the gates: the same function to float
# rounding, several times faster on a CPU and a fraction of the memory. How, and the measurements
# behind it, are the appendix [A2_compiled](A2_compiled.ipynb); `unroll` takes the step to use.

# %% [markdown]
# ## The unroll g^T
#
# > "Unrolling the learned optimizer for T steps leads to $\eta_T, \theta_T \leftarrow g^T(\eta_0, \theta_0)$ ...
# > Starting with a unique $\theta_0$, this results in multiple variants $\theta_T^i$ ... To reduce
# > them back into a single $\theta_T$, we calculate the average as
# > $\theta_T = \frac{1}{m} \sum_{i=1}^m \theta_T^i$. This averaging operation is applied after T
# > steps as part of $g^T$." (section 2)
#
# Step $t$ draws on batch $B_t$:
#
# $$g_t = \nabla l(\eta_{t-1}; B_t), \qquad (u_t, h_t) = g_\theta(g_t, l(\eta_{t-1}; B_t), h_{t-1}), \qquad \eta_t = \eta_{t-1} + u_t,$$
#
# and at the end $\theta_T = (W, \frac{1}{m}\sum_i h_T^i)$, the coordinate-mean of the state.
#
# **What is differentiated.** eta_T depends on theta through every u_t, and on eta_0 directly and
# through the gradients g_t. By default (`second_order=False`) the gradients and losses fed to the
# LSTM are constants, the first-order simplification of Andrychowicz et al.: d eta_T / d eta_0 = I
# and dL/dW flows through the updates and the LSTM's recurrence, not through the Hessian of l.
# `second_order=True` keeps the Hessian terms (several times the cost on the CNN).
#
# The unroll also returns the per-coordinate state, for a caller that carries it (L2O at meta-test,
# and the windows of meta-training), and, when `meta_loss=True`, l(eta_t; B_t) for t = 1..T, the
# terms of Eq. 2.

# %%
#| export
UNROLL_STEPS = 10  # T, the paper's unroll length (Appendix A.1): every default T in the library is this one

class Unrolled(NamedTuple):
    eta: torch.Tensor # eta_T [S, m]
    theta: Theta # theta_T: W unchanged, memory = coordinate mean of the state [S, 4, H]
    state: tuple # per-coordinate state after step T, each [S, m, H]
    losses: torch.Tensor|None # l(eta_t; B_t) (or on meta_batches) for t = 1..T [S, T] (only with meta_loss=True)

def unroll(cfg:LSTMConfig, # the LSTM optimizer's configuration (`LSTMConfig`)
           problem:Optimizee, # the optimizee: flat parameters, pure loss and gradient (`optimizees.Optimizee`)
           eta:torch.Tensor, # eta_0 [S, m]
           theta:Theta, # theta_0, shared or per seed
           xs:torch.Tensor, # inner batches: inputs [S, T, B, ...]
           ys:torch.Tensor, # the T inner batches per seed: [S, T, B, ...], [S, T, B]
           state:tuple|None=None, # per-coordinate state to continue from; None starts from theta.h
           second_order:bool=False, # keep the Hessian terms (differentiate through the gradients)
           meta_loss:bool=False, # also return l(eta_t; .) for every t (Eq. 2's terms)
           meta_batches:tuple|None=None, # (x, y) [S, T, B, ...] to measure those terms on; None: the step's own batch B_t
           step=None, # the LSTM step function (default `lstm_step`; the compiled one: `compiled.step_function`)
          )->Unrolled:
    "g^T(eta, theta): T steps of the learned optimizer on the batches xs, ys."
    S, m = eta.shape
    if state is None: state = start_state(theta.h, S, m)
    terms, step = [], step or lstm_step
    for t in range(xs.shape[1]):
        seen = eta if second_order else eta.detach()
        g, l = batched_grad(problem, seen, xs[:, t], ys[:, t])
        u, state = step(cfg, theta.W, g, l, state)
        eta = eta + u
        if meta_loss:
            xm, ym = (xs, ys) if meta_batches is None else meta_batches
            terms.append(batched_loss(problem, eta, xm[:, t], ym[:, t]))
    memory = torch.stack([s.mean(1) for s in state], 1)
    return Unrolled(eta, Theta(theta.W, memory), state, torch.stack(terms, 1) if terms else None)


# %% [markdown]
# A T = 10 unroll of the CNN on three seeds:

# %%
from metaguard_nb.data import Sampler, load
from metaguard_nb.optimizees import cnn, mlp

# %%
net = cnn()
xs, ys = Sampler(load('fashionmnist'), seeds=[0, 1, 2])(10)
eta0 = net.init([0, 1, 2])
r = unroll(cfg, net, eta0, th, xs, ys, meta_loss=True)
test_eq(r.eta.shape, (3, 7306)); test_eq(r.theta.h.shape, (3, 4, 20)); test_eq(r.losses.shape, (3, 10))
test_close(r.theta.h[:, 0], r.state[0].mean(1))

# %% [markdown]
# **Seed batching.** Three seeds in one call equal each seed alone:

# %%
for s in range(3):
    r1 = unroll(cfg, net, eta0[s:s+1], th, xs[s:s+1], ys[s:s+1])
    test_close(r1.eta[0], r.eta[s], eps=1e-5)
    test_close(r1.theta.h[0], r.theta.h[s], eps=1e-5)


# %% [markdown]
# **The meta-gradient is exact.** On a tiny problem in float64, `torch.autograd.gradcheck` compares
# the backward pass through the unroll with finite differences. With `second_order=True` the
# comparison holds on any loss. The first-order gradient is exact only where the dropped terms
# vanish: with a loss linear in eta (zero Hessian) and gradient-only inputs, it passes gradcheck too;
# on a curved loss it differs from the second-order one, so the flag does what it says.

# %%
def tiny_problem(linear:bool=False, seed:int=0) -> tuple:
    "A 3 -> 2 linear optimizee with 4 examples, in float64, for gradient checks: (problem, eta [1, 8], x, y)."
    g = generator(seed, 'tiny')
    loss = (lambda out, y: out.sum()/len(y)) if linear else torch.nn.functional.cross_entropy
    problem = Optimizee(torch.nn.Linear(3, 2), loss_fn=loss, name='tiny')
    eta = problem.init([seed]).double()
    x = torch.randn(1, 2, 4, 3, generator=g, dtype=torch.float64)
    y = torch.randint(2, (1, 2, 4), generator=g)
    return problem, eta, x, y


# %%
def meta_objective(cfg, problem, x, y, second_order):
    def f(eta, w_hh1, w_ih2, h):
        W = dict(th64.W, w_hh1=w_hh1, w_ih2=w_ih2)
        return unroll(cfg, problem, eta, Theta(W, h), x, y, second_order=second_order, meta_loss=True).losses.mean()
    return f

small = LSTMConfig(hidden=3)
th64 = theta_to(init_theta(small, seed=1), dtype=torch.float64)
th64 = Theta(th64.W, th64.h + 0.1)  # non-zero memory, so its gradient is exercised
problem, eta, x, y = tiny_problem()
args = (eta.requires_grad_(), th64.W['w_hh1'].clone().requires_grad_(), th64.W['w_ih2'].clone().requires_grad_(), th64.h.clone().requires_grad_())
assert torch.autograd.gradcheck(meta_objective(small, problem, x, y, True), args)
lin = tiny_problem(linear=True)
grad_only = LSTMConfig(hidden=3, use_loss_input=False)
th64 = theta_to(init_theta(grad_only, seed=1), dtype=torch.float64); th64 = Theta(th64.W, th64.h + 0.1)
args = (lin[1].requires_grad_(), th64.W['w_hh1'].clone().requires_grad_(), th64.W['w_ih2'].clone().requires_grad_(), th64.h.clone().requires_grad_())
assert torch.autograd.gradcheck(meta_objective(grad_only, lin[0], lin[2], lin[3], False), args)
g1 = torch.autograd.grad(meta_objective(grad_only, problem, x, y, False)(*args), args[0])[0]
g2 = torch.autograd.grad(meta_objective(grad_only, problem, x, y, True)(*args), args[0])[0]
assert (g1 - g2).abs().max() > 1e-5  # the Hessian terms are what second_order adds

# %% [markdown]
# **Determinism.** The same seed gives bit-identical eta_T on the CPU.

# %%
test_eq(unroll(cfg, net, eta0, th, xs, ys).eta, unroll(cfg, net, eta0, th, xs, ys).eta)

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.lstm`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('lstm')
