"""One T = 10 CNN unroll on 25 seeds in one call, against 25 calls of one seed (same run, same batches).

Usage: .venv/bin/python scripts/bench_unroll.py [--seeds 25] [--reps 3]
Prints the best-of-reps wall time of each, forward only and with the first-order meta-gradient."""
import argparse, time

import torch

from metaguard_nb.data import Sampler, load
from metaguard_nb.lstm import LSTMConfig, Theta, init_theta, unroll
from metaguard_nb.optimizees import cnn


def best(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter(); fn(); times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--seeds', type=int, default=25)
    ap.add_argument('--reps', type=int, default=3)
    a = ap.parse_args()
    cfg, net = LSTMConfig(), cnn()
    th = init_theta(cfg)
    W = {k: v.clone().requires_grad_() for k, v in th.W.items()}
    theta = Theta(W, th.h.clone().requires_grad_())
    seeds = list(range(a.seeds))
    xs, ys = Sampler(load('fashionmnist'), seeds)(10)
    eta = net.init(seeds)

    def batched(meta):
        r = unroll(cfg, net, eta, theta, xs, ys, meta_loss=meta)
        if meta: r.losses.mean().backward()

    def one_by_one(meta):
        for s in range(a.seeds):
            r = unroll(cfg, net, eta[s:s + 1], theta, xs[s:s + 1], ys[s:s + 1], meta_loss=meta)
            if meta: r.losses.mean().backward()

    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, CNN (7,306 parameters), T = 10, {a.seeds} seeds')
    for meta in (False, True):
        ctx = torch.enable_grad() if meta else torch.no_grad()
        with ctx:
            tb, to = best(lambda: batched(meta), a.reps), best(lambda: one_by_one(meta), a.reps)
        what = 'with first-order meta-gradient' if meta else 'forward only'
        print(f'{what:32s}: {a.seeds} seeds in one call {tb:.3f} s; {a.seeds} calls of one seed {to:.3f} s; ratio {to / tb:.2f}x')


if __name__ == '__main__':
    main()
