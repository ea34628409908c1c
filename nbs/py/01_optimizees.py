# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Optimizees: any model as a pure function of a flat parameter vector
#
# > The optimizee interface: flat parameters with a leading seed dimension, pure losses and gradients.

# %% [markdown]
# > "Let $\eta \in \mathbb{R}^m$ represent the optimizee parameters, for example, the parameters of a
# > convolutional neural network (CNN) that classifies handwritten digit images. Given a loss
# > function $l : \mathbb{R}^m \to \mathbb{R}$ that measures the performance of the optimizee on
# > specific data ..." (paper, section 2)
#
# Here the data are a minibatch $B$ and the loss is the mean cross-entropy,
# $l(\eta; B) = \frac{1}{|B|} \sum_{(x, y) \in B} -\log \operatorname{softmax}(f_\eta(x))_y$.

# %% [markdown]
# The learned optimizer sees the optimizee only as a vector $\eta$ of m numbers and a loss
# $l(\eta; B)$. This chapter turns any `torch.nn.Module` plus a loss function into exactly that: a
# flat parameter tensor with a leading seed dimension `[S, m]` and pure functions (through
# `torch.func.functional_call`), so that `vmap` runs S seeds in one call. The paper's MLP and
# CNN are two instances; a user's own model goes through the same door.

# %%
#| default_exp optimizees

# %%
#| export
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap

from metaguard_nb.data import generator

# %%
import math
from fastcore.test import test_close, test_eq, test_fail, test_ne


# %% [markdown]
# ## The interface
#
# An `Optimizee` holds a module only as a *template*: its parameter names and shapes, and how to
# initialise them. The parameters themselves live outside, flat. Three pure functions do all the
# work, each for one seed; `vmap` lifts them to S seeds:
#
# - `loss(eta, x, y)`: l(eta; B) for one minibatch,
# - `grad(eta, x, y)`: (grad l, l), the sigma(eta) of Eq. 1,
# - `init(seeds)`: `[S, m]` parameters with the module's own default initialisation, each seed's
#   draws from its own generator.

# %%
#| export
def _reset(module:nn.Module, gen:torch.Generator):
    "Re-draw `module`'s parameters with PyTorch's default initialisation, from `gen` only."
    seed = int(torch.randint(2**62, (1,), generator=gen))
    with torch.random.fork_rng(devices=[]):  # the global RNG is borrowed and restored untouched
        torch.manual_seed(seed)
        for m in module.modules():
            if hasattr(m, 'reset_parameters'): m.reset_parameters()

class Optimizee:
    "A model and a loss as pure functions of a flat parameter vector `eta` of length `m`."
    def __init__(self, module:nn.Module, # template: parameter names, shapes, default initialisation
                 loss_fn=F.cross_entropy, # loss(logits, y) -> scalar mean over the batch
                 name:str='custom', # recorded in results and checkpoints
                 config:dict|None=None, # what built `module` (recorded, compared on load)
                ):
        self.module, self.loss_fn, self.name = module.cpu(), loss_fn, name
        self.config = dict(config or {}, name=name)
        ps = dict(module.named_parameters())
        self.names, self.shapes = list(ps), [p.shape for p in ps.values()]
        self.sizes = [p.numel() for p in ps.values()]
        self.m = sum(self.sizes)

    def params(self,
               eta:torch.Tensor, # one seed's flat parameters [m]
              )->dict:
        "The named parameter views of one seed's flat `eta` [m]."
        return {n: t.view(s) for n, t, s in zip(self.names, eta.split(self.sizes), self.shapes)}

    def logits(self,
               eta, # one seed's flat parameters [m]
               x, # inputs of a batch
              ): return functional_call(self.module, self.params(eta), (x,))
    def loss(self,
             eta, # one seed's flat parameters [m]
             x, # inputs of a batch
             y, # labels of a batch
            ): return self.loss_fn(self.logits(eta, x), y)
    def grad(self,
             eta, # one seed's flat parameters [m]
             x, # inputs of a batch
             y, # labels of a batch
            ):
        "(grad_eta l(eta; x, y), l(eta; x, y)) for one seed."
        return grad_and_value(self.loss)(eta, x, y)

    def init(self,
             seeds:list, # one run seed per row
             device='cpu', # device of the result
             stream:str='init', # the generator stream drawn from (`data.generator`)
            )->torch.Tensor:
        "Fresh parameters `[S, m]`, seed s drawn from `generator(s, stream)` alone."
        rows = []
        for s in seeds:
            _reset(self.module, generator(s, stream))
            rows.append(torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]))
        return torch.stack(rows).to(device)

    def __repr__(self): return f'Optimizee({self.name}, m={self.m})'


# %% [markdown]
# The seed-batched versions are one `vmap` away. `x` carries the seed dimension too
# (`[S, B, 1, 28, 28]`, as the sampler of chapter 00 returns it).

# %%
#| export
def batched_loss(opt:Optimizee, # the optimizee
                 eta, # parameters [S, m]
                 x, # inputs [S, B, ...]
                 y, # labels [S, B]
                ):
    "l(eta_s; B_s) for every seed: eta [S, m], x [S, B, ...], y [S, B] -> [S]."
    return vmap(opt.loss)(eta, x, y)

def batched_grad(opt:Optimizee, # the optimizee
                 eta, # parameters [S, m]
                 x, # inputs [S, B, ...]
                 y, # labels [S, B]
                ):
    "(grad [S, m], loss [S]) for every seed."
    return vmap(opt.grad)(eta, x, y)


# %% [markdown]
# ## The paper's two optimizees
#
# "The optimizee is either a multilayer perceptron (MLP) with one hidden layer and 20 hidden
# neurons or a 3-layer CNN" with "number of channels = (8, 16, 32), kernel sizes = (5, 3, 3) and
# strides = (2, 2, 2), with a fully connected final layer" (section 4 and Appendix A.1).
#
# What the paper leaves open, fixed in section 2 of [the decisions](decisions.md): sigmoid activations (the paper's SGD
# rate lambda_eta = 3 kills a ReLU CNN and makes a tanh CNN diverge), and no padding (7,306
# parameters; `padding=(2, 1, 1)` gives the padded variant).

# %%
#| export
ACTS = {'sigmoid': nn.Sigmoid, 'tanh': nn.Tanh, 'relu': nn.ReLU}

def _act(act:str) -> nn.Module:
    if act not in ACTS: raise ValueError(f"unknown act={act!r}: use one of {', '.join(map(repr, ACTS))}")
    return ACTS[act]()

def mlp(hidden:int=20, # hidden units
        act:str='sigmoid', # 'sigmoid', 'tanh' or 'relu'
       ) -> Optimizee:
    "The MLP optimizee: 784 -> hidden (act) -> 10."
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), _act(act), nn.Linear(hidden, 10))
    return Optimizee(net, name='mlp', config=dict(hidden=hidden, act=act))

def cnn(act:str='sigmoid', # 'sigmoid', 'tanh' or 'relu'
        padding:tuple=(0, 0, 0), # padding of the three convolutions
        channels:tuple=(8, 16, 32), # output channels of the three convolutions
        kernels:tuple=(5, 3, 3), # their kernel sizes
        strides:tuple=(2, 2, 2), # their strides
       )->Optimizee:
    "LGL2O's 3-layer CNN optimizee: three strided convolutions (act after each), then linear -> 10."
    layers, c, size = [], 1, 28
    for co, k, s, p in zip(channels, kernels, strides, padding):
        layers += [nn.Conv2d(c, co, k, s, p), _act(act)]
        c, size = co, (size + 2*p - k)//s + 1
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c*size*size, 10))
    return Optimizee(net, name='cnn', config=dict(act=act, padding=list(padding), channels=list(channels),
                                                   kernels=list(kernels), strides=list(strides)))

OPTIMIZEES = {'mlp': mlp, 'cnn': cnn}

def optimizee(name:str, # 'mlp' or 'cnn'
              **kwargs, # options of the network's builder (`mlp`, `cnn`)
             )->Optimizee:
    "An optimizee by name ('mlp' or 'cnn'), with keyword options passed to its builder."
    if name not in OPTIMIZEES: raise ValueError(f"unknown optimizee {name!r}: use one of {', '.join(map(repr, OPTIMIZEES))}")
    return OPTIMIZEES[name](**kwargs)


# %% [markdown]
# The parameter counts the project card pins: MLP 15,910, CNN 7,306.

# %%
test_eq(mlp().m, 15910)
test_eq(cnn().m, 7306)
test_eq(cnn(padding=(2, 1, 1)).m, 8*25+8 + 16*8*9+16 + 32*16*9+32 + 512*10+10)
test_fail(lambda: mlp(act='gelu'), contains="use one of 'sigmoid'")

# %% [markdown]
# Initialisation is PyTorch's default, drawn from the run's generator: the same seed gives the same
# parameters, another seed others, and the global RNG is not touched.

# %%
net = cnn()
before = torch.get_rng_state()
e1, e2 = net.init([0, 1]), net.init([0])
test_eq(torch.get_rng_state(), before)
test_eq(e1.shape, (2, 7306)); test_eq(e1[0], e2[0]); test_ne(e1[0], e1[1])
bound = 1/math.sqrt(25)  # first conv: fan_in = 1*5*5, kaiming_uniform(a=sqrt 5) -> U(-1/sqrt(fan_in), ..)
assert e1[:, :200].abs().max() <= bound and e1[:, :200].abs().max() > 0.9*bound

# %% [markdown]
# The functional loss equals the module's own forward pass, and the vmapped gradient of each seed
# equals that seed's gradient computed alone.

# %%
from metaguard_nb.data import Sampler, load

# %%
x, y = Sampler(load('fashionmnist'), seeds=[0, 1])(1)
x, y = x[:, 0], y[:, 0]  # one batch per seed: [S, B, 1, 28, 28], [S, B]
eta = net.init([0, 1])
torch.nn.utils.vector_to_parameters(eta[1], net.module.parameters())
test_close(batched_loss(net, eta, x, y)[1], F.cross_entropy(net.module(x[1]), y[1]), eps=1e-6)
g, l = batched_grad(net, eta, x, y)
g1, l1 = net.grad(eta[1], x[1], y[1])
test_close(g[1], g1, eps=1e-6); test_close(l[1], l1, eps=1e-6)
l.mean()

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.optimizees`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('optimizees')
