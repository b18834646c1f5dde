"""Tests of genbounds.data: shapes, determinism, splits, corruptions, MNIST IDX files, errors."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import random
import urllib.request

import numpy as np
import pytest
from sklearn.datasets import load_digits

from genbounds.data import load
from genbounds.internal import data_mnist, data_mnist1d


@pytest.fixture(autouse=True)
def _no_network(monkeypatch):
    """No test may reach the network: any URL opened is a failure."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"a test tried to use the network: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def _rows(X: np.ndarray) -> list[bytes]:
    X = np.ascontiguousarray(X.reshape(X.shape[0], -1))
    return [r.tobytes() for r in X]


# ----------------------------------------------------------------------------------------------
# Shapes, dtypes, scaling


def test_digits_shapes_dtypes_and_scaling():
    ds = load("digits")
    assert (ds.n_train, ds.n_test) == (1437, 360)  # ceil(0.2 * 1797) = 360 test examples
    assert ds.X_train.shape == (1437, 64) and ds.X_test.shape == (360, 64)
    assert ds.X_train.dtype == np.float32 and ds.y_train.dtype == np.int32
    assert ds.input_shape == (64,) and ds.num_classes == 10
    # Pixels 0..16 scaled by 1/16: compare with scikit-learn's own arrays, by source index.
    raw = load_digits()
    idx = ds.metadata["train_indices"]
    np.testing.assert_array_equal(ds.X_train, (raw.data[idx] / 16.0).astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, raw.target[idx])
    assert ds.X_train.min() == 0.0 and ds.X_train.max() == 1.0

    img = load("digits", flatten=False)
    assert img.X_train.shape == (1437, 8, 8, 1) and img.input_shape == (8, 8, 1)
    np.testing.assert_array_equal(img.X_train.reshape(1437, 64), ds.X_train)
    np.testing.assert_array_equal(img.X_train[..., 0], raw.images[idx] / 16.0)


def test_mnist1d_default_split_and_nothing_written_to_cwd(tmp_path, monkeypatch):
    data_mnist1d._generate.cache_clear()
    monkeypatch.chdir(tmp_path)
    np.random.seed(123)
    random.seed(123)
    np_before, py_before = np.random.random(), random.random()
    np.random.seed(123)
    random.seed(123)
    ds = load("mnist1d")
    # make_dataset reseeds the global generators; load must have restored them.
    assert np.random.random() == np_before and random.random() == py_before
    assert os.listdir(tmp_path) == []
    assert (ds.n_train, ds.n_test) == (4000, 1000)
    assert ds.X_train.shape == (4000, 40) and ds.X_train.dtype == np.float32
    assert ds.y_train.dtype == np.int32 and set(np.unique(ds.y_train)) == set(range(10))
    # make_dataset standardises all 5000 sequences to mean 0, standard deviation 1.
    allx = np.concatenate([ds.X_train, ds.X_test]).astype(np.float64)
    assert abs(allx.mean()) < 1e-5 and abs(allx.std() - 1.0) < 1e-5
    assert load("mnist1d", flatten=False).X_train.shape == (4000, 40, 1)
    # The package's own generator gives the same arrays (its default seed 42).
    from mnist1d.data import get_dataset_args, make_dataset

    state = np.random.get_state()
    ref = make_dataset(get_dataset_args())
    np.random.set_state(state)
    np.testing.assert_array_equal(ds.X_train, ref["x"].astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, ref["y_test"])


def test_synthetic_teacher_shapes_subspace_and_task_seed():
    a = load("synthetic", n=300, n_test=100, d=50, latent_dim=5, seed=0)
    assert a.X_train.shape == (300, 50) and a.X_test.shape == (100, 50)
    assert a.X_train.dtype == np.float32 and a.y_train.dtype == np.int32
    # The inputs lie on a latent_dim-dimensional subspace of R^d: rank 5.
    X = np.concatenate([a.X_train, a.X_test]).astype(np.float64)
    s = np.linalg.svd(X, compute_uv=False)
    assert s[4] > 1e-3 * s[0] and s[5] < 1e-5 * s[0]
    # Each coordinate has variance 1 on average: E||x||^2 = d.
    assert abs(np.mean(np.sum(X**2, axis=1)) / 50 - 1.0) < 0.1
    # Same task (task_seed) with another sample (seed): the same subspace, other points.
    b = load("synthetic", n=300, n_test=100, d=50, latent_dim=5, seed=1)
    assert not np.array_equal(a.X_train, b.X_train)
    s2 = np.linalg.svd(np.concatenate([X, b.X_train]), compute_uv=False)
    assert s2[5] < 1e-5 * s2[0]
    c = load("synthetic", n=300, n_test=100, d=50, latent_dim=5, seed=1, task_seed=1)
    s3 = np.linalg.svd(np.concatenate([X, c.X_train]), compute_uv=False)
    assert s3[9] > 1e-3 * s3[0]  # two different 5-dimensional subspaces
    # The teacher's centring gives every class some mass.
    assert np.bincount(a.y_train, minlength=10).min() > 0


def test_synthetic_dziugaite_roy_size_and_mixture():
    ds = load("synthetic", n=55000, n_test=1000, d=784, binary=True)
    assert ds.X_train.shape == (55000, 784) and ds.X_train.dtype == np.float32
    assert ds.num_classes == 2 and 0.3 < ds.y_train.mean() < 0.7
    mix = load("synthetic", task="mixture", n=2000, n_test=500, d=20, num_classes=3, separation=4.0)
    assert mix.num_classes == 3 and set(np.unique(mix.y_train)) == {0, 1, 2}
    # Within a class the noise is N(0, I): the pooled within-class covariance is about I.
    X, y = mix.X_train.astype(np.float64), mix.y_train
    resid = X - np.stack([X[y == c].mean(0) for c in range(3)])[y]
    cov = resid.T @ resid / len(y)
    assert np.max(np.abs(cov - np.eye(20))) < 0.15


# ----------------------------------------------------------------------------------------------
# Determinism and the split


def test_deterministic_per_seed():
    kw = dict(label_noise=0.3, corruption="random_pixels")
    a, b = load("digits", seed=5, **kw), load("digits", seed=5, **kw)
    for f in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    c = load("digits", seed=6, **kw)
    assert not np.array_equal(a.metadata["test_indices"], c.metadata["test_indices"])
    s1 = load("synthetic", n=50, n_test=20, d=10, seed=3)
    s2 = load("synthetic", n=50, n_test=20, d=10, seed=3)
    np.testing.assert_array_equal(s1.X_train, s2.X_train)


@pytest.mark.parametrize(
    ("name", "kw"),
    [
        ("digits", {}),
        ("digits", {"test_fraction": 0.35, "seed": 4}),
        ("digits", {"n": 300, "n_test": 50, "seed": 2}),
        ("mnist1d", {"test_fraction": 0.5, "seed": 1}),
    ],
)
def test_split_never_leaks(name, kw):
    ds = load(name, **kw)
    tr, te = ds.metadata["train_indices"], ds.metadata["test_indices"]
    assert len(np.unique(tr)) == len(tr) == ds.n_train
    assert len(np.unique(te)) == len(te) == ds.n_test
    assert np.intersect1d(tr, te).size == 0
    if kw.get("test_fraction") is not None:
        total = {"digits": 1797, "mnist1d": 5000}[name]
        assert ds.n_test == int(np.ceil(kw["test_fraction"] * total))
        assert ds.n_train + ds.n_test == total
    # By content, duplicates-aware: an input may appear on both sides only if the source holds
    # it more than once (scikit-learn's digits and MNIST-1D hold no duplicate inputs).
    pool = load(name, test_fraction=0.5, seed=0)
    pool_rows = _rows(np.concatenate([pool.X_train, pool.X_test]))
    uniq, counts = np.unique(np.array(pool_rows, dtype=object), return_counts=True)
    duplicated = set(uniq[counts > 1].tolist())
    shared = set(_rows(ds.X_train)) & set(_rows(ds.X_test))
    assert shared <= duplicated
    assert not shared


def test_split_independent_of_corruption():
    clean = load("digits", seed=3)
    for kw in ({"label_noise": 0.5}, {"corruption": "gaussian"}, {"corruption": "random_labels"}):
        ds = load("digits", seed=3, **kw)
        np.testing.assert_array_equal(ds.metadata["train_indices"], clean.metadata["train_indices"])
        np.testing.assert_array_equal(ds.y_test, clean.y_test)  # test labels are never corrupted
        np.testing.assert_array_equal(ds.metadata["y_train_clean"], clean.y_train)


# ----------------------------------------------------------------------------------------------
# Label corruption


@pytest.mark.parametrize("p", [0.0, 0.1, 0.25, 0.5, 0.8, 1.0])
def test_label_noise_fraction_exact(p):
    clean = load("digits", seed=1)
    ds = load("digits", seed=1, label_noise=p)
    n, K = ds.n_train, ds.num_classes
    k = int(np.floor(p * n + 0.5))
    idx = ds.metadata["corrupted_indices"]
    assert len(idx) == len(np.unique(idx)) == k
    keep = np.setdiff1d(np.arange(n), idx)
    np.testing.assert_array_equal(ds.y_train[keep], clean.y_train[keep])
    np.testing.assert_array_equal(ds.X_train, clean.X_train)
    changed = int(np.sum(ds.y_train != clean.y_train))
    assert changed == ds.metadata["num_changed"]
    # Uniform over all K classes: a redrawn label keeps its value with probability 1/K.
    mean, sd = k * (1 - 1 / K), np.sqrt(k * (1 / K) * (1 - 1 / K))
    assert abs(changed - mean) <= 5 * sd + 1e-9


def test_label_noise_nested_and_random_labels_uniform():
    sets = [
        set(load("digits", seed=2, label_noise=p).metadata["corrupted_indices"])
        for p in (0.1, 0.3, 0.6)
    ]
    assert sets[0] <= sets[1] <= sets[2]
    r = load("digits", seed=2, corruption="random_labels")
    one = load("digits", seed=2, label_noise=1.0)
    np.testing.assert_array_equal(r.y_train, one.y_train)
    assert len(r.metadata["corrupted_indices"]) == r.n_train
    # Random labels are independent of the true ones: chi-square test of the 10x10 table.
    from scipy.stats import chi2_contingency

    table = np.zeros((10, 10))
    np.add.at(table, (r.metadata["y_train_clean"], r.y_train), 1)
    assert chi2_contingency(table).pvalue > 1e-4


def test_binary_variant_dziugaite_roy():
    clean = load("digits", seed=0)
    ds = load("digits", seed=0, binary=True)
    assert ds.num_classes == 2
    np.testing.assert_array_equal(ds.y_train, (clean.y_train >= 5).astype(np.int32))
    np.testing.assert_array_equal(ds.y_test, (clean.y_test >= 5).astype(np.int32))
    assert "digit >= 5" in ds.metadata["binary_rule"]
    noisy = load("digits", seed=0, binary=True, label_noise=1.0)
    assert set(np.unique(noisy.y_train)) == {0, 1}


# ----------------------------------------------------------------------------------------------
# Input corruptions


def test_shuffled_pixels_one_permutation_train_and_test():
    clean = load("digits", seed=0, flatten=False)
    ds = load("digits", seed=0, corruption="shuffled_pixels", flatten=False)
    perm = ds.metadata["pixel_permutation"]
    assert sorted(perm) == list(range(64))
    np.testing.assert_array_equal(
        ds.X_train.reshape(-1, 64), clean.X_train.reshape(-1, 64)[:, perm]
    )
    np.testing.assert_array_equal(ds.X_test.reshape(-1, 64), clean.X_test.reshape(-1, 64)[:, perm])
    np.testing.assert_array_equal(ds.y_train, clean.y_train)
    assert ds.X_train.shape == (1437, 8, 8, 1)


def test_random_pixels_independent_permutations():
    kw = dict(task="mixture", n=200, n_test=50, d=12, seed=0)  # continuous: no ties
    clean, ds = load("synthetic", **kw), load("synthetic", corruption="random_pixels", **kw)
    perms = set()
    for Xc, Xr in ((clean.X_train, ds.X_train), (clean.X_test, ds.X_test)):
        for a, b in zip(Xc, Xr, strict=True):
            # b = a[p] for a permutation p, recovered through the ranks.
            p = np.argsort(a)[np.argsort(np.argsort(b))]
            np.testing.assert_array_equal(b, a[p])
            perms.add(tuple(p))
    assert len(perms) == 250  # 12! permutations: all distinct
    np.testing.assert_array_equal(ds.y_train, clean.y_train)


def test_gaussian_matches_mean_and_covariance():
    clean = load("digits", seed=0)
    ds = load("digits", seed=0, corruption="gaussian")
    X0 = clean.X_train.astype(np.float64)
    mu = X0.mean(0)
    C = (X0 - mu).T @ (X0 - mu) / X0.shape[0]
    G = np.concatenate([ds.X_train, ds.X_test]).astype(np.float64)
    m = G.shape[0]
    mu_hat = G.mean(0)
    C_hat = (G - mu_hat).T @ (G - mu_hat) / m
    # Sampling error of a Gaussian's moments: sd(mean_i) = sqrt(C_ii/m),
    # sd(C_hat_ij) ~ sqrt((C_ii C_jj + C_ij^2) / m).
    d = np.diag(C)
    assert np.all(np.abs(mu_hat - mu) <= 5.5 * np.sqrt(d / m) + 1e-6)
    sd_cov = np.sqrt((np.outer(d, d) + C**2) / m)
    assert np.all(np.abs(C_hat - C) <= 5.5 * sd_cov + 1e-6)
    # Pixels that never vary (the digits' borders) stay at their constant value.
    const = d == 0
    assert const.any()
    np.testing.assert_allclose(
        G[:, const], np.broadcast_to(mu[const], G[:, const].shape), atol=1e-6
    )
    # And the inputs carry no information: they are not the clean ones.
    assert not np.allclose(ds.X_train, clean.X_train)
    np.testing.assert_array_equal(ds.y_train, clean.y_train)


# ----------------------------------------------------------------------------------------------
# MNIST from IDX files (tiny files written here; never the network)


def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    return header + arr.tobytes()


def _write_mnist(root, *, compress: bool, n_train=20, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    (root / "mnist").mkdir(parents=True, exist_ok=True)
    sums = {}
    for name, arr in arrays.items():
        data = _idx_bytes(arr)
        fname = name + ".gz" if compress else name
        if compress:
            data = gzip.compress(data)
        (root / "mnist" / fname).write_bytes(data)
        sums[fname] = hashlib.sha256(data).hexdigest()
    return sums, arrays


@pytest.mark.parametrize("compress", [True, False])
def test_mnist_from_idx_files(tmp_path, compress, monkeypatch):
    sums, arrays = _write_mnist(tmp_path, compress=compress)
    ds = load("mnist", cache_dir=tmp_path, download=False, checksums=sums)
    assert (ds.n_train, ds.n_test, ds.input_shape) == (20, 10, (784,))
    expect = arrays["train-images-idx3-ubyte"].reshape(20, 784).astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(ds.X_train, expect)
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test, arrays["t10k-labels-idx1-ubyte"])
    img = load("mnist", cache_dir=tmp_path, download=False, checksums=sums, flatten=False)
    assert img.X_test.shape == (10, 28, 28, 1)
    # The cache directory defaults to $GENBOUNDS_DATA.
    monkeypatch.setenv("GENBOUNDS_DATA", str(tmp_path))
    again = load("mnist", download=False, checksums=sums, binary=True)
    np.testing.assert_array_equal(again.y_train, (ds.y_train >= 5).astype(np.int32))


def test_mnist_checksum_and_corruption_errors(tmp_path):
    sums, _ = _write_mnist(tmp_path, compress=True)
    # The official digests do not match these tiny files.
    with pytest.raises(ValueError, match="checksum mismatch"):
        load("mnist", cache_dir=tmp_path, download=False)
    bad = dict(sums, **{"t10k-labels-idx1-ubyte.gz": "0" * 64})
    with pytest.raises(ValueError, match="checksum mismatch.*t10k-labels"):
        load("mnist", cache_dir=tmp_path, download=False, checksums=bad)
    # A truncated gzip file whose checksum is right: the reader reports it corrupt.
    path = tmp_path / "mnist" / "train-images-idx3-ubyte.gz"
    truncated = path.read_bytes()[:200]
    path.write_bytes(truncated)
    sums["train-images-idx3-ubyte.gz"] = hashlib.sha256(truncated).hexdigest()
    with pytest.raises(ValueError, match="corrupt"):
        load("mnist", cache_dir=tmp_path, download=False, checksums=sums)
    # Header announcing more data than present.
    raw = _idx_bytes(np.zeros((20, 28, 28), np.uint8))[:-5]
    path.write_bytes(gzip.compress(raw))
    sums["train-images-idx3-ubyte.gz"] = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="header announces shape"):
        load("mnist", cache_dir=tmp_path, download=False, checksums=sums)
    # Not an IDX file at all.
    path.write_bytes(gzip.compress(b"hello, world, this is not IDX"))
    sums["train-images-idx3-ubyte.gz"] = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="bad magic number"):
        load("mnist", cache_dir=tmp_path, download=False, checksums=sums)


def test_mnist_missing_files_and_raw_without_checksum(tmp_path):
    with pytest.raises(FileNotFoundError, match="download=False"):
        load("mnist", cache_dir=tmp_path, download=False)
    _write_mnist(tmp_path, compress=False)
    with pytest.raises(ValueError, match="no checksum known"):
        load("mnist", cache_dir=tmp_path, download=False)


class _FakeResponse(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def test_mnist_download_is_verified_and_atomic(tmp_path, monkeypatch):
    src = tmp_path / "served"
    sums, arrays = _write_mnist(src, compress=True)
    served = {name: (src / "mnist" / name).read_bytes() for name in sums}
    monkeypatch.setattr(data_mnist, "SHA256", sums)
    monkeypatch.setattr(data_mnist, "MD5", {k: hashlib.md5(v).hexdigest() for k, v in served.items()})
    fetched = []

    def fake_urlopen(url, timeout):
        fetched.append(url)
        return _FakeResponse(served[url.rsplit("/", 1)[1]])

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    cache = tmp_path / "cache"
    ds = load("mnist", cache_dir=cache)
    assert len(fetched) == 4 and fetched[0].startswith(data_mnist.MIRRORS[0])
    np.testing.assert_array_equal(ds.y_train, arrays["train-labels-idx1-ubyte"])
    assert sorted(os.listdir(cache / "mnist")) == sorted(sums)  # no temporary files left

    # A mirror serving damaged bytes: every mirror is tried, nothing is left in the cache.
    def damaged(url, timeout):
        return _FakeResponse(b"\x1f\x8b not the file")

    monkeypatch.setattr(urllib.request, "urlopen", damaged)
    cache2 = tmp_path / "cache2"
    with pytest.raises(OSError, match="could not download"):
        load("mnist", cache_dir=cache2)
    assert os.listdir(cache2 / "mnist") == []


# ----------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"name": "cifar10"}, ValueError, "name must be one of"),
        ({"label_noise": 1.5}, ValueError, "label_noise must lie in"),
        ({"label_noise": -0.1}, ValueError, "label_noise must lie in"),
        ({"n": 0}, ValueError, "n must be an integer >= 1"),
        ({"n": 2.5}, TypeError, "n must be an integer"),
        ({"n": 5000}, ValueError, "n must be <= 1437"),
        ({"n_test": 400}, ValueError, "n_test must be <= 360"),
        ({"corruption": "blur"}, ValueError, "corruption must be one of"),
        ({"corruption": "random_labels", "label_noise": 0.5}, ValueError, "random_labels"),
        ({"test_fraction": 1.0}, ValueError, "test_fraction must lie in"),
        ({"seed": -1}, ValueError, "seed must be an integer >= 0"),
        ({"d": 10}, TypeError, "unexpected options"),
        ({"name": "synthetic", "test_fraction": 0.2}, ValueError, "test_fraction"),
        ({"name": "synthetic", "task": "spiral"}, ValueError, "task must be one of"),
        ({"name": "synthetic", "d": 0}, ValueError, "d must be an integer >= 1"),
    ],
)
def test_bad_input(kwargs, exc, match):
    kwargs = dict(kwargs)
    name = kwargs.pop("name", "digits")
    with pytest.raises(exc, match=match):
        load(name, **kwargs)
