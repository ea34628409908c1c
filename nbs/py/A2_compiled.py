# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: the LSTM step, compiled and tiled
#
# > `torch.compile` of the per-coordinate LSTM step, in tiles of coordinates whose backward pass recomputes the gates: the same numbers as `lstm.lstm_step`, faster and in less memory.

# %% [markdown]
# Chapter 02a defines the learned optimizer's step, `lstm_step`, as plainly as it can be written.
# This appendix makes it fast on many seeds without changing what it computes, and the guards
# (chapter 03) use what it builds through one call, `step_function(compile, tile)`.

# %%
#| default_exp compiled

# %%
#| export
import contextlib, functools

import torch

from metaguard_nb.lstm import coordinate_step, lstm_step

# %%
from fastcore.test import test_close
from metaguard_nb.data import Sampler, load
from metaguard_nb.lstm import LSTMConfig, Theta, init_theta, unroll
from metaguard_nb.optimizees import mlp


# %% [markdown]
# ## One compiled graph
#
# **A fused step.** On S seeds the cell works on gate tensors of S x m x 4H numbers (58 MB for the
# CNN at S = 25), and each of its dozen elementwise operations reads and writes them once: in eager
# mode the step is bound by memory traffic, not arithmetic. `torch.compile` fuses the
# preprocessing and the gate arithmetic into a few loops around the matrix products, forward and
# backward; nbs/A3_bench measures what that buys. Only `coordinate_step` is compiled: the per-seed
# terms stay outside, because inside one graph Inductor fused them into the per-coordinate loop and
# recomputed the loss's share of the gates, with scalar gathers of `w_ih1`'s columns, for every one
# of the S x m coordinates (measured on the CNN at S = 25, ten no-grad steps: a fifth slower with
# them inside than outside, the same numbers to float rounding). The two gradient features enter as two
# broadcast products rather than a matrix product with an inner dimension of 2, which Inductor fuses
# into the gate loop instead of writing a 58 MB product. The compiled step computes the same
# function (to float rounding), so `lstm_step` above stays the readable definition; callers choose
# with `compile=` (`GuardConfig(compile=...)`). The first call per shape compiles for tens of seconds; a failure of the compiler (no C++
# compiler, an unsupported platform) gets one line naming the switch.

# %%
#| export
def _compile_error(e:Exception):
    "Re-raise a failure of the compiler as one line that names the switch; anything else as it is."
    from torch._dynamo.exc import TorchDynamoException
    from torch._inductor.exc import InductorError
    if not isinstance(e, (TorchDynamoException, InductorError)): raise e
    raise RuntimeError(f'torch.compile of the LSTM step failed ({type(e).__name__}): pass compile=False '
                       '(GuardConfig(compile=False), or METAGUARD_COMPILE=0 in the environment)') from e

@contextlib.contextmanager
def _compiling():
    "Room for one static-shape kernel per (S, tile, grad mode, dtype), and a compiler failure as one line."
    try:
        with torch._dynamo.config.patch(recompile_limit=256): yield
    except Exception as e: _compile_error(e)

@functools.cache
def _compiled_coordinates(): return torch.compile(coordinate_step, dynamic=False)  # dynamic shapes: measured 2x slower kernels

def _run_compiled(*args):
    with _compiling(): return _compiled_coordinates()(*args)


# %% [markdown]
# ## Tiles, and a backward that recomputes
#
# **Tiles, and a backward that recomputes.** Differentiated through, the compiled step saves its
# gate activations for the backward pass: about a kilobyte per coordinate and seed per LSTM step,
# gigabytes for ten steps of 25 seeds of the MLP (15,910 coordinates), most of a 25-seed AMG step's
# peak memory. The coordinates are independent, so the step can instead run over tiles of
# coordinates (all seeds at once) and save only its inputs; the backward pass then recomputes each
# tile's gates from them and back-propagates through that tile alone (`torch.func.vjp` inside one
# compiled graph per tile, so the recomputed gates never leave the cache). The forward pass needs no
# saved activations at all. The numbers are the same per coordinate; only the sum of theta's
# gradient over tiles is taken in another order. The tile size is a setting (`tile`, in
# (seed, coordinate) rows: a tile holds `tile // S` coordinates of all S seeds); `'auto'` picks the
# size measured best on this CPU in nbs/A3_bench (512 coordinates of 25 seeds; one seed gets tiles of
# 12,800 coordinates, so that its kernels are not too small to pay their call), and on a GPU, where
# memory is plentiful and launches are what costs, the one-graph step above.

# %%
#| export
TILE_CPU = 12_800  # (seed, coordinate) rows per tile on a CPU: 512 coordinates of 25 seeds, measured in nbs/A3_bench
_PER_COORDINATE = (0, 9, 10, 11, 12)  # coordinate_step's arguments with a coordinate axis: grad [S, m], the state [S, m, H]

def resolve_tile(tile, # (seed, coordinate) rows per tile, 'auto', or None for one graph
                 device, # the device the step runs on
                )->int|None:
    "(seed, coordinate) rows per tile: `tile` itself, or for 'auto' TILE_CPU on a CPU and None (one graph, activations saved) elsewhere."
    if tile == 'auto': return TILE_CPU if torch.device(device).type == 'cpu' else None
    if tile is not None and (not isinstance(tile, int) or tile <= 0): raise ValueError(f"tile={tile!r}: use a positive number of rows, None or 'auto'")
    return tile

def _cut(args, sl) -> list: return [a[:, sl] if i in _PER_COORDINATE and a is not None else a for i, a in enumerate(args)]

def _tile_forward(cfg, *args):
    "coordinate_step on one tile, written into the output slices it is given (the last five arguments)."
    for out, r in zip(args[-5:], coordinate_step(cfg, *args[:-5])): out.copy_(r)

def _tile_backward(cfg, *args):
    "Recompute one tile and back-propagate through it: gradients into the given buffers (tiles copied, per-seed terms summed)."
    ins, grad_outs, bufs = args[:13], args[13:18], args[18:]
    _, vjp = torch.func.vjp(functools.partial(coordinate_step, cfg), *ins)
    for i, (buf, g) in enumerate(zip(bufs, vjp(grad_outs))):
        if buf is None: continue
        if i in _PER_COORDINATE: buf.copy_(g)
        else: buf.add_(g)

@functools.cache
def _compiled_tiles(): return torch.compile(_tile_forward, dynamic=False), torch.compile(_tile_backward, dynamic=False)

class TiledStep(torch.autograd.Function):
    "coordinate_step over tiles of coordinates, compiled; saves its inputs only, and recomputes each tile in the backward."
    @staticmethod
    def forward(ctx, cfg, rows, *ins):
        fwd, _ = _compiled_tiles()
        (S, m), H = ins[0].shape, ins[-1].shape[-1]
        tile = max(1, rows//S)  # coordinates per tile, all seeds at once
        outs = [ins[0].new_empty(S, m)] + [ins[0].new_empty(S, m, H) for _ in range(4)]
        with _compiling():
            for j in range(0, m, tile): fwd(cfg, *_cut(ins, slice(j, j + tile)), *(o[:, j:j + tile] for o in outs))
        ctx.save_for_backward(*ins); ctx.cfg, ctx.tile = cfg, tile
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grad_outs):
        _, bwd = _compiled_tiles()
        ins, m, tile = ctx.saved_tensors, ctx.saved_tensors[0].shape[1], ctx.tile
        grad_outs = [torch.zeros(o.shape, dtype=o.dtype, device=o.device) if g is None else g
                     for g, o in zip(grad_outs, [ins[0]] + list(ins[9:]))]
        bufs = [None if not need else (torch.empty if i in _PER_COORDINATE else torch.zeros)(a.shape, dtype=a.dtype, device=a.device)
                for i, (a, need) in enumerate(zip(ins, ctx.needs_input_grad[2:]))]
        with _compiling():  # the backward runs later, in autograd's engine: it needs its own limit and error message
            for j in range(0, m, tile):
                sl = slice(j, j + tile)
                bwd(ctx.cfg, *_cut(ins, sl), *(g[:, sl] for g in grad_outs), *_cut(bufs, sl))
        return (None, None, *bufs)

def _run_tiled(tile):
    def coordinates(cfg, *args): return TiledStep.apply(cfg, tile, *args)
    return coordinates

def step_function(compile:bool, # use the torch.compile'd LSTM step (appendix A2_compiled)
                  tile:int|None=None, # (seed, coordinate) rows per tile, 'auto', or None for one graph
                 )->callable:
    "`lstm_step`, or with `compile` its twin with a torch.compile'd `coordinate_step`, in tiles of `tile` rows (None: one graph)."
    if not compile: return lstm_step
    coordinates = _run_compiled if tile is None else _run_tiled(tile)
    return lambda cfg, W, grad, loss, state: lstm_step(cfg, W, grad, loss, state, coordinates=coordinates)


# %% [markdown]
# ## The same numbers
#
# The compiled step, in one graph and in tiles of 4,000 coordinates of two seeds (the last one
# ragged), computes the same numbers as `lstm_step` (to float rounding), forward and backward. Shown
# on a small problem, which compiles in seconds (tests/test_guards.py checks it to 1e-12 in float64):

# %%
cfg, th = LSTMConfig(), init_theta(LSTMConfig())
with torch.enable_grad():
    W = {k: v.clone().requires_grad_() for k, v in th.W.items()}
    outs = [unroll(cfg, mlp(), mlp().init([0, 1]), Theta(W, th.h), *Sampler(load('fashionmnist'), seeds=[0, 1])(3), step=step_function(c, t))
            for c, t in ((False, None), (True, None), (True, 8000))]
    grads = [torch.autograd.grad(o.eta.square().sum(), W['w_hh1'])[0] for o in outs]
for o, g in zip(outs[1:], grads[1:]): test_close(outs[0].eta, o.eta, eps=1e-5); test_close(grads[0], g, eps=1e-4)

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.compiled`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('compiled')
