# ---
# jupyter:
#   kernelspec:
#     display_name: python3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Appendix: speed, the seed-batched guards against the plain eager reference
#
# > python -m metaguard_nb.bench: seed-steps per second of every method, seed-batched and compiled, against a plain eager per-seed reference on the same batches.

# %% [markdown]
# ```bash
# make bench        # = python -m metaguard_nb.bench --out outputs/bench.json
# ```
#
# SMG and AMG spend 20-30 optimizee gradient evaluations, 20-30 LSTM steps over every coordinate and
# one backward pass through a T = 10 unroll on every step, and the paper's protocol is 4 panels x 6
# methods x 25 seeds x 2,000 steps. How fast the library runs decides whether a reader can regenerate
# the figure at all, so we measure it against the program a careful reader would write first: a
# **plain eager reference**, one seed at a time in a Python loop, the optimizee an `nn.Module` whose
# gradient comes from autograd, the learned optimizer two `torch.nn.LSTMCell` and a `Linear`, and
# Python `if`s for the guards: the second implementation of chapter [05_reference](05_reference.ipynb),
# whose check (the same branches and parameters as the library, in float64) must pass before the
# benchmark reports a speed.
#
# The unit is **seed-steps per second**: S seeds advanced by one step of the method in t seconds
# count S/t. Both programs get the same batches (drawn before the clock starts) and the same number
# of threads.

# %%
#| default_exp bench

# %%
#| export
import argparse, builtins, ctypes, json, math, os, platform, sys, threading, time
from pathlib import Path

import torch
from torch.profiler import profile
from torch.utils.flop_counter import FlopCounterMode

from metaguard_nb.data import checkout
from metaguard_nb.guards import METHODS, GuardConfig, get_method, init_state, step_batches
from metaguard_nb.optimizees import batched_grad
from metaguard_nb.reference import BENCH_SETTINGS, bench_batches, bench_problem, check, compare, library_program, reference_program
from metaguard_nb.runner import PROTOCOLS, Protocol, check_device, evaluate, make_problem, paper_methods, record_rows, setting_checkpoint

# %%
from fastcore.test import test_close, test_eq, test_fail


# %% [markdown]
# ## Timing both programs
#
# The batches of every step are drawn once, before either clock starts. Peak memory is the process's resident set on the CPU (sampled while the clock runs,
# after `malloc_trim` has returned what earlier rows freed; it includes PyTorch itself and the
# datasets), and `torch.cuda.max_memory_allocated` on a GPU. (Making glibc return every
# freed block at once instead, `mallopt(M_MMAP_THRESHOLD)`, was measured to halve the library's
# speed: every new tensor then costs fresh zeroed pages.)

# %%
#| export
def _trim():
    "Hand the memory glibc keeps from freed tensors back to the OS, so the resident set starts from live memory."
    try: ctypes.CDLL('libc.so.6').malloc_trim(0)
    except (OSError, AttributeError): pass  # not glibc: the peak then includes memory freed earlier

def _rss() -> int:
    with open('/proc/self/statm') as f: return int(f.read().split()[1])*os.sysconf('SC_PAGE_SIZE')

class PeakMemory:
    "Peak memory in bytes while the block runs: CUDA allocations, or the resident set sampled every 2 ms."
    def __init__(self,
                 device:torch.device, # the device whose peak memory is measured
                ): self.device, self.peak = device, 0
    def __enter__(self):
        if self.device.type == 'cuda': torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _trim()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True); self._thread.start()
        return self
    def _sample(self):
        while not self._stop.wait(0.002): self.peak = max(self.peak, _rss())
    def __exit__(self, *exc):
        if self.device.type == 'cuda': self.peak = torch.cuda.max_memory_allocated(self.device)
        else: self._stop.set(); self._thread.join(); self.peak = max(self.peak, _rss())

def _sync(device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


# %%
#| export
def _clock(advance, batches:list, warmup:int, device) -> tuple:
    "Call advance(b) -> branches [S] on every batch; (best seconds of the timed calls, peak memory, branches [S, n])."
    if not 0 <= warmup < len(batches): raise ValueError(f'warmup={warmup} with {len(batches)} batches: time at least one step')
    times, branches = [], []
    def timed(b):
        _sync(device); t0 = time.perf_counter()
        branches.append(advance(b))
        _sync(device); times.append(time.perf_counter() - t0)
    for b in batches[:warmup]: timed(b)
    with PeakMemory(device) as peak:
        for b in batches[warmup:]: timed(b)
    return min(times[warmup:]), peak.peak, torch.stack(branches, 1)

def time_program(program, # `reference.library_program` or `reference.reference_program`
                 method:str, # a registered method's name (`guards.METHODS`), e.g. 'amg'
                 p, # the benchmark problem (`reference.bench_problem`)
                 batches:list, # the steps' batches (`reference.bench_batches`)
                 warmup:int, # untimed steps before the timed ones
                 gcfg:GuardConfig, # guard settings (`guards.GuardConfig`)
                )->dict:
    "`reference.library_program` or `reference.reference_program` timed: seconds per step (best of the timed steps), peak memory, final eta and branches."
    advance, eta = program(method, p, gcfg)
    seconds, peak, branch = _clock(advance, batches, warmup, p.eta0.device)
    return dict(seconds=seconds, peak=peak, eta=eta(), branch=branch)

def bench_one(method:str, # a registered method's name (`guards.METHODS`), e.g. 'amg'
              net:str, # optimizee network, 'mlp' or 'cnn'
              S:int, # number of seeds
              steps:int=2, # timed steps
              warmup:int=1, # untimed steps before the timed ones
              device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
              compile:bool=True, # use the torch.compile'd LSTM step (appendix A2_compiled)
              reference:bool=True, # also time the eager reference (chapter 05_reference)
             )->dict:
    "Ours and the reference on `S` seeds of the (net, FashionMNIST) setting, float32: one row of bench.json."
    p = bench_problem(net, S, device)
    batches = bench_batches(p, warmup + steps)
    row = dict(method=method, net=net, dataset='fashionmnist', seeds=S, steps=steps, warmup=warmup,
               device=str(p.eta0.device), compile=compile)
    ours = time_program(library_program, method, p, batches, warmup, GuardConfig(compile=compile))
    row.update(ours_seed_steps_per_s=S/ours['seconds'], ours_peak_mb=ours['peak']/2**20)
    if reference:
        ref = time_program(reference_program, method, p, batches, warmup, GuardConfig(compile=compile))
        row.update(ref_seed_steps_per_s=S/ref['seconds'], ref_peak_mb=ref['peak']/2**20, ratio=ref['seconds']/ours['seconds'],
                   float32_max_abs_diff=compare(ours, ref)['max_abs_diff'])
    return row


# %% [markdown]
# A small run, as the test suite does it: every method on the MLP, one and two seeds, one timed step
# (a few dozen seconds here).

# %%
from fastprogress.fastprogress import progress_bar

# %%
rows = [bench_one(m, 'mlp', S, steps=1, warmup=1, compile=False) for m in progress_bar(list(METHODS)) for S in (1, 2)]
test_eq(len(rows), 2*len(METHODS))
assert all(r['ratio'] > 0 and r['ours_peak_mb'] > 0 for r in rows)


# %% [markdown]
# ## The full benchmark
#
# Every method, at S = 1 and S = 25, on the CNN and the MLP, ours against the reference; the table
# gives the ratio ours / reference (higher is better for us), and `outputs/bench.json` keeps every
# row with the machine it ran on. `--device cuda` times the same on a GPU (the reference too).

# %%
#| export
def ratio_table(rows:list, # bench.json's rows (`bench_one`'s dicts)
               )->str:
    "Markdown: seed-steps/s of ours and the reference, their ratio, peak memory, the check; one line per row."
    head = ('| net | method | S | ours (seed-steps/s) | reference | ours / reference | peak MB ours | peak MB reference | check |\n'
            '|---|---|---|---|---|---|---|---|---|\n')
    line = lambda r: (f"| {r['net']} | {r['method']} | {r['seeds']} | {r['ours_seed_steps_per_s']:.2f} | "
                      f"{r.get('ref_seed_steps_per_s', math.nan):.2f} | {r.get('ratio', math.nan):.2f}x | "
                      f"{r['ours_peak_mb']:.0f} | {r.get('ref_peak_mb', math.nan):.0f} | "
                      f"{'ok' if r.get('ok') else 'FAILED' if 'ok' in r else '-'} ({r.get('max_abs_diff', math.nan):.1e}) |\n")
    return head + ''.join(line(r) for r in rows)

def profile_step(method:str='amg', # a registered method's name (`guards.METHODS`), e.g. 'amg'
                 net:str='cnn', # optimizee network, 'mlp' or 'cnn'
                 S:int=25, # number of seeds
                 device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
                 compile:bool=True, # use the torch.compile'd LSTM step (appendix A2_compiled)
                 rows:int=12, # operators to list
                )->str:
    "torch.profiler's top operators (self time) of one step of the library, after one warm-up step."
    p = bench_problem(net, S, device)
    b1, b2 = bench_batches(p, 2)
    step, cfg = get_method(method).step, GuardConfig(compile=compile)
    st, _ = step(cfg, p.lstm_cfg, p.optimizee, init_state(method, p.eta0, p.theta), b1)
    with profile() as prof:
        step(cfg, p.lstm_cfg, p.optimizee, st, b2); _sync(p.eta0.device)
    return prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=rows)

def projected_hours(rows:list, # bench.json's rows (`bench_one`'s dicts)
                    net:str='cnn', # optimizee network, 'mlp' or 'cnn'
                    S:int=PROTOCOLS['paper'].seeds, # number of seeds
                    steps:int=PROTOCOLS['paper'].steps, # steps per seed-run
                    methods=None, # methods to add up (None: the paper's six)
                   )->dict:
    "Hours of one paper-protocol panel (S seeds x `steps` steps per method; `methods` default: the paper's six) at the measured rates, evaluations not included."
    rate = {r['method']: r['ours_seed_steps_per_s'] for r in rows if r['net'] == net and r['seeds'] == S}
    hours = {m: S*steps/rate[m]/3600 for m in (methods or paper_methods()) if m in rate}
    return dict(hours, total=sum(hours.values()))

def machine() -> dict:
    "Where a benchmark ran."
    return dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu=platform.processor() or platform.machine(),
                cores=os.cpu_count(), python=platform.python_version(),
                gpu=torch.cuda.get_device_name() if torch.cuda.is_available() else None)

def _known(methods, nets):
    bad = [m for m in methods if m not in METHODS]
    if bad: raise ValueError(f"unknown method(s) {bad}: use any of {', '.join(METHODS)}")
    bad = [n for n in nets if n not in BENCH_SETTINGS]
    if bad: raise ValueError(f"unknown net(s) {bad}: use any of {', '.join(BENCH_SETTINGS)}")


# %%
#| export
def bench(methods=tuple(METHODS), # registered methods' names
          nets=('cnn', 'mlp'), # optimizee networks to time
          seeds=(1, 25), # seed counts S to time
          steps:int=2, # timed steps per row
          warmup:int=1, # untimed steps before the timed ones
          device:str='cpu', # torch device to run on, e.g. 'cpu' or 'cuda'
          compile:bool=True, # use the torch.compile'd LSTM step (appendix A2_compiled)
          reference:bool=True, # also time the eager reference (chapter 05_reference)
          out:str|Path|None=None, # bench.json to write (default: outputs/bench/bench.json)
          log=print, # where progress lines go
         )->list:
    "Run every (net, S, method) row; write them to `out` as they finish (an interrupted run keeps what it measured)."
    _known(methods, nets)
    if steps < 1 or warmup < 0: raise ValueError(f'steps={steps}, warmup={warmup}: use steps >= 1 and warmup >= 0')
    check_device(device)
    rows = []
    for net in nets:
        for m in methods:
            checked = check(m, net, device=device, compile=compile) if reference else {}
            for S in seeds:
                t0 = time.perf_counter()
                rows.append(dict(bench_one(m, net, S, steps, warmup, device, compile, reference), **checked))
                r = rows[-1]
                log(f"{net} S={S:<3d}{m:16s} ours {r['ours_seed_steps_per_s']:8.2f} seed-steps/s"
                    + (f"  reference {r['ref_seed_steps_per_s']:8.2f}  ratio {r['ratio']:5.2f}x  check "
                       f"{'ok' if r['ok'] else 'FAILED'} ({r['max_abs_diff']:.1e})" if reference else '')
                    + f"  [{time.perf_counter() - t0:.0f} s]")
                if out: _write(out, rows)
    return rows

def _write(out, rows):
    out = Path(out); out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + '.tmp')
    tmp.write_text(json.dumps(dict(machine=machine(), rows=rows), indent=1))
    tmp.replace(out)


# %%
#| export
def main(argv=None, # command-line arguments (default: the process arguments)
        ):
    ap = argparse.ArgumentParser(prog='python -m metaguard_nb.bench', description=__doc__)
    ap.add_argument('--methods', nargs='+', default=list(METHODS))
    ap.add_argument('--nets', nargs='+', default=['cnn', 'mlp'])
    ap.add_argument('--seeds', nargs='+', type=int, default=[1, 25])
    ap.add_argument('--steps', type=int, default=2, help='timed steps (the best one counts)')
    ap.add_argument('--warmup', type=int, default=1, help='untimed steps first (they include compilation)')
    ap.add_argument('--device', default='cpu')
    ap.add_argument('--no-compile', dest='compile', action='store_false', help='eager LSTM step in the library too')
    ap.add_argument('--no-reference', dest='reference', action='store_false', help='time the library only')
    ap.add_argument('--out', default=str((checkout() or Path.cwd())/'outputs'/'bench.json'))
    ap.add_argument('--profile', action='store_true', help="print the profile of one step per method, net and S instead")
    ap.add_argument('--layout', action='store_true', help="print layout_rates per method, net and S instead (CPU)")
    ap.add_argument('--shares', action='store_true', help="print protocol_shares per method, net and S instead")
    ap.add_argument('--ceiling', action='store_true', help="print speed_ceiling per method, net and S instead (CPU), "
                    "against the reference's rate in --out's rows")
    a = ap.parse_args(argv)
    if a.ceiling:
        try: _known(a.methods, a.nets)
        except ValueError as e: sys.exit(f'error: {e}')
        rows = json.loads(Path(a.out).read_text())['rows'] if Path(a.out).exists() else []
        ref = {(r['method'], r['net'], r['seeds']): r.get('ref_seed_steps_per_s') for r in rows}
        for net in a.nets:
            for S in a.seeds:
                for m in a.methods: print(json.dumps(speed_ceiling(m, net, S, ref.get((m, net, S)))))
        return
    if a.layout or a.shares:
        try: _known(a.methods, a.nets)
        except ValueError as e: sys.exit(f'error: {e}')
        for net in a.nets:
            for S in a.seeds:
                for m in a.methods:
                    print(json.dumps(layout_rates(m, net, S, a.steps) if a.layout else protocol_shares(m, net, S, a.steps)), flush=True)
        return
    if a.profile:
        for net in a.nets:
            for S in a.seeds:
                for m in a.methods: print(f'{m}, {net}, S = {S}, compile={a.compile}\n' + profile_step(m, net, S, a.device, a.compile))
        return
    try: rows = bench(a.methods, a.nets, a.seeds, a.steps, a.warmup, a.device, a.compile, a.reference, a.out)
    except ValueError as e: sys.exit(f'error: {e}')
    print(ratio_table(rows)); print('wrote', a.out)
    if any(not r.get('ok', True) for r in rows): sys.exit('error: the reference disagrees with the library (see "check" above)')


# %% [markdown]
# The shipped numbers, from `make bench` on the machine named in the file:

# %%
from IPython.display import Markdown

# %%
shipped = json.loads(((checkout() or Path('..'))/'outputs'/'bench.json').read_text())
print(shipped['machine'])
Markdown(ratio_table(shipped['rows']))


# %% [markdown]
# ## What the numbers say
#
# The shipped `bench.json` (above) is one run of both programs on the same batches, so its ratios
# are comparable with each other; its absolute rates are not comparable across runs or days, because
# this shared virtual machine's speed drifts between them while the ratios of one run hold. In
# words, generated from the file:

# %%
def bench_words(rows:list) -> str:
    "What the shipped benchmark says, read from its rows."
    r = {(x['net'], x['method'], x['seeds']): x['ratio'] for x in rows}
    at = lambda net, S: [v for (n, m, s), v in r.items() if n == net and s == S]
    cheap = [v for (n, m, s), v in r.items() if s == 25 and m in ('sgd', 'l2o', 'lgl2o', 'lgl2o_no_update')]
    return (f"At 25 seeds the library runs AMG at {r['cnn', 'amg', 25]:.2f}x the plain reference and SMG at {r['cnn', 'smg', 25]:.2f}x "
            f"on the CNN, {r['mlp', 'amg', 25]:.2f}x and {r['mlp', 'smg', 25]:.2f}x on the MLP; the cheap methods at "
            f"{min(cheap):.2f}x to {max(cheap):.2f}x. At one seed it runs at {min(at('cnn', 1) + at('mlp', 1)):.2f}x to "
            f"{max(at('cnn', 1) + at('mlp', 1)):.2f}x: one seed's kernels are small, and the per-seed reference has nothing to lose.")

Markdown(bench_words(shipped['rows']))


# %% [markdown]
# What moved the ratios over the project's life: the loss's share of the gates computed once per
# seed outside the compiled graph, the compiled step in tiles with a recomputing backward (mostly a
# memory win), and, for the protocol rather than this table, the evaluations seed by seed and the
# test split every 100 steps (below). What limits it: the per-seed reference was never slow. One
# seed's gate tensors (7,306 x 80 floats) stay in the CPU's cache, 25 seeds' do not, and on this
# machine the cache is what the LSTM's matrix products run at; and the LSTM's elementwise work,
# fused by Inductor, is bound by its transcendental functions. The cell below measures the two
# kernels the LSTM step is made of, at one seed's size and at 25 seeds' size (its saved output is
# from a quiet machine: rerun it to see yours):

# %%
def rate(f, n=20):
    for _ in range(3): f()
    t0 = time.perf_counter()
    for _ in range(n): f()
    return (time.perf_counter() - t0)/n

for S in (1, 25):
    h, w, gates = torch.randn(S, 7306, 20), torch.randn(S, 20, 80), torch.randn(S, 7306, 80)
    print(f'S = {S:2d}: gates = h @ W_hh: {2*h.numel()*80/rate(lambda: torch.bmm(h, w))/1e9:6.1f} GFLOP/s; '
          f'sigmoid(gates): {2*4*gates.numel()/rate(lambda: torch.sigmoid(gates))/1e9:6.1f} GB/s')

# %% [markdown]
# The matrix product runs faster at one seed's size than at 25 seeds' (the cell above), and so does
# the sigmoid per byte: whatever the seed-batched step wins by fusing operations it loses by leaving
# the cache, and the per-seed loop has no Python overhead worth saving, because each of its
# operations already touches 7,306 x 80 numbers. The remedies we tried on AMG (CNN, 25 seeds), in
# the order tried, and what each did to the step's time:
#
# | change | effect |
# |---|---|
# | `torch.compile` of the LSTM step, shapes dynamic | faster than the eager seed-batched step |
# | static shapes | the largest single gain |
# | loss features folded into a per-seed bias | the LSTM alone faster, the whole step within noise |
# | seeds in cache-sized chunks inside the step | slower: the chunks' concatenation costs more than the cache saves |
# | `mode='max-autotune-no-cudagraphs'` (fused GEMM epilogues) | within this machine's noise, and minutes of autotuning on a GPU: not adopted |
# | `torch._functorch.config.activation_memory_budget` low (the compiled backward recomputes the LSTM's activations) | less memory, slower: not adopted, but a user short of memory can set it before the first step |
#
# At one seed the profile of an AMG step (`python -m metaguard_nb.bench --profile --methods amg --nets
# cnn --seeds 1`) is shared between matrix products, the convolutions (forward and backward) and the
# fused LSTM arithmetic, the convolutions the largest part.
#
# ## A ceiling for PyTorch's kernels
#
# How much faster could a step be, on this machine, with any arrangement of PyTorch's own kernels?
# Count the step's work, and time it at the best rate those kernels reach on the step's shapes.
# `step_flops` counts one step's floating-point operations with torch's `FlopCounterMode`, per
# operator family: the matrix products (the LSTM's gates and their backward, the optimizee's linear
# layer) and the convolutions (forward and backward). `speed_ceiling` times, for all S seeds in one
# kernel and for one seed per kernel (the reference's arrangement, whose tensors stay in cache),
# - the three products an LSTM step is made of (gates, weight gradient, input gradient), each as one
#   2-D `torch.mm` into a preallocated output (the most favourable form: no per-seed weights, no
#   allocation), keeping the fastest;
# - the convolutions inside one gradient of the optimizee (their own time in torch.profiler,
#   activations and loss left out),
#
# and divides, with the better of the two arrangements for each family: the step can take no less
# than (product flops / best product rate + convolution flops / best convolution rate), with every
# other operation (sigmoids, tanhs, preprocessing, sums, the guard, Python) free. The reference's
# measured time over that floor is the largest ratio any arrangement of these kernels could show,
# and the reference's time / 3 minus the floor is what a step three times as fast would have left for everything else.

# %%
#| export
MATMUL_OPS, CONV_OPS = ('mm', 'bmm', 'addmm', 'baddbmm'), ('convolution', 'convolution_backward')

def _flops(f) -> dict:
    "Floating-point operations of f() by family, counted by torch's FlopCounterMode: {'matmul', 'conv', 'other'}."
    with FlopCounterMode(display=False) as fc: f()
    out = dict(matmul=0, conv=0, other=0)
    for op, n in fc.get_flop_counts()['Global'].items():
        name = str(op).split('.')[-1]
        out['matmul' if name in MATMUL_OPS else 'conv' if name in CONV_OPS else 'other'] += n
    return out

def step_flops(method:str, # a registered method's name (`guards.METHODS`), e.g. 'amg'
               p, # the benchmark problem (`reference.bench_problem`)
               b, # one step's batches (`guards.Batches`)
              )->dict:
    "Floating-point operations of one (eager) library step of `method` on problem p and Batches b, by family."
    st = init_state(method, p.eta0, p.theta)
    return _flops(lambda: get_method(method).step(GuardConfig(compile=False), p.lstm_cfg, p.optimizee, st, b))

def _best_seconds(f, n:int=10) -> float:
    for _ in range(2): f()
    times = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); times.append(time.perf_counter() - t0)
    return min(times)

def _rates(p, b, S:int) -> tuple:
    "(best matrix-product rate, convolution rate) in flop/s on the shapes of S seeds of problem p (seed 0's Batches b), on the CPU."
    m, H = p.eta0.shape[1], p.lstm_cfg.hidden
    mm = 0
    for (r, k), n in [((S*m, H), 4*H), ((H, S*m), 4*H), ((S*m, 4*H), H)]:  # gates, weight gradient, input gradient
        a, w, o = torch.randn(r, k), torch.randn(k, n), torch.empty(r, n)
        mm = max(mm, 2*r*k*n/_best_seconds(lambda: torch.mm(a, w, out=o)))
    eta = p.eta0[:1].expand(S, -1).contiguous()
    xs, ys = b.xs[:1, 0].expand(S, *b.xs.shape[2:]), b.ys[:1, 0].expand(S, -1)
    grad = lambda: batched_grad(p.optimizee, eta, xs, ys)
    work = _flops(lambda: batched_grad(p.optimizee, eta[:1], xs[:1], ys[:1]))['conv']*S
    if not work: return mm, math.nan
    for _ in range(2): grad()
    with profile() as prof: grad()
    return mm, work/(sum(e.self_cpu_time_total for e in prof.key_averages() if 'conv' in e.key)/1e6)

def speed_ceiling(method:str='amg', # a registered method's name (`guards.METHODS`), e.g. 'amg'
                  net:str='cnn', # optimizee network, 'mlp' or 'cnn'
                  S:int=25, # number of seeds
                  ref_seed_steps_per_s:float|None=None, # the reference's measured seed-steps per second, to compare against (None: not compared)
                  target:float=3.0, # speed-up over the reference the ceiling is checked against
                 )->dict:
    "The least time an S-seed step of PyTorch's CPU kernels could take: its products and convolutions, each at the best rate measured on the step's batched or one-seed shapes; all other work free."
    p = bench_problem(net, 1, 'cpu')
    b, = bench_batches(p, 1)
    f = step_flops(method, p, b)  # one seed's work; every seed does the same
    (mm_b, conv_b), (mm_1, conv_1) = _rates(p, b, S), _rates(p, b, 1)  # all S seeds per kernel, one seed per kernel
    mm, conv = max(mm_b, mm_1), max(conv_b, conv_1)
    floor = S*(f['matmul']/mm + (f['conv']/conv if f['conv'] else 0))
    out = dict(method=method, net=net, seeds=S, matmul_gflop=S*f['matmul']/1e9, conv_gflop=S*f['conv']/1e9,
               matmul_gflop_per_s=dict(batched=mm_b/1e9, one_seed=mm_1/1e9), conv_gflop_per_s=dict(batched=conv_b/1e9, one_seed=conv_1/1e9),
               floor_seconds=floor)
    if ref_seed_steps_per_s:
        ref = S/ref_seed_steps_per_s
        out.update(ref_seconds=ref, ceiling=ref/floor, left_for_the_rest_at_target=ref/target - floor)
    return out


# %% [markdown]
# The count is the arithmetic of the method, not an estimate: an LSTM step costs 2 x (3 x H x 4H + H) =
# 9,640 flops of matrix products per coordinate (H = 20; the two gradient features' share of the gates,
# 2 x 2 x 4H more, is computed as two broadcast products, see `coordinate_step`), and an AMG step makes
# 20 LSTM steps forward (the learned unroll, the unrolled fallback) and differentiates 10 of them once
# (twice the forward's products), 40 x 9,640 per coordinate; the optimizee's linear layer adds a little:

# %%
p_cnn = bench_problem('cnn', 1, 'cpu')
b_cnn, = bench_batches(p_cnn, 1)
flops_amg = step_flops('amg', p_cnn, b_cnn)
lstm_step_flops = p_cnn.eta0.shape[1]*2*(3*20*80 + 20)
print({k: f'{v/1e9:.3f} GFLOP' for k, v in flops_amg.items()}, f'40 LSTM steps: {40*lstm_step_flops/1e9:.3f} GFLOP')
test_close(flops_amg['matmul'], 40*lstm_step_flops, eps=0.01*flops_amg['matmul'])
assert flops_amg['conv'] > 0 and step_flops('sgd', p_cnn, b_cnn)['matmul'] < lstm_step_flops  # SGD: no LSTM

# %% [markdown]
# The ceiling of AMG and SMG at S = 25 on the CNN, against the reference's shipped rates:

# %%
ref_rate = {(r['method'], r['seeds']): r['ref_seed_steps_per_s'] for r in shipped['rows'] if r['net'] == 'cnn'}
ceilings = [speed_ceiling(m, 'cnn', 25, ref_rate[m, 25]) for m in ('amg', 'smg')]
for c in ceilings: print({k: round(v, 2) if isinstance(v, float) else v for k, v in c.items()})

# %% [markdown]
# `ceiling` above is the reference's time over that floor, and `left_for_the_rest_at_target` what a
# step three times as fast as the reference would have left for everything but the products and the
# convolutions: negative means that even with every other operation free, no arrangement of these
# kernels reaches it.
#
# So **a step three times the reference's speed is out of reach of PyTorch's CPU kernels on this
# machine**: the products and convolutions alone take a third or more of the reference's time, and
# the LSTM's elementwise work of 30 steps (forward and backward, over every coordinate of 25 seeds)
# would have to become several times cheaper, that is, run inside the products on tiles that stay
# in cache: a hand-written fused LSTM kernel (C++ or Triton), outside this project's pure-PyTorch
# functional core, plus convolutions faster than oneDNN's on these small channels.
#
# On a GPU the balance is different: the per-seed loop launches hundreds of small kernels per step
# and the batched step a few large ones. `scripts/gpu_check.py` times both there (and checks that no
# step waits for the GPU); [03d_grid](03d_grid.ipynb) shows what the lent GPU measured.
#
# The paper protocol on this CPU, projected from the shipped rates (hours: 2,000 steps x 25 seeds of
# each of the paper's six methods, without the evaluations every 10 steps):

# %%
{net: {k: round(v, 1) for k, v in projected_hours(shipped['rows'], net).items()} for net in ('cnn', 'mlp')}


# %% [markdown]
# ## Tiles, fused kernels, layout, and where the rest of a protocol step goes
#
# Three more levers, measured on this machine (AMG and SMG at S = 25, the library alone; separate
# processes, rounds interleaved, so that the machine's drift between runs hits every variant alike).
#
# **Per-seed terms out of the compiled graph.** Inside one graph, Inductor fused the loss's share of
# the first cell's gates into the per-coordinate loop and recomputed it, with scalar gathers, for each
# of the S x m coordinates. Computed once per seed outside (`lstm.seed_terms`), the LSTM's steps got
# faster with the same numbers to float rounding, while a whole AMG step did not measurably change:
# the LSTM's elementwise work is bound by its transcendental functions (three sigmoids and two tanhs
# per unit and layer, on rows of 20 that fill one and a quarter AVX-512 vectors), not by memory.
#
# **Tiles of coordinates, recomputed in the backward** (`GuardConfig(tile=...)`, appendix
# [A2_compiled](A2_compiled.ipynb)). Tiles do not make the kernels faster by keeping the gates in
# cache (the elementwise loops are compute-bound, above); what they buy is memory: the forward saves
# nothing, the backward recomputes one tile at a time, and 25-seed AMG's peak memory falls by a third
# or more, at the same speed or a little faster, for every tile size from 128 to 512 coordinates
# that we tried. The default on a CPU is tiles of 12,800 (seed, coordinate) rows, 512 coordinates of
# 25 seeds; a single seed then gets tiles of 12,800 coordinates, because 512-coordinate tiles of one
# seed were slower, each tile's call costing more than its arithmetic. On a GPU the one-graph step is
# kept.
#
# **Inductor's C++ GEMM template** (`torch._inductor.config.max_autotune = True`,
# `max_autotune_gemm_backends = 'CPP,ATEN'`, on this AVX-512 CPU): its autotuner timed the template
# against ATen's `bmm` for each of the step's products and chose ATen's for all but a product this
# chapter's step no longer makes. It could not fuse the gate arithmetic into the product: each hidden
# unit needs its four gates, which lie 20 columns apart. Ten LSTM steps ran no faster than with the
# default compile, at several times the compilation time. Not adopted.

# %% [markdown]
# **Layout: one process of two threads, or two processes of one thread over seed halves?** The
# grid of independent seed-runs can be laid out either way (nbs/03d_grid). `layout_rates` runs the
# same S-seed AMG step both ways, the two processes side by side (started together behind a barrier),
# and reports the total seed-steps per second:

# %%
#| export
def _layout_worker(method, net, seeds, steps, threads, barrier, out):
    "One process of a layout measurement: `threads` torch threads, `seeds` of problem `net`, `steps` timed steps."
    torch.set_num_threads(threads)
    p = make_problem(BENCH_SETTINGS[net], list(seeds), 'cpu', setting_checkpoint(BENCH_SETTINGS[net]))
    batches = bench_batches(p, steps + 1)
    step, st, cfg = get_method(method).step, init_state(method, p.eta0, p.theta), GuardConfig()
    st, _ = step(cfg, p.lstm_cfg, p.optimizee, st, batches[0])  # compiles
    barrier.wait()
    t0 = time.perf_counter()
    for b in batches[1:]: st, _ = step(cfg, p.lstm_cfg, p.optimizee, st, b)
    out.put((len(seeds)*steps, time.perf_counter() - t0))

def layout_rates(method:str='amg', # a registered method's name (`guards.METHODS`), e.g. 'amg'
                 net:str='cnn', # optimizee network, 'mlp' or 'cnn'
                 S:int=25, # number of seeds
                 steps:int=3, # timed steps per layout
                 cores:int=2, # cores to share: threads of one process, or processes of one thread
                )->dict:
    "Seed-steps per second of one process with `cores` threads, and of `cores` processes of one thread over seed shares."
    import multiprocessing as mp
    from metaguard_nb.bench import _layout_worker as worker  # importable by the spawned processes
    ctx, out = mp.get_context('spawn'), {}
    for name, parts in (('1 process x %d threads' % cores, 1), ('%d processes x 1 thread' % cores, cores)):
        q, barrier = ctx.Queue(), ctx.Barrier(parts)
        shares = [range(S)[i::parts] for i in range(parts)]
        procs = [ctx.Process(target=worker, args=(method, net, sh, steps, cores//parts, barrier, q)) for sh in shares]
        for pr in procs: pr.start()
        res = [q.get() for _ in procs]
        for pr in procs: pr.join()
        out[name] = sum(n for n, _ in res)/max(t for _, t in res)
    return dict(method=method, net=net, seeds=S, steps=steps, seed_steps_per_s={k: round(v, 2) for k, v in out.items()})


# %%
layout_rates('amg', 'mlp', S=2, steps=1)


# %% [markdown]
# The cell above runs it on a toy size; `python -m metaguard_nb.bench --layout --methods amg smg --nets
# cnn mlp --seeds 25 --steps 3` runs it on the protocol's. Measured that way on this 2-core machine,
# two processes of one thread beat one process of two threads for AMG and SMG on both nets, and by
# more at the grid's shard of 5 seeds: each process has half the seeds, so half the working set, and
# no thread of one waits for the other inside a kernel. The grid ([03d_grid](03d_grid.ipynb)) uses that
# layout, `LAYOUT = dict(workers=2, threads=1)`, on a `LocalCluster` of two workers. That holds in
# Dask's workers only once a task has undone the memory trimming a Dask nanny sets ([03d_grid](03d_grid.ipynb),
# "One task, on a worker"); before, a worker's AMG step took more than twice as long, and the grid's
# two workers ran slower than one process of two threads.

# %% [markdown]
# **Where the rest of a protocol step goes.** A step of the protocol is more than the method's step:
# the runner draws the step's batches, moves the records to the host and, every `eval_every` steps,
# evaluates every seed on its monitor set (2,048 examples) and on the test split (10,000).
# `protocol_shares` times each part on the protocol's shapes:

# %%
#| export
def protocol_shares(method:str='amg', # a registered method's name (`guards.METHODS`), e.g. 'amg'
                    net:str='cnn', # optimizee network, 'mlp' or 'cnn'
                    S:int=25, # number of seeds
                    steps:int=3, # timed steps
                    eval_every:int=Protocol.eval_every, # monitor-set evaluation every this many steps
                    test_every:int|None=Protocol.test_every, # test-set evaluation every this many steps (None: only at the last step)
                   )->dict:
    "Seconds per protocol step of each part (batches, the method's step, records, monitor and test evaluations spread over the steps between them), as the runner does them and as it did before (every batch made, the test split at every evaluation)."
    p, cfg = bench_problem(net, S, 'cpu'), GuardConfig()
    step, st, used = get_method(method).step, init_state(method, p.eta0, p.theta), get_method(method).inner_batches(cfg.T)
    st, _ = step(cfg, p.lstm_cfg, p.optimizee, st, step_batches(p.inner, p.evals, cfg.T))  # compiles
    t = dict(all_batches=0.0, used_batches=0.0, step=0.0, records=0.0)
    for _ in range(steps):
        t0 = time.perf_counter(); step_batches(p.inner, p.evals, cfg.T)
        t1 = time.perf_counter(); b = step_batches(p.inner, p.evals, cfg.T, used)
        t2 = time.perf_counter(); st, r = step(cfg, p.lstm_cfg, p.optimizee, st, b)
        t3 = time.perf_counter(); record_rows([r])
        t4 = time.perf_counter()
        for k, v in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)): t[k] += v/steps
    evaluate(p, st.eta)
    t0 = time.perf_counter(); evaluate(p, st.eta, test=False)
    t1 = time.perf_counter(); evaluate(p, st.eta)
    t2 = time.perf_counter()
    monitor, both = t1 - t0, t2 - t1
    before = dict(batches=t['all_batches'], step=t['step'], records=t['records'], evaluation=both/eval_every)
    now = dict(batches=t['used_batches'], step=t['step'], records=t['records'], monitor=monitor/eval_every,
               test=(both - monitor)/(test_every or eval_every))
    share = lambda d: {k: f'{v/sum(d.values()):.1%}' for k, v in d.items()}
    return dict(method=method, net=net, seeds=S, seconds_before=round(sum(before.values()), 4), share_before=share(before),
                seconds_now=round(sum(now.values()), 4), share_now=share(now), evaluation_seconds=dict(monitor=round(monitor, 3), both=round(both, 3)))


# %%
protocol_shares('sgd', 'mlp', S=2, steps=2)

# %% [markdown]
# The cell above runs it on a toy size; `python -m metaguard_nb.bench --shares --methods sgd lgl2o amg
# smg --nets cnn mlp --seeds 25 --steps 3` runs it on the protocol's. Before: the test split evaluated
# with the monitor set every 10 steps, through `vmap`, and all ten inner batches made for every method.
# Now: the test split every 100 steps (`test_every`), both sets seed by seed (a convolution without
# the seed dimension), and only the inner batches a method reads (SGD, L2O and LGL2O read $B_1$; the
# streams still advance by ten, so every method sees the same batches). Measured on the protocol's
# shapes, the evaluation went from most of a cheap baseline's protocol step on the CNN to a quarter or
# less of it, and the cheap baselines' part of the paper protocol to a fraction of its cost; for the
# adapting methods the rest of a protocol step was already small, and now is negligible.

# %%
#| export
if __name__ == '__main__' and not hasattr(builtins, '__IPYTHON__'): main()  # not when a notebook runs this cell; last, after every definition

# %% [markdown]
# ## API
#
# The public names of `metaguard_nb.bench`, their parameters as the code documents them (rendered by
# nbdev's `show_doc`; `make sync` keeps this output current).

# %%
from metaguard_nb.docs import api_reference

# %%
#| echo: false
api_reference('bench')
