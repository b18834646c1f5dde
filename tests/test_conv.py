"""Operator norms of convolutions against the SVD of the explicit operator matrix.

The oracle is independent of genbounds: the matrix of the linear map x -> flax.linen.Conv(x)
(no bias) is built with jax.jacfwd in float64 and decomposed with numpy; the circular spectrum is
also checked against numpy's FFT, as in Sedghi et al.'s code (formulas.md section 9).
"""

import math
import zlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genbounds.internal import (
    _conv_map,
    _explicit_svd,
    _grid_max_sigma,
    _lanczos,
    circular_conv_singular_values,
)
from genbounds.linalg import conv_operator_norm, reshaped_kernel_norm

HYP = settings(
    max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)


def flax_matrix(kernel, input_shape, strides=1, padding="SAME"):
    """Explicit matrix (outputs x inputs) of flax.linen.Conv(kernel) on inputs (*input_shape, c_in)."""
    kernel = np.asarray(kernel, np.float64)
    conv = nn.Conv(
        kernel.shape[-1], kernel.shape[:-2], strides=strides, padding=padding, use_bias=False
    )
    x0 = jnp.zeros((1, *input_shape, kernel.shape[-2]), jnp.float64)
    jac = jax.jacfwd(lambda x: conv.apply({"params": {"kernel": kernel}}, x))(x0)
    return np.asarray(jac).reshape(-1, x0.size)


def explicit_norm(kernel, input_shape, strides=1, padding="SAME"):
    return float(np.linalg.norm(flax_matrix(kernel, input_shape, strides, padding), 2))


def numpy_reshaped_norm(kernel):
    k = np.asarray(kernel, np.float64)
    return float(np.linalg.norm(k.reshape(-1, k.shape[-1]), 2))


# (window, input_shape, c_in, c_out): 2-D and 1-D, square and rectangular, odd and even windows.
GEOMETRIES = [
    ((3, 3), (6, 6), 2, 3),
    ((2, 2), (7, 5), 3, 2),
    ((3,), (9,), 2, 3),
    ((3, 2), (7, 6), 2, 2),
]
PADDINGS = ["SAME", "VALID", "CIRCULAR", "explicit"]
# The default run covers every padding with stride 1 and three strided cases; the rest (all
# paddings x strides x geometries) run with -m slow.
DEFAULT = {
    (GEOMETRIES[0], 1, "SAME"),
    (GEOMETRIES[0], 1, "VALID"),
    (GEOMETRIES[0], 1, "CIRCULAR"),
    (GEOMETRIES[0], 1, "explicit"),
    (GEOMETRIES[0], 2, "VALID"),
    (GEOMETRIES[0], 2, "CIRCULAR"),
    (GEOMETRIES[2], 2, "SAME"),
}
POWER_CASES = {
    (GEOMETRIES[0], 1, "SAME"),
    (GEOMETRIES[0], 2, "VALID"),
    (GEOMETRIES[0], 1, "CIRCULAR"),
}
CASES = [
    pytest.param(g, s, p, marks=() if (g, s, p) in DEFAULT else pytest.mark.slow)
    for g in GEOMETRIES
    for s in (1, 2)
    for p in PADDINGS
]


def _padding(name, rank):
    return ((1, 2),) * rank if name == "explicit" else name


@pytest.mark.parametrize("geometry,stride,padding", CASES)
def test_norms_against_explicit_matrix(geometry, stride, padding, request):
    window, n, c_in, c_out = geometry
    pad_name, padding = padding, _padding(padding, len(window))
    seed = zlib.crc32(repr((window, n, stride, padding)).encode())  # fixed across runs
    kernel = np.random.default_rng(seed).standard_normal((*window, c_in, c_out))
    kw = dict(input_shape=n, strides=stride, padding=padding)
    truth = explicit_norm(kernel, n, stride, padding)

    exact = conv_operator_norm(kernel, method="exact", **kw)
    np.testing.assert_allclose(exact.value, truth, rtol=1e-10)
    assert not exact.estimated and exact.failure_probability == 0.0

    cert = conv_operator_norm(kernel, **kw)
    assert cert.value >= truth * (1 - 1e-10), (cert, truth)
    assert cert.value <= 1.5 * truth, (cert, truth)
    assert not cert.estimated and cert.method.startswith("certified")
    if padding == "CIRCULAR" and all(m % stride == 0 for m in n):
        np.testing.assert_allclose(cert.value, truth, rtol=1e-10)  # exact, plus rounding only
    if cert.lower is not None:
        assert cert.lower <= truth * (1 + 1e-10)

    anywhere = conv_operator_norm(kernel, strides=stride, padding=padding)  # no input_shape
    assert anywhere.value >= truth * (1 - 1e-10), (anywhere, truth)
    slow = request.node.get_closest_marker("slow") is not None
    if (geometry, stride, pad_name) not in POWER_CASES and not slow:
        return  # the Lanczos estimate compiles per padding: a few cases by default, all with -m slow
    power = conv_operator_norm(kernel, method="power", **kw)
    assert power.estimated and power.method == "power-lanczos"
    assert power.iterations < 1000
    np.testing.assert_allclose(power.value, truth, rtol=1e-6)
    assert power.value <= truth * (1 + 1e-10)  # ||T x|| for a unit x
    assert power.vector.shape == (*n, c_in)


def test_sedghi_oracle_all_ones_8x8():
    # formulas.md section 9 / 11: 3x3 all-ones kernel, 8x8 torus, 1 channel.
    k = np.ones((3, 3, 1, 1))
    s = np.asarray(circular_conv_singular_values(k, input_shape=(8, 8)))
    assert s.shape == (64,)
    np.testing.assert_allclose(s[0], 9.0, rtol=1e-12)
    np.testing.assert_allclose(s[-1], 0.1715729, atol=5e-8)
    dense = np.linalg.svd(flax_matrix(k, (8, 8), 1, "CIRCULAR"), compute_uv=False)
    np.testing.assert_allclose(s, dense, atol=1e-10)
    r = conv_operator_norm(k, input_shape=(8, 8), padding="CIRCULAR", method="exact")
    assert r.method == "exact-fft"
    np.testing.assert_allclose(r.value, 9.0, rtol=1e-12)


@pytest.mark.parametrize(
    "window,n,c_in,c_out",
    [((3, 3), (6, 5), 2, 3), ((4,), (7,), 3, 2), ((2, 3, 2), (3, 4, 3), 2, 2)],
)
def test_circular_spectrum_matches_numpy_fft_and_dense(window, n, c_in, c_out):
    # The code of Sedghi et al. (formulas.md section 9): fft of the zero-padded kernel, SVD per
    # frequency; and the dense matrix of Flax's circular Conv.
    k = np.random.default_rng(3).standard_normal((*window, c_in, c_out))
    axes = tuple(range(len(window)))
    ref = np.sort(np.linalg.svd(np.fft.fftn(k, n, axes=axes), compute_uv=False).ravel())[::-1]
    ours = np.asarray(circular_conv_singular_values(k, input_shape=n))
    dense = np.linalg.svd(flax_matrix(k, n, 1, "CIRCULAR"), compute_uv=False)
    np.testing.assert_allclose(ours, ref, atol=1e-10)
    np.testing.assert_allclose(ours, dense[: ours.size], atol=1e-10)


def test_circular_input_smaller_than_window():
    # Wrap-around reads an input position several times: the symbol must fold the taps.
    k = np.random.default_rng(4).standard_normal((5, 3, 2, 2))
    for n in [(2, 2), (3, 1)]:
        truth = explicit_norm(k, n, 1, "CIRCULAR")
        r = conv_operator_norm(k, input_shape=n, padding="CIRCULAR", method="exact")
        np.testing.assert_allclose(r.value, truth, rtol=1e-10)


@pytest.mark.parametrize("padding", ["SAME", "VALID", "CIRCULAR", "CAUSAL", 2, ((0, 3),)])
@pytest.mark.parametrize("stride", [1, 3])
def test_conv_map_is_flax_conv(padding, stride):
    k = np.random.default_rng(5).standard_normal((4, 2, 3))
    x = np.random.default_rng(6).standard_normal((11, 2))
    conv = nn.Conv(3, (4,), strides=stride, padding=padding, use_bias=False)
    ref = conv.apply({"params": {"kernel": k}}, x[None])[0]
    pad = ((3, 0),) if padding == "CAUSAL" else padding
    pad = ((2, 2),) if padding == 2 else pad
    ours = _conv_map(jnp.asarray(k), jnp.asarray(x), (stride,), pad)
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-12)
    if stride == 1 and padding in ("CAUSAL", 2):  # paddings not covered elsewhere
        norm = conv_operator_norm(k, input_shape=(11,), padding=padding, method="exact")
        np.testing.assert_allclose(norm.value, explicit_norm(k, (11,), 1, padding), rtol=1e-10)


def test_certified_slack_on_random_kernels():
    # 2-D, 3x3, 4 -> 4 channels, 8x8 inputs: the embedding bound is within 1.5x of the truth;
    # with stride 2 the polyphase form keeps it close as well.
    rng = np.random.default_rng(7)
    ratios = []
    for _ in range(3):
        k = rng.standard_normal((3, 3, 4, 4))
        for stride in (1, 2):
            for padding in ("SAME", "VALID"):
                kw = dict(input_shape=(8, 8), strides=stride, padding=padding)
                truth = conv_operator_norm(k, method="exact", **kw).value
                ratios.append(conv_operator_norm(k, **kw).value / truth)
    assert min(ratios) >= 1 - 1e-10
    assert max(ratios) <= 1.5
    assert np.median(ratios) <= 1.2


def _symbol_norm_dense(kernel, strides, n_points):
    """sup_phi sigma_1 of the polyphase symbol, by brute force on a dense grid (1-D kernels)."""
    k = np.asarray(kernel, np.float64)
    s = strides
    phi = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
    thetas = (phi[:, None] + 2 * np.pi * np.arange(s)[None]) / s  # (n_points, s)
    phases = np.exp(-1j * thetas[..., None] * np.arange(k.shape[0]))  # (n_points, s, k)
    m = np.einsum("asp,pio->asio", phases, k).reshape(n_points, s * k.shape[1], k.shape[2])
    return float(np.max(np.linalg.svd(m / np.sqrt(s), compute_uv=False)[:, 0]))


@pytest.mark.parametrize("stride", [1, 2])
def test_unknown_shape_bound_is_above_the_supremum_and_tight(stride):
    k = np.random.default_rng(8).standard_normal((5, 2, 3))
    dense = _symbol_norm_dense(k, stride, 20000)
    r = conv_operator_norm(k, strides=stride, padding="SAME")
    assert r.value >= dense and r.value <= 1.01 * dense, (r, dense)
    # ... and above the explicit norm for several input sizes and paddings.
    for n in (1, 4, 12):
        for padding in ("SAME", ((3, 1),)):
            assert r.value >= explicit_norm(k, (n,), stride, padding) * (1 - 1e-10)


def test_unknown_shape_2d_and_candidates():
    k = np.random.default_rng(9).standard_normal((3, 3, 2, 2))
    r = conv_operator_norm(k)
    taps = sum(np.linalg.norm(k[i, j], 2) for i in range(3) for j in range(3))
    assert r.value <= taps * (1 + 1e-12)
    assert r.value <= 3 * numpy_reshaped_norm(k) * (1 + 1e-12)
    for n, padding in [((3, 3), "SAME"), ((5, 4), "CIRCULAR"), ((9, 9), "VALID")]:
        assert r.value >= explicit_norm(k, n, 1, padding) * (1 - 1e-10)
    # The grid bound is far tighter than the crude ones on a random kernel.
    assert r.method in ("certified-sup-grid-bernstein", "certified-sup-grid-lipschitz")


def test_one_by_one_kernel_is_the_dense_matrix_norm():
    # formulas.md section 9: a 1x1 kernel is a matrix multiply per pixel.
    k = np.random.default_rng(10).standard_normal((1, 1, 3, 5))
    dense = np.linalg.norm(k[0, 0], 2)
    cases = [("SAME", 1, "exact"), ("VALID", 2, "exact"), ("CIRCULAR", 1, "exact")]
    cases += [("SAME", 2, "certified"), ("VALID", 1, "certified"), ("CIRCULAR", 2, "certified")]
    cases += [("SAME", 1, "power")]
    for padding, stride, method in cases:
        r = conv_operator_norm(
            k, input_shape=(4, 3), strides=stride, padding=padding, method=method
        )
        np.testing.assert_allclose(r.value, dense, rtol=1e-6 if method == "power" else 1e-10)
    np.testing.assert_allclose(conv_operator_norm(k).value, dense, rtol=1e-10)


def test_lanczos_warm_start_and_key():
    k = np.random.default_rng(11).standard_normal((3, 3, 4, 4))
    kw = dict(input_shape=(12, 12), padding="SAME", method="power")
    cold = conv_operator_norm(k, **kw)
    warm = conv_operator_norm(k, v0=cold.vector, **kw)
    other = conv_operator_norm(k, key=jax.random.key(3), **kw)
    assert warm.iterations <= cold.iterations and warm.iterations <= 32
    truth = conv_operator_norm(k, input_shape=(12, 12), padding="SAME").value  # certified, above
    for r in (cold, warm, other):
        assert r.value <= truth
    np.testing.assert_allclose([warm.value, other.value], cold.value, rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Properties.
# --------------------------------------------------------------------------------------------


@st.composite
def conv_layers(draw, max_stride=1, min_input="window"):
    rank = draw(st.integers(1, 2))
    window = tuple(draw(st.integers(1, 3)) for _ in range(rank))
    if min_input == "window":
        n = tuple(draw(st.integers(k, k + 3)) for k in window)
    else:
        n = tuple(draw(st.integers(1, 5)) for _ in window)
    c_in, c_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    stride = draw(st.integers(1, max_stride))
    seed = draw(st.integers(0, 2**31))
    kernel = np.random.default_rng(seed).standard_normal((*window, c_in, c_out))
    return kernel, n, stride


@HYP
@given(conv_layers(), st.sampled_from(["SAME", "VALID", "CIRCULAR"]))
def test_operator_norm_between_reshaped_and_sqrt_window_times_reshaped(layer, padding):
    # Conditions tested: stride 1 and n_d >= k_d on every axis. Then some output reads a whole
    # window of distinct input positions (VALID: every output; SAME with stride 1: the output at
    # lo; CIRCULAR: n >= k so the wrapped window does not repeat a position), which gives
    # ||K_resh|| <= ||T||; and every input position is read at most prod(window) times, which
    # gives ||T|| <= sqrt(prod(window)) ||K_resh||. The weaker
    # ||K_resh|| / sqrt(prod(window)) <= ||T|| follows.
    kernel, n, _ = layer
    t = explicit_norm(kernel, n, 1, padding)
    r = numpy_reshaped_norm(kernel)
    np.testing.assert_allclose(reshaped_kernel_norm(kernel), r, rtol=1e-12)
    root = math.sqrt(math.prod(kernel.shape[:-2]))
    assert r / root <= r * (1 + 1e-10) <= t * (1 + 2e-10)
    assert t <= root * r * (1 + 1e-10)


@HYP
@given(conv_layers(max_stride=2, min_input="any"), st.sampled_from(["SAME", "CIRCULAR"]))
def test_upper_sqrt_window_bound_holds_for_any_input_and_stride(layer, padding):
    kernel, n, stride = layer
    t = explicit_norm(kernel, n, stride, padding)
    assert t <= math.sqrt(math.prod(kernel.shape[:-2])) * numpy_reshaped_norm(kernel) * (1 + 1e-10)


def test_lower_reshaped_bound_needs_a_full_window():
    # SAME on an input smaller than the window: the one output sees only the centre tap.
    k = np.zeros((3, 1, 1))
    k[0] = k[2] = 1.0
    assert explicit_norm(k, (1,), 1, "SAME") == 0.0 < numpy_reshaped_norm(k) / math.sqrt(3)
    r = conv_operator_norm(k, input_shape=(1,), padding="SAME")
    assert r.lower is None and r.value >= 0.0


@HYP
@given(
    conv_layers(max_stride=2),
    st.sampled_from(["SAME", "VALID", "CIRCULAR"]),
    st.floats(-10, 10).filter(lambda c: abs(c) > 1e-3),
)
def test_homogeneity(layer, padding, c):
    kernel, n, stride = layer
    for method in ("exact", "certified"):
        kw = dict(input_shape=n, strides=stride, padding=padding, method=method)
        base = conv_operator_norm(kernel, **kw).value
        np.testing.assert_allclose(
            conv_operator_norm(c * kernel, **kw).value, abs(c) * base, rtol=1e-10
        )


@HYP
@given(st.integers(1, 4), st.integers(1, 4), st.integers(0, 2**31))
def test_one_by_one_property(c_in, c_out, seed):
    w = np.random.default_rng(seed).standard_normal((c_in, c_out))
    k = w[None, None]
    r = conv_operator_norm(k, input_shape=(3, 2), padding="SAME", method="exact")
    np.testing.assert_allclose(r.value, np.linalg.norm(w, 2), rtol=1e-10)


# --------------------------------------------------------------------------------------------
# Jit caching and bad inputs.
# --------------------------------------------------------------------------------------------


def test_second_call_with_same_shapes_does_not_recompile():
    rng = np.random.default_rng(12)
    kw = dict(input_shape=(6, 5), strides=2, padding="SAME")
    conv_operator_norm(rng.standard_normal((3, 3, 2, 2)), **kw)
    conv_operator_norm(rng.standard_normal((3, 3, 2, 2)), method="exact", **kw)
    conv_operator_norm(rng.standard_normal((3, 3, 2, 2)), method="power", **kw)
    sizes = [f._cache_size() for f in (_grid_max_sigma, _explicit_svd, _lanczos)]
    conv_operator_norm(rng.standard_normal((3, 3, 2, 2)), **kw)
    conv_operator_norm(rng.standard_normal((3, 3, 2, 2)), method="exact", **kw)
    conv_operator_norm(rng.standard_normal((3, 3, 2, 2)), method="power", tol=1e-5, **kw)
    assert [f._cache_size() for f in (_grid_max_sigma, _explicit_svd, _lanczos)] == sizes


def test_float32_kernel():
    k = np.random.default_rng(13).standard_normal((3, 3, 2, 2)).astype(np.float32)
    truth = explicit_norm(k.astype(np.float64), (6, 6), 1, "SAME")
    assert conv_operator_norm(k, input_shape=(6, 6)).value >= truth  # computed in float64
    power = conv_operator_norm(k, input_shape=(6, 6), method="power", tol=1e-5)
    np.testing.assert_allclose(power.value, truth, rtol=1e-4)


K3 = np.ones((3, 3, 2, 2))


@pytest.mark.parametrize(
    "kernel,kwargs,error,match",
    [
        (np.ones((3, 3)), {}, ValueError, "kernel must have rank >= 3"),
        (np.ones((0, 3, 2)), {}, ValueError, "kernel must not be empty"),
        (np.full((3, 2, 2), np.nan), {}, ValueError, "kernel must be finite"),
        (np.ones((3, 2, 2), complex), {}, TypeError, "kernel must be a real"),
        (None, {}, TypeError, "kernel must be an array"),
        (K3, {"input_shape": (6,)}, ValueError, "input_shape must have one entry per"),
        (K3, {"input_shape": (6, 0)}, ValueError, "input_shape must hold integers >= 1"),
        (K3, {"input_shape": (6, 2.5)}, TypeError, "input_shape must hold integers"),
        (K3, {"input_shape": 6}, TypeError, "input_shape must be a tuple"),
        (K3, {"strides": 0}, ValueError, "strides must hold integers >= 1"),
        (K3, {"strides": (1, 2, 3)}, ValueError, "strides must have one entry"),
        (K3, {"padding": "REFLECT"}, ValueError, "padding must be one of"),
        (K3, {"padding": ((1, 2, 3), (0, 0))}, ValueError, "padding must be"),
        (K3, {"padding": "CAUSAL"}, ValueError, "CAUSAL"),
        (K3, {"method": "lanczos"}, ValueError, "method must be one of"),
        (K3, {"input_shape": (2, 2), "padding": "VALID"}, ValueError, "too small"),
        (K3, {"method": "exact"}, ValueError, "input_shape is required"),
        (K3, {"method": "power"}, ValueError, "input_shape is required"),
        (K3, {"input_shape": (46, 46), "method": "exact"}, ValueError, "use method='certified'"),
        (K3, {"input_shape": (4, 4), "method": "power", "tol": 0.0}, ValueError, "tol"),
        (K3, {"input_shape": (4, 4), "method": "power", "max_iter": 0}, ValueError, "max_iter"),
        (K3, {"input_shape": (4, 4), "method": "power", "v0": np.ones(3)}, ValueError, "v0"),
        (K3, {"input_shape": (4, 4), "method": "power", "v0": np.zeros(32)}, ValueError, "v0"),
    ],
)
def test_bad_inputs_raise(kernel, kwargs, error, match):
    with pytest.raises(error, match=match):
        conv_operator_norm(kernel, **kwargs)


def test_bad_inputs_other_functions():
    with pytest.raises(ValueError, match="kernel must have rank"):
        reshaped_kernel_norm(np.ones((3, 3)))
    with pytest.raises(ValueError, match="input_shape must have one entry"):
        circular_conv_singular_values(K3, input_shape=(4,))
    with pytest.raises(TypeError, match="input_shape"):
        circular_conv_singular_values(K3, input_shape=None)
