"`meta_guard.compare` on a Dask LocalCluster: the same numbers as in this process, resumed from its seed files, a failed run reported with what was kept."
import pytest
import torch
from torch import nn

from metaguard_nb.meta_guard import compare, run_path

RUNS = {'SGD': dict(method='sgd', lr_eta=0.5), 'AMG, backtrack': dict(method='amg', lr_eta=0.5, backtrack=0.5)}


def toy():
    "A linear model on random data; defined inside a function so that Dask's pickling sends the code itself to the workers."
    def make_model(seed):
        torch.manual_seed(seed)
        return nn.Linear(5, 3)

    def batches(seed):
        g = torch.Generator().manual_seed(seed)
        return [(torch.randn(16, 5, generator=g), torch.randint(0, 3, (16,), generator=g)) for _ in range(15)]

    x, y = torch.randn(64, 5, generator=torch.Generator().manual_seed(9)), torch.randint(0, 3, (64,), generator=torch.Generator().manual_seed(9))
    return make_model, batches, lambda m: float(nn.functional.cross_entropy(m(x), y))


def test_compare_on_a_local_cluster_is_compare_here_and_resumes(tmp_path):
    make_model, batches, monitor = toy()
    here = compare(make_model, batches, monitor, RUNS, range(3), steps=3, eval_every=1, folder=tmp_path/'here', workers=0, progress=False)
    there = compare(make_model, batches, monitor, RUNS, range(3), steps=3, eval_every=1, folder=tmp_path/'there', workers=2, shard=2, progress=False)
    for label in RUNS:
        for a, b in zip(here[label], there[label]):
            assert a['branches'] == b['branches'] and len(a['branches']) == 3
            torch.testing.assert_close(torch.tensor(a['curve']), torch.tensor(b['curve']), atol=1e-5, rtol=0)
    files = sorted((tmp_path/'there').rglob('seed*.json'))
    assert len(files) == 6
    stamps = [f.stat().st_mtime_ns for f in files]
    again = compare(make_model, batches, monitor, RUNS, range(3), steps=3, eval_every=1, folder=tmp_path/'there', workers=2, progress=False)
    assert again == there and [f.stat().st_mtime_ns for f in files] == stamps  # read back, nothing recomputed
    assert run_path(tmp_path, 'AMG, backtrack', RUNS['AMG, backtrack'], 3, 1, 0) != run_path(tmp_path, 'AMG, backtrack', RUNS['AMG, backtrack'], 4, 1, 0)


def test_a_failed_run_names_itself_and_keeps_the_finished_seeds(tmp_path):
    make_model, batches, monitor = toy()
    def fails_on_seed_2(seed):
        if seed == 2: raise RuntimeError('no model for seed 2')
        return make_model(seed)
    with pytest.raises(RuntimeError, match=r"'SGD' seeds \[2\] failed: RuntimeError\('no model for seed 2'\).*call compare again"):
        compare(fails_on_seed_2, batches, monitor, {'SGD': RUNS['SGD']}, range(3), steps=2, eval_every=1, folder=tmp_path, workers=1, shard=1,
                progress=False)
    kept = sorted(p.name for p in tmp_path.rglob('seed*.json'))
    assert 'seed2.json' not in kept and set(kept) <= {'seed0.json', 'seed1.json'}
