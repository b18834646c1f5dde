"""The contract of the public API on bad and extreme input (property-based).

Bad input ends in a ValueError/TypeError that names the argument; extreme but valid input ends
in a finite result, or in ``inf`` with a finite logarithm among the terms and a note; never NaN
and never an error from deep inside jax/flax or the math library.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import genbounds as gb
from genbounds.internal import check_key, check_result

FAST = settings(max_examples=25, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

# Values that are not valid numbers in any range, with what a message must name.
BAD_SCALARS = st.sampled_from([math.nan, math.inf, -math.inf, -1.0, "0.1", None, True,
                               np.array([0.1, 0.2])])
EXTREME_N = st.one_of(st.integers(1, 10), st.integers(10**6, 10**12),
                      st.sampled_from([10**300, 10**400, 10**1000]))
EXTREME_DELTA = st.one_of(st.sampled_from([5e-324, 1e-300, 1e-20, 0.5, 1 - 1e-16]),
                          st.floats(1e-300, 0.999, allow_nan=False))
EXTREME_H = st.one_of(st.sampled_from([0.0, 5e-324, 1e-300, 1.0, 1e300, 1.7e308]),
                      st.floats(0.0, 1e6, allow_nan=False))


def _assert_contract(b):
    """Finite, or inf with a finite log_ term (or an explicit note); never NaN."""
    for field in ("value", "complexity"):
        x = getattr(b, field)
        if x is None:
            continue
        v = float(x)
        assert not math.isnan(v), (field, b)
        if math.isinf(v):
            assert any("inf" in note for note in b.notes), (field, b.notes)


@FAST
@given(n=EXTREME_N, delta=EXTREME_DELTA, h=EXTREME_H,
       err=st.floats(0.0, 1.0, allow_nan=False))
def test_vc_is_finite_on_extreme_valid_input(n, delta, h, err):
    b = gb.vc(n=n, delta=delta, vc_dim=h, train_error=err)
    _assert_contract(b)
    assert math.isfinite(b.value) and b.value >= err
    # the log form agrees with the closed form where the latter is representable
    if n < 10**300 and h <= 2 * n and h > 1e-300 and delta > 1e-300:
        cap = h * (math.log(2.0 * n / h) + 1.0)
        ref = err + math.sqrt((cap - math.log(delta / 4.0)) / n)
        assert b.value == pytest.approx(ref, rel=1e-12)


@FAST
@given(bad=BAD_SCALARS, which=st.sampled_from(["n", "delta", "train_error", "vc_dim"]))
def test_vc_bad_scalars_name_the_argument(bad, which):
    kw = dict(n=100, delta=0.05, train_error=0.0, vc_dim=10)
    kw[which] = bad
    if which == "vc_dim" and bad is None:
        return  # vc_dim=None means "read it from params": a different error, tested below
    with pytest.raises((ValueError, TypeError), match=which):
        gb.vc(**kw)


@FAST
@given(q=st.floats(0.0, 1.0, allow_nan=False),
       c=st.one_of(st.floats(0.0, 50.0, allow_nan=False), st.just(math.inf)))
def test_kl_inverse_float32_input_is_computed_in_float64(q, c):
    p32 = float(gb.kl_inverse(np.float32(q), np.float32(c)))
    p64 = float(gb.kl_inverse(np.float64(np.float32(q)), np.float64(np.float32(c))))
    assert p32 == p64


@FAST
@given(a=st.integers(2, 5), b=st.integers(2, 5))
def test_kl_inverse_shapes_that_do_not_broadcast(a, b):
    if a == b:
        return
    with pytest.raises(ValueError, match="q and c must broadcast"):
        gb.kl_inverse(np.full(a, 0.1), np.full(b, 0.1))
    with pytest.raises(ValueError, match="q and p must broadcast"):
        gb.kl_bernoulli(np.full(a, 0.1), np.full(b, 0.2))


@FAST
@given(bad=st.sampled_from([0, 1, None, 1.5, "key", np.zeros(3), np.zeros(2, np.float32),
                            jax.random.split(jax.random.key(0), 2)]))
def test_keys_must_be_prng_keys(bad):
    with pytest.raises((TypeError, ValueError), match="key"):
        check_key(bad)
    with pytest.raises((TypeError, ValueError), match="key"):
        gb.rademacher(gb.LinearBall(radius=1.0), np.ones((4, 2)), num_draws=2, key=bad)
    if bad is not None:  # spectral_norms: None means its documented default key
        with pytest.raises((TypeError, ValueError), match="key"):
            gb.spectral_norms({"Dense_0": {"kernel": np.eye(2)}}, key=bad)


def test_legacy_raw_keys_are_accepted():
    k = check_key(jax.random.PRNGKey(3))
    assert jax.dtypes.issubdtype(k.dtype, jax.dtypes.prng_key)


@FAST
@given(depth=st.integers(1, 4), where=st.sampled_from(["kernel", "bias", "layer"]))
def test_none_leaf_in_params_is_an_error_naming_the_path(depth, where):
    params = {f"Dense_{i}": {"kernel": np.eye(3), "bias": np.zeros(3)} for i in range(depth + 1)}
    victim = f"Dense_{depth}"
    if where == "layer":
        params[victim] = None
        match = rf"params\['{victim}'\] is None"
    else:
        params[victim][where] = None
        match = rf"params\['{victim}'\]\['{where}'\] is None"
    for fn in (gb.spectral_norms, lambda p: gb.vc(p, n=100), gb.spectral):
        with pytest.raises(ValueError, match=match):
            fn(params)


@FAST
@given(scale=st.sampled_from([1e20, 3e38]), shape=st.sampled_from([(2, 2), (4, 3)]))
def test_float32_norm_overflow_raises(scale, shape):
    W = jnp.full(shape, scale, jnp.float32)
    for fn in (gb.frobenius_norm, gb.norm_21, lambda w: gb.spectral_norm(w, method="exact"),
               lambda w: gb.spectral_norms({"Dense_0": {"kernel": w}})):
        if scale == 1e20 and fn is not gb.frobenius_norm:
            continue  # 1e20: fine for the norms that scale, overflow only in a naive sum
        try:
            v = fn(W)
        except ValueError as e:
            assert "overflows float32" in str(e)
        else:
            val = float(v.value) if hasattr(v, "value") else (
                float(next(iter(v.values()))) if hasattr(v, "values") else float(v))
            assert math.isfinite(val)


@FAST
@given(depth=st.integers(300, 700), scale=st.floats(2.0, 2.7))
def test_golowich_deep_net_gives_a_finite_log(depth, scale):
    # The logits (scale^depth x, finite in float64) are finite; the bound's product of
    # Frobenius norms, (sqrt(2) scale)^depth, overflows float64.
    params = {f"Dense_{i}": {"kernel": np.eye(2) * scale} for i in range(depth)}
    X = np.array([[1.0, 0.0], [0.0, 1.0]] * 4)
    y = np.array([0, 1] * 4)
    b = gb.golowich(params, X=X, y=y, logits=X * scale**depth, margin=0.5)
    _assert_contract(b)
    log_c = b.terms["log_complexity"]
    d = depth
    ref = (d * math.log(scale * math.sqrt(2.0)) + math.log(math.sqrt(2 * math.log(2) * d) + 1)
           + math.log(math.sqrt(8.0)) - math.log(8))
    assert log_c == pytest.approx(ref, rel=1e-12)
    assert math.isfinite(b.terms["log_value"]) and b.terms["log_value"] >= log_c


def test_deep_float32_net_blames_the_logits_not_the_margins():
    L = 60
    params = {f"Dense_{i}": {"kernel": jnp.eye(4, dtype=jnp.float32) * 10.0} for i in range(L)}

    def apply_fn(p, X):
        h = X
        for i in range(L):
            h = h @ p[f"Dense_{i}"]["kernel"]
        return h

    X = np.ones((8, 4), np.float32)
    y = np.arange(8) % 4
    for fn in (gb.spectral, gb.golowich, gb.pac_bayes):
        with pytest.raises(ValueError, match="apply_fn.*overflowed float32"):
            fn(params, X=X, y=y, apply_fn=apply_fn)


def test_hessian_measure_of_a_nan_apply_fn_is_an_error():
    params = {"w": jnp.ones((3, 2))}
    X, y = np.ones((5, 3)), np.zeros(5, int)

    def apply_fn(p, x):
        return x @ p["w"] * jnp.nan

    with pytest.raises(ValueError, match="apply_fn"):
        gb.hessian_top_eigenvalues(
            params, X=X, y=y, apply_fn=apply_fn, key=jax.random.key(0), num_iters=4
        )


def test_check_result_never_passes_nan():
    with pytest.raises(ValueError, match="NaN"):
        check_result(gb.Bound(name="x", value=math.nan), "x")
    b = check_result(gb.Bound(name="x", value=math.inf, terms={"log_value": 800.0}), "x")
    assert any("log_value" in note for note in b.notes)


# ---- report: caller errors raise, only inapplicable entries are skipped -------------------------

def _net(rng, widths=(4, 8, 3)):
    return {f"Dense_{i}": {"kernel": rng.standard_normal((a, b)), "bias": np.zeros(b)}
            for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True))}


def _apply(p, X):
    h = X
    names = list(p)
    for i, name in enumerate(names):
        h = h @ p[name]["kernel"] + p[name]["bias"]
        if i < len(names) - 1:
            h = jax.nn.relu(h)
    return h


@FAST
@given(case=st.sampled_from(["width", "init", "margin0", "margin_neg", "key", "xtest",
                             "labels", "quantile", "nan_x", "draws"]))
def test_report_caller_errors_raise(case):
    rng = np.random.default_rng(0)
    params = _net(rng)
    X = rng.standard_normal((20, 4))
    y = np.asarray(jnp.argmax(_apply(params, X), 1))
    kw = dict(X=X, y=y, apply_fn=_apply)
    match = {
        # A function that slices the network's logits is a network the trace cannot read:
        # refused, naming the operation.
        "width": ("slice", lambda: kw.update(apply_fn=lambda p, x: _apply(p, x)[:, :2])),
        "init": ("init_params", lambda: kw.update(init_params=_net(rng, (4, 5, 3)))),
        "margin0": ("margin", lambda: kw.update(margin=0)),
        "margin_neg": ("margin", lambda: kw.update(margin=-1.0)),
        "key": ("key", lambda: kw.update(key=0)),
        "xtest": ("X_test", lambda: kw.update(X_test=X[:, :3], y_test=y)),
        "labels": ("^y ", lambda: kw.update(y=y + 3)),
        "quantile": ("margin_quantile", lambda: kw.update(margin_quantile=1.5)),
        "nan_x": ("^X ", lambda: kw.update(X=np.where(np.arange(4) == 2, np.nan, X))),
        "draws": ("rademacher_draws", lambda: kw.update(
            rademacher_class=gb.LinearBall(radius=1.0), rademacher_draws=1)),
    }[case]
    match[1]()
    with pytest.raises((ValueError, TypeError), match=match[0]):
        gb.report(params, **kw)


# ---- the harness --------------------------------------------------------------------------------

def test_train_refuses_bad_data_and_configs():
    import dataclasses

    from genbounds.data import load
    from genbounds.train import train

    ds = load("digits", n=40)
    spec = {"kind": "mlp", "depth": 1, "width": 4}
    X = np.array(ds.X_train, np.float32)
    X[1, 2] = np.nan
    cases = [
        (dict(dataset=dataclasses.replace(ds, X_train=X)), "dataset.X_train must be finite"),
        (dict(dataset=dataclasses.replace(ds, X_test=np.asarray(ds.X_test)[:, :5])),
         "dataset.X_test must have the per-example shape"),
        (dict(optimizer="momentum", momentum=1.5), r"momentum must be .* \[0, 1\)"),
        (dict(optimizer="momentum", momentum=-0.1), "momentum"),
        (dict(lr=math.nan), "lr"),
        (dict(dataset=dataclasses.replace(ds, num_classes=1)), "num_classes must be an integer >= 2"),
    ]
    for kw, match in cases:
        kw = {"dataset": ds, **kw}
        with pytest.raises(ValueError, match=match):
            train(spec, kw.pop("dataset"), max_epochs=1, **kw)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        load("synthetic", n=20, n_test=10, num_classes=1)


def test_train_divergence_is_an_error():
    from genbounds.data import load
    from genbounds.train import train

    with pytest.raises(ValueError, match="diverged"):
        train({"kind": "mlp", "depth": 1, "width": 4}, load("digits", n=40), optimizer="sgd",
              lr=1e30, max_epochs=3, stop=None)


@pytest.mark.parametrize("labels,pixels,match", [
    (np.array([0, -1], np.int8), None, r"labels must lie in 0..9, got range \[-1, 0\]"),
    (np.array([0, 10], np.uint8), None, "labels must lie in 0..9"),
    (np.array([0, 1], np.uint8), np.nan, "NaN or infinite pixels"),
    (np.array([0, 1], np.uint8), 300.0, "pixels must lie in 0..255"),
])
def test_mnist_reader_refuses_bad_labels_and_pixels(tmp_path, labels, pixels, match):
    from genbounds.internal import mnist_pool

    def idx(arr, code):
        import struct
        head = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
        return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()

    img = np.zeros((2, 28, 28), np.uint8 if pixels is None else np.float32)
    if pixels is not None:
        img[0, 3, 3] = pixels
    code_img = 0x08 if pixels is None else 0x0D
    code_lab = 0x09 if labels.dtype == np.int8 else 0x08
    names = {"train-images-idx3-ubyte": idx(img, code_img),
             "train-labels-idx1-ubyte": idx(labels, code_lab),
             "t10k-images-idx3-ubyte": idx(np.zeros((1, 28, 28), np.uint8), 0x08),
             "t10k-labels-idx1-ubyte": idx(np.zeros(1, np.uint8), 0x08)}
    import hashlib

    (tmp_path / "mnist").mkdir()
    for name, data in names.items():
        (tmp_path / "mnist" / name).write_bytes(data)
    sums = {name: hashlib.sha256(data).hexdigest() for name, data in names.items()}
    with pytest.raises(ValueError, match=match):
        mnist_pool(tmp_path, download=False, checksums=sums)


@pytest.mark.parametrize("argv,match", [
    (["demo", "--rademacher-draws", "1"], "--rademacher-draws must be 0"),
    (["demo", "--rademacher-draws", "-3"], "--rademacher-draws must be 0"),
    (["demo", "--lr", "nan"], "--lr must be a finite number > 0"),
    (["demo", "--lr", "0"], "--lr"),
    (["demo", "--batch-size", "0"], "--batch-size must be an integer >= 1"),
    (["demo", "--max-epochs", "-1"], "--max-epochs"),
    (["demo", "--n", "0"], "--n must be"),
    (["demo", "--depth", "0"], "--depth"),
    (["demo", "--seed", "-1"], "--seed"),
    (["demo", "--rademacher-steps", "0"], "--rademacher-steps"),
    (["report", "x", "--delta", "0"], "--delta"),
])
def test_cli_numeric_options_are_range_checked(argv, match, capsys):
    from genbounds.experiments.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert match in capsys.readouterr().err
