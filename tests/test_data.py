"Dataset integrity, sampler determinism and the data layer's error messages."
import numpy as np
import pytest
import torch

from metaguard_nb import data
from metaguard_nb.data import Sampler, dataset_name, load
from metaguard_nb.prepare import write_idx

OFFICIAL_COUNTS = {
    ('mnist', True): [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
    ('mnist', False): [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009],
    ('fashionmnist', True): [6000] * 10,
    ('fashionmnist', False): [1000] * 10,
}


@pytest.mark.parametrize('name,train', list(OFFICIAL_COUNTS))
def test_split_shapes_dtypes_and_label_counts(name, train):
    s = load(name, train)
    n = 60000 if train else 10000
    assert s.x.shape == (n, 28, 28) and s.x.dtype == torch.uint8
    assert s.y.shape == (n,) and s.y.dtype == torch.int64
    assert s.y.bincount(minlength=10).tolist() == OFFICIAL_COUNTS[name, train]
    assert 0 < s.x.float().mean() < 255


def test_mnist_and_fashion_differ():
    assert not torch.equal(load('mnist').x[:100], load('fashionmnist').x[:100])


def test_sampler_shapes_and_range():
    x, y = Sampler(load('mnist'), seeds=[0, 1], batch_size=128)(3)
    assert x.shape == (2, 3, 128, 1, 28, 28) and y.shape == (2, 3, 128)
    assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1 and x.max() > 0.9


def test_sampler_same_seed_same_batches_different_seed_different():
    split = load('fashionmnist')
    a, b, c = (Sampler(split, seeds=s) for s in ([7], [7], [8]))
    for _ in range(3):
        (xa, ya), (xb, yb), (xc, yc) = a(2), b(2), c(2)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        assert not torch.equal(ya, yc)


def test_sampler_seed_independent_of_batch_mates():
    split = load('fashionmnist')
    _, y_many = Sampler(split, seeds=[3, 4, 5])(4)
    _, y_one = Sampler(split, seeds=[4])(4)
    assert torch.equal(y_many[1], y_one[0])


def test_sampler_state_resumes():
    s = Sampler(load('mnist'), seeds=[0, 1])
    s(1); st = s.state()
    _, y1 = s(2)
    s.set_state(st)
    _, y2 = s(2)
    assert torch.equal(y1, y2)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(ValueError, match="use one of 'mnist', 'fashionmnist'"):
        dataset_name('cifar10')
    with pytest.raises(ValueError, match='use one of'):
        load('kmnist')


def test_missing_dataset_names_prepare_command(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        load('mnist', root=tmp_path)
    msg = str(e.value)
    assert '\n' not in msg and 'make data' in msg and str(tmp_path) in msg


def test_checksum_mismatch_names_file_and_both_hashes(tmp_path):
    good = load('mnist', train=False)
    raw = tmp_path / 'MNIST' / 'raw'
    raw.mkdir(parents=True)
    x = good.x.numpy().copy()
    x[0, 0, 0] ^= 1  # one flipped bit
    write_idx(raw / 't10k-images-idx3-ubyte', x)
    write_idx(raw / 't10k-labels-idx1-ubyte', good.y.numpy().astype(np.uint8))
    for f in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'):
        (raw / f).write_bytes(b'')  # present, never read by this test
    with pytest.raises(ValueError) as e:
        load('mnist', train=False, root=tmp_path)
    msg = str(e.value)
    want = data.DATASETS['mnist'][2][False][0]
    got = data.sha256(torch.from_numpy(x))
    assert 't10k-images-idx3-ubyte' in msg and want in msg and got in msg and '\n' not in msg
