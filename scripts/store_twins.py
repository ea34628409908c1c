"""How far apart the results store's twins are: two runs of one method on one panel whose keys differ only in what the method
does not read (SGD: the meta-trained optimizer; L2O: lambda_eta), against the runs that differ in what it does read.

    python scripts/store_twins.py [panel]        (reads outputs/results; a second; default panel c)

For each pair of runs of SGD and of L2O with seeds in common it prints the two keys' lambda_eta and optimizers, whether the pair are
twins, how many common seeds are equal bit for bit, the largest gap in monitor loss through step 20 and over the whole run, and the
CPU each side's first common seed ran on (the info's `cpu_capability`). The twins are one computation on one machine
(tests/test_registry.py recomputes them); in the store they may come from different machines, whose float rounding parts the
trajectories later on. tests/test_paired.py holds the twins to 1e-4 through step 20.
Measured on panel (c), 2026-12-07: SGD twins (`lr1`, `gT_lr1`) 0 of 25 seeds bit-equal, 2.4e-07 through step 20, 1.6e-05 over the
run; L2O twins (`gT` on AVX2, `gT_lr1` on AVX512) 6.4e-06 through step 20, 0.23 over the run; pairs that differ in what the method
reads, 0.018 or more through step 20.
"""
import itertools, json, sys
from pathlib import Path

import numpy as np

STORE = Path(__file__).resolve().parent.parent / 'outputs' / 'results'
IGNORES = {'sgd': lambda k: {**k, 'checkpoint': None, 'checkpoint_weights': None},
           'l2o': lambda k: {**k, 'guard': {**k['guard'], 'lr_eta': None}}}


def optimizers(key):  # which optimizers the key's checkpoint is: meta-trained as g^T defines it (memory 'mean') or the shipped ones
    return 'gT' if key['checkpoint'].get('memory') == 'mean' else 'shipped'


def main(panel='c'):
    for method, without in IGNORES.items():
        keys = {run.parent: json.loads(run.read_text()) for run in sorted((STORE / panel / method).glob('*/run.json'))}
        for (f1, k1), (f2, k2) in itertools.combinations(keys.items(), 2):
            names = sorted({p.name for p in f1.glob('seed*.npz')} & {p.name for p in f2.glob('seed*.npz')})
            if not names: continue
            equal, early, whole, cpu = 0, 0.0, 0.0, None
            for n in names:
                with np.load(f1 / n, allow_pickle=True) as a, np.load(f2 / n, allow_pickle=True) as b:
                    if a['evals'].shape != b['evals'].shape: continue
                    equal += np.array_equal(a['evals'], b['evals'], equal_nan=True)
                    gap = np.abs(a['evals'][:, 0] - b['evals'][:, 0])
                    early, whole = max(early, float(gap[:3].max())), max(whole, float(gap.max()))
                    cpu = cpu or tuple(json.loads(str(z['info'])).get('cpu_capability') for z in (a, b))
            print(f"{method} {f1.name} {f2.name}: lambda_eta {k1['guard']['lr_eta']:g} / {k2['guard']['lr_eta']:g}, optimizers "
                  f"{optimizers(k1)} / {optimizers(k2)}{', twins' if without(k1) == without(k2) else ''}; {equal} of {len(names)} seeds "
                  f"bit-equal; gap {early:.2g} through step 20, {whole:.2g} over the run; cpu {cpu[0]} / {cpu[1]}")


if __name__ == '__main__':
    main(*sys.argv[1:])
