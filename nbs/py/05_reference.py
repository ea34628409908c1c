# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # A second implementation, checked against the first
#
# > The guards written again the plain way (one seed at a time, nn.LSTMCell, autograd, Python ifs), and a check that it computes the library's numbers.

# %% [markdown]
# The library computes every method for S seeds at once, with flat parameters, `torch.func`,
# `torch.where` instead of branches, a compiled and tiled LSTM step. Each of those is a place where
# it could compute something other than the paper's algorithm without any test of its own noticing.
# So the algorithms are written a second time here, as a careful reader would write them first and
# without using `metaguard_nb.lstm` or `metaguard_nb.guards`: one seed at a time in a Python loop,
# the optimizee an `nn.Module` whose gradient comes from autograd, the learned optimizer two
# `torch.nn.LSTMCell` and a `Linear`, and Python `if`s for the guards. `check` runs both programs
# on the same problem and batches in float64 and requires the same branch at every step and the
# same parameters at the end. The benchmark (appendix [A3_bench](A3_bench.ipynb)) times the same two
# programs, and reports a speed only after this check has passed.

# %%
#| default_exp reference

# %%
#| export
import copy, math
from dataclasses import replace

import torch
from torch import nn
from torch.func import functional_call

from metaguard_nb.guards import GuardConfig, get_method, init_state, step_batches
from metaguard_nb.lstm import LSTMConfig, theta_to
from metaguard_nb.runner import make_problem, setting_checkpoint

# %%
from fastcore.test import test_eq, test_fail
from metaguard_nb.guards import METHODS, Method, registered, sgd_step


# %% [markdown]
# ## The reference, one seed at a time
#
# The learned optimizer g for one seed: PyTorch's own `LSTMCell`s, with theta's weights copied in.
# The preprocessing is written out again from section 3 of the decisions (log/sign, p = 10).

# %%
#| export
def ref_features(x:torch.Tensor, # gradients or losses
                 p:float=10.0, # the preprocessing's p (paper: 10)
                )->torch.Tensor:
    "Log/sign preprocessing of each entry of x: [..., 2]."
    small = x.abs() < math.exp(-p)
    log_part = torch.where(small, -1.0, torch.log(x.abs().clamp_min(math.exp(-p)))/p)
    sign_part = torch.where(small, math.exp(p)*x, torch.sign(x))
    return torch.stack([log_part, sign_part], -1)

class RefOptimizer(nn.Module):
    "g for one seed: LSTMCell -> LSTMCell -> Linear, weights from theta (one seed's W)."
    def __init__(self,
                 cfg:LSTMConfig, # the LSTM optimizer's configuration
                 W:dict, # theta's weights, copied into torch.nn layers
                ):
        super().__init__()
        self.cfg, H = cfg, cfg.hidden
        self.cell1, self.cell2, self.out = nn.LSTMCell(cfg.n_in, H), nn.LSTMCell(H, H), nn.Linear(H, 1)
        w = next(iter(W.values()))
        self.to(device=w.device, dtype=w.dtype)
        with torch.no_grad():
            for p, w in zip(self.parameters(), W.values()): p.copy_(w)  # same order as theta.W

    def forward(self,
                grad, # the gradient [m]
                loss, # the loss []
                state, # (h1, c1, h2, c2), each [m, H]
               ):
        "(update [m], new state) from the gradient [m], the loss [] and the state (h1, c1, h2, c2) [m, H]."
        x = ref_features(grad, self.cfg.p)
        if self.cfg.use_loss_input: x = torch.cat([x, ref_features(loss, self.cfg.p).expand(len(grad), 2)], 1)
        h1, c1 = self.cell1(x, state[:2])
        h2, c2 = self.cell2(h1, state[2:])
        return self.out(h2).squeeze(1)*self.cfg.out_scale, (h1, c1, h2, c2)


# %% [markdown]
# The optimizee for one seed: a copy of the `nn.Module`, its parameters overwritten by the flat
# vector eta, and autograd for the gradient.

# %%
#| export
class RefNet:
    "One seed's optimizee as an nn.Module: gradient by autograd, loss differentiable in eta by functional_call."
    def __init__(self,
                 module:nn.Module, # the network, used as a template
                 loss_fn, # loss of logits and labels
                 device='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
                 dtype=torch.float32, # dtype of the parameters
                ):
        self.net, self.loss_fn = copy.deepcopy(module).to(device=device, dtype=dtype), loss_fn
        self.names = [n for n, _ in self.net.named_parameters()]

    def grad(self,
             eta, # one seed's flat parameters [m]
             x, # inputs of a batch
             y, # labels of a batch
            )->tuple:
        "(flat gradient [m], loss []) at eta, not differentiable."
        with torch.no_grad(): nn.utils.vector_to_parameters(eta, self.net.parameters())
        with torch.enable_grad():
            loss = self.loss_fn(self.net(x), y)
            grads = torch.autograd.grad(loss, list(self.net.parameters()))
        return nn.utils.parameters_to_vector(grads), loss.detach()

    def loss(self,
             eta, # one seed's flat parameters [m]
             x, # inputs of a batch
             y, # labels of a batch
            )->torch.Tensor:
        "l(eta; x, y), differentiable in eta."
        views, i = {}, 0
        for n, p in self.net.named_parameters():
            views[n] = eta[i:i + p.numel()].view_as(p); i += p.numel()
        return self.loss_fn(functional_call(self.net, views, (x,)), y)


# %% [markdown]
# The unroll g^T for one seed, first order (the gradient fed to the LSTM is a constant), and the
# guards' choice: the first candidate with the smallest finite loss, or none.

# %%
#| export
def ref_unroll(net:RefNet, # the reference optimizee
               opt:RefOptimizer, # the reference LSTM optimizer
               eta, # one seed's flat parameters [m]
               h, # theta's memory [4, H]
               xs, # inner batches: inputs [T, B, ...]
               ys, # inner batches: labels [T, B]
               state=None, # LSTM state to start from (None: the memory broadcast)
              )->tuple:
    "(eta_T, memory_T [4, H], state_T) after T learned steps on xs [T, B, ...]."
    if state is None: state = tuple(h[k].expand(len(eta), -1) for k in range(4))
    for x, y in zip(xs, ys):
        g, l = net.grad(eta.detach(), x, y)
        u, state = opt(g, l, state)
        eta = eta + u
    return eta, torch.stack([s.mean(0) for s in state]), state

def ref_choice(losses:list, # the candidates' scores, in tie order
               etas:list, # the candidates' parameters
               thetas:list|None=None, # each candidate's (opt, h) where theta adapts (None: theta fixed)
              )->int:
    "Index of the first finite minimum; len(losses) when none is finite. `thetas`: each candidate's (opt, h), where theta adapts."
    finite = lambda ts: all(bool(torch.isfinite(t).all()) for t in ts)
    best = None
    for i, (l, e) in enumerate(zip(losses, etas)):
        ok = math.isfinite(l) and finite([e]) and (thetas is None or finite([*thetas[i][0].parameters(), thetas[i][1]]))
        if ok and (best is None or l < losses[best]): best = i
    return len(losses) if best is None else best

def ref_descend(cfg:GuardConfig, # guard settings (`guards.GuardConfig`)
                objective, # the loss to descend: a scalar tensor in the graph of eta, opt's weights and h
                eta, # one seed's flat parameters [m]
                opt:RefOptimizer, # the reference LSTM optimizer
                h, # theta's memory [4, H]
               )->tuple:
    "Eq. 5 for one seed: (eta_f, opt_f, h_f) = (eta, theta) - lambda grad objective."
    params = list(opt.parameters())
    grads = torch.autograd.grad(objective, [eta, h, *params], allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, [eta, h, *params])]
    opt_f = copy.deepcopy(opt)
    with torch.no_grad():
        for p, g in zip(opt_f.parameters(), grads[2:]): p -= cfg.lr_theta*g
    return (eta - cfg.lr_eta*grads[0]).detach(), opt_f, (h - cfg.lr_theta*grads[1]).detach()


# %% [markdown]
# One step of every method for one seed. A seed's state is a dict: eta, the optimizer module, its
# memory h, and the carried per-coordinate LSTM state (L2O and LGL2O w/ Update) or None.

# %%
#| export
def _ref_guard(s:dict, cands:list, losses:list, lstm=None, adapting:bool=False) -> tuple:
    "cands: (eta, opt, h) in tie order; keep the seed's state where no candidate is finite."
    losses = [float(l.detach()) for l in losses]
    k = ref_choice(losses, [c[0] for c in cands], [c[1:] for c in cands] if adapting else None)
    if k == len(cands): return dict(s, lstm=lstm), k, math.nan
    eta, opt, h = cands[k]
    return dict(eta=eta.detach(), opt=opt, h=h.detach(), lstm=lstm), k, losses[k]

def ref_step(method:str, # a registered method's name (`guards.METHODS`), e.g. 'amg'
             cfg:GuardConfig, # guard settings (`guards.GuardConfig`)
             net:RefNet, # the reference optimizee
             s:dict, # one seed's state: eta, theta as (opt, h), the carried LSTM state
             xs, # inner batches: inputs [T, B, ...]
             ys, # inner batches: labels [T, B]
             xe, # B_e: inputs
             ye, # B_e: labels
            )->tuple:
    "(new state, chosen branch, l(new eta; B_e)) of `method` for one seed; batches without the seed dimension."
    name, method = method, get_method(method).reference  # the registry names each method's step here; an unknown name fails in one line
    if method is None: raise ValueError(f'{name!r} has no step in the reference implementation: check it another way')
    record = lambda eta: float(net.loss(eta, xe, ye).detach())  # what the library's Record reports
    if method == 'sgd':
        g, _ = net.grad(s['eta'], xs[0], ys[0])
        eta = s['eta'] - cfg.lr_eta*g
        return dict(s, eta=eta), 0, record(eta)
    if method in ('l2o', 'lgl2o', 'lgl2o_no_update'):
        with torch.no_grad():
            g, l = net.grad(s['eta'], xs[0], ys[0])
            carried = s['lstm'] if method != 'lgl2o_no_update' else None
            u, lstm = s['opt'](g, l, carried if carried is not None else tuple(s['h'][k].expand(len(g), -1) for k in range(4)))
            if method == 'l2o': return dict(s, eta=s['eta'] + u, lstm=lstm), 0, record(s['eta'] + u)
            cands = [(s['eta'] + u, s['opt'], s['h']), (s['eta'] - cfg.lr_eta*g, s['opt'], s['h'])]
            losses = [net.loss(c[0], xe, ye) for c in cands]
        return _ref_guard(s, cands, losses, lstm if method == 'lgl2o' else None)
    eta, h = s['eta'].clone().requires_grad_(), s['h'].clone().requires_grad_()
    eta_l, mem_l, _ = ref_unroll(net, s['opt'], eta, h, xs, ys)
    xa, ya = (xs[-1], ys[-1]) if cfg.adapt_batch == 'inner' else (xe, ye)  # where the fallback is fitted
    if method == 'smg':  # Algorithm 1
        eta_f, opt_f, h_f = ref_descend(cfg, net.loss(eta_l, xa, ya), eta, s['opt'], h)
        cands = [(eta_l.detach(), s['opt'], mem_l.detach()), (eta_f, opt_f, h_f)]
        with torch.no_grad():
            losses = [net.loss(ref_unroll(net, o, e, m, xs, ys)[0], xe, ye) for e, o, m in cands]
        s, k, _ = _ref_guard(s, cands, losses, adapting=True)  # SMG scores by L^Adapt; the record is l(eta; B_e)
        return s, k, record(s['eta'])
    # Algorithm 2 (AMG; with the SGD point as well for safe AMG)
    l_now, l_learned = net.loss(eta, xa, ya), net.loss(eta_l, xa, ya)
    plain = bool(l_now <= l_learned) or not math.isfinite(float(l_learned.detach()))  # min(l, NaN) = l
    eta_f, opt_f, h_f = ref_descend(cfg, l_now if plain else l_learned, eta, s['opt'], h)
    with torch.no_grad():
        eta_ft, mem_ft, _ = ref_unroll(net, opt_f, eta_f, h_f, xs, ys)
        cands = [(eta_l.detach(), s['opt'], mem_l.detach()), (eta_f, opt_f, h_f), (eta_ft, opt_f, mem_ft)]
        losses = [net.loss(e, xe, ye) for e, _, _ in cands]
        if method == 'safe_amg':
            g, _ = net.grad(s['eta'], xs[0], ys[0])
            cands.append((s['eta'] - cfg.lr_eta*g, s['opt'], s['h'])); losses.append(net.loss(cands[-1][0], xe, ye))
        cands.append((s['eta'], s['opt'], s['h'])); losses.append(net.loss(s['eta'], xe, ye))
    return _ref_guard(s, cands, losses, adapting=True)


# %% [markdown]
# ## Side by side
#
# `make_problem` gives both programs the same things: optimizee, meta-trained theta, initial
# parameters of each seed; the batches of every step are drawn once. Each program is an `advance`
# function, one step of the method on one step's batches, returning the branch each seed chose; the
# benchmark times the same functions.

# %%
#| export
BENCH_SETTINGS = {'cnn': 'a', 'mlp': 'b'}  # (CNN, FashionMNIST) and (MLP, FashionMNIST), the CNN-trained theta

def bench_problem(net:str, # optimizee network, 'mlp' or 'cnn'
                  S:int, # number of seeds
                  device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
                  dtype=torch.float32, # dtype of parameters and images
                 ):
    "The (net, FashionMNIST) problem for seeds 0..S-1, in `dtype`."
    p = make_problem(BENCH_SETTINGS[net], list(range(S)), device, setting_checkpoint(BENCH_SETTINGS[net]))
    p.eta0, p.theta = p.eta0.to(dtype), theta_to(p.theta, dtype=dtype)
    return p

def bench_batches(p, # the benchmark problem (`bench_problem`)
                  n:int, # steps
                  dtype=torch.float32, # dtype of the images
                 )->list:
    "n steps' Batches for all seeds of problem p, drawn from the run's samplers, images in `dtype`."
    steps = [step_batches(p.inner, p.evals, GuardConfig().T) for _ in range(n)]
    return [b._replace(xs=b.xs.to(dtype), xe=b.xe.to(dtype)) for b in steps]

def library_program(method:str, # a registered method's name (`guards.METHODS`), e.g. 'amg'
                    p, # the benchmark problem (`bench_problem`)
                    gcfg:GuardConfig, # guard settings (`guards.GuardConfig`)
                   )->tuple:
    "(advance(batches) -> branches [S], eta() -> the current parameters [S, m]) of the seed-batched library."
    step, st = get_method(method).step, [init_state(method, p.eta0, p.theta)]
    def advance(b):
        st[0], rec = step(gcfg, p.lstm_cfg, p.optimizee, st[0], b)
        return rec.branch
    return advance, lambda: st[0].eta

def reference_program(method:str, # a registered method's name (`guards.METHODS`), e.g. 'amg'
                      p, # the benchmark problem (`bench_problem`)
                      gcfg:GuardConfig, # guard settings (`guards.GuardConfig`)
                     )->tuple:
    "The same as `library_program`, for the eager reference, seed after seed."
    S, dev = p.eta0.shape[0], p.eta0.device
    net = RefNet(p.optimizee.module, p.optimizee.loss_fn, dev, p.eta0.dtype)
    W, h = {k: v.to(dev) for k, v in p.theta.W.items()}, p.theta.h.to(dev)
    seeds = [dict(eta=p.eta0[i], opt=RefOptimizer(p.lstm_cfg, W), h=h, lstm=None) for i in range(S)]
    def advance(b):
        chosen = []
        for j in range(S):
            seeds[j], k, _ = ref_step(method, gcfg, net, seeds[j], b.xs[j], b.ys[j], b.xe[j], b.ye[j])
            chosen.append(k)
        return torch.tensor(chosen)
    return advance, lambda: torch.stack([s['eta'] for s in seeds])


# %% [markdown]
# **The check.** On seed 0 both programs must end at the same eta (max |difference| <= 1e-4) having
# chosen the same branch at every step; a benchmark of programs that compute different things
# would mean nothing, so `bench` fails without it. The check runs in float64: in float32 the two
# programs sum in different orders, and AMG's unrolled-fallback candidate amplifies that rounding
# (theta_f = theta - 0.1 grad, a sum over all coordinates and T steps, drives ten more LSTM steps):
# on the MLP, two AMG steps end orders of magnitude further apart in float32 than in float64, with the
# same branches (the check below prints the float64 difference of every method). The float32
# difference of the timed runs is reported beside it.

# %%
#| export
def compare(ours:dict, # the library's run (`run_program`)
            ref:dict, # the reference's run (`run_program`)
            tol:float=1e-4, # largest |eta difference| that agrees
           )->dict:
    "Seed 0 of both runs (dicts of `eta` [S, m] and `branch` [S, n]): max |eta difference| and whether every branch agreed."
    diff = float((ours['eta'][0].cpu() - ref['eta'][0].cpu()).abs().max())
    same = bool((ours['branch'][0].cpu() == ref['branch'][0].cpu()).all())
    return dict(max_abs_diff=diff, same_branches=same, ok=same and diff <= tol)

def run_program(program, # `library_program` or `reference_program`
                method:str, # a registered method's name (`guards.METHODS`), e.g. 'amg'
                p, # the benchmark problem (`bench_problem`)
                batches:list, # the steps' batches (`bench_batches`)
                gcfg:GuardConfig, # guard settings (`guards.GuardConfig`)
               )->dict:
    "Run `library_program` or `reference_program` over the batches: final eta and the branches [S, n]."
    advance, eta = program(method, p, gcfg)
    branch = torch.stack([advance(b) for b in batches], 1)
    return dict(eta=eta(), branch=branch)

def check(method:str, # a registered method's name (`guards.METHODS`), e.g. 'amg'
          net:str, # optimizee network, 'mlp' or 'cnn'
          steps:int=2, # steps compared
          device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
          compile:bool=True, # use the torch.compile'd LSTM step (appendix A2_compiled)
          gcfg:GuardConfig|None=None, # guard settings (None: the defaults)
         )->dict:
    "`compare` of the library and the reference on seed 0 over `steps` steps, in float64."
    p = bench_problem(net, 1, device, torch.float64)
    batches = bench_batches(p, steps, torch.float64)
    gcfg = replace(gcfg or GuardConfig(), compile=compile)
    return compare(run_program(library_program, method, p, batches, gcfg), run_program(reference_program, method, p, batches, gcfg))


# %% [markdown]
# Every method on the MLP, two steps, float64 (eagerly here; `make bench` checks the compiled and
# tiled step the same way before it times anything):

# %%
for m in METHODS:
    c = check(m, 'mlp', compile=False)
    print(f"{m:16s} max |eta difference| {c['max_abs_diff']:.1e}, same branches: {c['same_branches']}")
    assert c['ok'], (m, c)

# %% [markdown]
# The check can fail: an eta that moved by 1e-3, or one branch that differs, is reported.

# %%
a = dict(eta=torch.zeros(1, 3), branch=torch.zeros(1, 2, dtype=torch.long))
test_eq(compare(a, a)['ok'], True)
test_eq(compare(a, dict(a, eta=torch.full((1, 3), 1e-3)))['ok'], False)
test_eq(compare(a, dict(a, branch=torch.tensor([[0, 1]])))['ok'], False)
with registered(Method('half_sgd', sgd_step, ('sgd',), 'half SGD', 'k', first_batch_only=True)):  # a method with no reference step
    test_fail(lambda: ref_step('half_sgd', GuardConfig(), None, {}, None, None, None, None), contains="'half_sgd' has no step in the reference")
test_fail(lambda: ref_step('adam', GuardConfig(), None, {}, None, None, None, None), contains="unknown method 'adam'")

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.reference`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('reference')
