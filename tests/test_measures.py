"""Tests for the norm-based measures of genbounds.measures: path norms, distance from initialisation, Jiang et al.'s measures.

References: explicit enumeration of every path, explicit convolution matrices, and numpy SVDs,
all float64 and independent of the implementation.
"""

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genbounds.bounds import vc_dimension_bound
from genbounds.measures import (
    distance_from_init,
    jiang_normalise,
    norm_measures,
    path_norm,
)
from genbounds.network import ConvSpec

RTOL = 1e-10


def to_params(Ws, bs=None):
    """Paper layout W (out, in) -> Flax kernels (in, out)."""
    params = {}
    for j, W in enumerate(Ws):
        params[f"Dense_{j}"] = {"kernel": np.asarray(W, np.float64).T.copy()}
        if bs is not None and bs[j] is not None:
            params[f"Dense_{j}"]["bias"] = np.asarray(bs[j], np.float64).copy()
    return params


def enumerate_paths(Ws, bs, p):
    """sum over every path (from an input unit or from a bias) of prod |w|^p, by enumeration."""
    L = len(Ws)
    sizes = [Ws[0].shape[1]] + [W.shape[0] for W in Ws]
    total = 0.0
    # paths that start at an input unit and run through all L layers
    for units in itertools.product(*[range(s) for s in sizes]):
        total += np.prod([abs(Ws[j][units[j + 1], units[j]]) ** p for j in range(L)])
    # paths that start at the bias of unit u in layer s and run through layers s+1..L
    if bs is not None:
        for s in range(L):
            for units in itertools.product(*[range(sz) for sz in sizes[s + 1:]]):
                w = abs(bs[s][units[0]]) ** p
                for j in range(s + 1, L):
                    w *= abs(Ws[j][units[j - s], units[j - s - 1]]) ** p
                total += w
    return total


def random_net(rng, sizes, bias=True):
    Ws = [rng.standard_normal((o, i)) for i, o in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [rng.standard_normal(o) for o in sizes[1:]] if bias else None
    return Ws, bs


# ----------------------------------------------------------------------------------------------
# Path norm.


@pytest.mark.parametrize("w1, w2", [(3.0, -2.0), (0.5, 0.25), (-1.5, -4.0)])
def test_scalar_two_layer_oracle(w1, w2):
    # formulas.md §11: l2 path norm |w1 w2|, Jiang's mu_44 = (w1 w2)^2
    params = [np.array([[w1]]), np.array([[w2]])]
    assert path_norm(params).complexity == pytest.approx(abs(w1 * w2), rel=1e-15)
    assert path_norm(params, power=True).complexity == pytest.approx((w1 * w2) ** 2, rel=1e-15)


@pytest.mark.parametrize("p", [1.0, 2.0, 1.5])
@pytest.mark.parametrize("bias", [True, False])
def test_path_norm_matches_enumeration(p, bias):
    rng = np.random.default_rng(int(10 * p) + bias)
    Ws, bs = random_net(rng, [3, 4, 3, 2], bias=bias)
    ref = enumerate_paths(Ws, bs, p)
    params = to_params(Ws, bs)
    np.testing.assert_allclose(path_norm(params, p=p, power=True).complexity, ref, rtol=RTOL)
    np.testing.assert_allclose(path_norm(params, p=p).complexity, ref ** (1 / p), rtol=RTOL)
    no_bias = path_norm(params, p=p, power=True, biases=False).complexity
    np.testing.assert_allclose(no_bias, enumerate_paths(Ws, None, p), rtol=RTOL)


def test_path_norm_of_deep_network_is_computed_without_overflow():
    # 200 scalar layers of weight 10: sum over the one path of w^2 = 10^400 overflows a float,
    # its square root 10^200 does not.
    params = [np.array([[10.0]])] * 200
    b = path_norm(params, layers=[str(i) for i in range(200)])
    np.testing.assert_allclose(b.complexity, 1e200, rtol=1e-12)
    np.testing.assert_allclose(b.terms["log_path_sum"], 400 * math.log(10), rtol=1e-12)
    assert path_norm(params, power=True, layers=[str(i) for i in range(200)]).complexity == math.inf
    tiny = [np.array([[0.01]])] * 200  # 10^-800 underflows; the root 10^-400 too, but not its log
    b = path_norm(tiny, p=1.0, layers=[str(i) for i in range(200)])
    np.testing.assert_allclose(b.terms["log_path_sum"], -400 * math.log(10), rtol=1e-12)


def test_zero_network_has_zero_path_norm():
    assert path_norm([np.zeros((3, 2)), np.ones((2, 1))]).complexity == 0.0


def conv_matrix(kernel, in_shape, stride, padding):
    """The explicit (out_positions*c_out, in_positions*c_in) matrix of a 2-D conv, Flax layout."""
    kh, kw, ci, co = kernel.shape
    H, W = in_shape
    if padding == "VALID":
        oh, ow = (H - kh) // stride + 1, (W - kw) // stride + 1
        top = left = 0
    elif padding == "SAME":
        oh, ow = -(-H // stride), -(-W // stride)
        top = max((oh - 1) * stride + kh - H, 0) // 2
        left = max((ow - 1) * stride + kw - W, 0) // 2
    else:  # CIRCULAR, stride 1: wrap-pad ((k-1)//2, k//2)
        oh, ow = H, W
        top, left = (kh - 1) // 2, (kw - 1) // 2
    M = np.zeros((oh * ow * co, H * W * ci))
    for a, b, c_out in itertools.product(range(oh), range(ow), range(co)):
        for i, j, c_in in itertools.product(range(kh), range(kw), range(ci)):
            r, s = a * stride + i - top, b * stride + j - left
            if padding == "CIRCULAR":
                r, s = r % H, s % W
            elif not (0 <= r < H and 0 <= s < W):
                continue
            M[(a * ow + b) * co + c_out, (r * W + s) * ci + c_in] += kernel[i, j, c_in, c_out]
    return M, (oh, ow)


@pytest.mark.parametrize("padding, stride", [("SAME", 1), ("SAME", 2), ("VALID", 1),
                                             ("CIRCULAR", 1)])
def test_conv_path_norm_matches_explicit_matrices(padding, stride):
    rng = np.random.default_rng(3)
    k1 = rng.standard_normal((3, 3, 2, 3))
    b1 = rng.standard_normal(3)
    M1, out_shape = conv_matrix(k1, (5, 5), stride, padding)
    k2 = rng.standard_normal((3, 3, 3, 2))
    M2, out2 = conv_matrix(k2, out_shape, 1, "SAME")
    dense = rng.standard_normal((out2[0] * out2[1] * 2, 4))
    params = {"Conv_0": {"kernel": k1, "bias": b1}, "Conv_1": {"kernel": k2},
              "Dense_0": {"kernel": dense}}
    conv = {"Conv_0": ConvSpec(strides=stride, padding=padding, input_shape=(5, 5)),
            "Conv_1": ConvSpec(padding="SAME")}
    for p in (1.0, 2.0):
        h = np.abs(M1) ** p @ np.ones(M1.shape[1])
        h = h + np.tile(np.abs(b1) ** p, out_shape[0] * out_shape[1])  # bias of every position
        h = np.abs(M2) ** p @ h
        ref = np.sum(np.abs(dense.T) ** p @ h)
        got = path_norm(params, p=p, power=True, conv=conv).complexity
        np.testing.assert_allclose(got, ref, rtol=RTOL)


def test_conv_path_norm_needs_the_input_shape():
    params = {"Conv_0": {"kernel": np.ones((3, 3, 1, 2))}, "Dense_0": {"kernel": np.ones((32, 2))}}
    with pytest.raises(ValueError, match="input shape"):
        path_norm(params)
    with pytest.raises(ValueError, match="fan-in"):
        path_norm(params, conv=ConvSpec(input_shape=(5, 5)))  # 5*5*2 = 50, not 32
    m = norm_measures(params)
    assert "path_norm" not in m and "l2_path_norm" not in m  # left out, never NaN
    assert all(any("not computed: path_norm" in n and "input shape" in n for n in m_.notes)
               for m_ in m.values())


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), j=st.integers(0, 1), c=st.floats(0.01, 100.0),
       p=st.sampled_from([1.0, 2.0]))
def test_path_norm_invariant_under_relu_rescaling(seed, j, c, p):
    # W_j -> c W_j, b_j -> c b_j, W_{j+1} -> W_{j+1} / c leaves the ReLU net's function and its
    # path norm unchanged.
    rng = np.random.default_rng(seed)
    Ws, bs = random_net(rng, [3, 4, 3, 2])
    Ws2 = list(Ws)
    bs2 = list(bs)
    Ws2[j], bs2[j], Ws2[j + 1] = c * Ws[j], c * bs[j], Ws[j + 1] / c
    a = path_norm(to_params(Ws, bs), p=p).complexity
    b = path_norm(to_params(Ws2, bs2), p=p).complexity
    np.testing.assert_allclose(b, a, rtol=1e-10)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10**6), j=st.integers(0, 2), c=st.floats(0.01, 100.0),
       p=st.sampled_from([1.0, 2.0, 3.0]))
def test_path_norm_homogeneous_in_each_layer(seed, j, c, p):
    rng = np.random.default_rng(seed)
    Ws, _ = random_net(rng, [3, 4, 3, 2], bias=False)
    Ws2 = [W * (c if i == j else 1.0) for i, W in enumerate(Ws)]
    a = path_norm(to_params(Ws), p=p)
    b = path_norm(to_params(Ws2), p=p)
    np.testing.assert_allclose(b.complexity, c * a.complexity, rtol=1e-10)
    np.testing.assert_allclose(path_norm(to_params(Ws2), p=p, power=True).complexity,
                               c**p * path_norm(to_params(Ws), p=p, power=True).complexity,
                               rtol=1e-10)


def test_path_norm_bad_p():
    with pytest.raises(ValueError, match="p must"):
        path_norm([np.ones((2, 2))], p=0.0)


# ----------------------------------------------------------------------------------------------
# Distance from initialisation.


def test_distance_from_init_matches_numpy():
    rng = np.random.default_rng(4)
    Ws, bs = random_net(rng, [5, 4, 6, 3])
    W0s, b0s = random_net(rng, [5, 4, 6, 3])
    b = distance_from_init(to_params(Ws, bs), reference=to_params(W0s, b0s), method="exact")
    fro = [np.linalg.norm(W - W0, "fro") for W, W0 in zip(Ws, W0s, strict=True)]
    spec = [np.linalg.svd(W - W0, compute_uv=False)[0] for W, W0 in zip(Ws, W0s, strict=True)]
    np.testing.assert_allclose(list(b.terms["frobenius"].values()), fro, rtol=RTOL)
    np.testing.assert_allclose(list(b.terms["spectral"].values()), spec, rtol=RTOL)
    np.testing.assert_allclose(b.terms["fro_dist"], sum(v * v for v in fro), rtol=RTOL)
    np.testing.assert_allclose(b.terms["spec_dist"], sum(v * v for v in spec), rtol=RTOL)
    np.testing.assert_allclose(b.complexity, math.sqrt(sum(v * v for v in fro)), rtol=RTOL)
    # biases do not enter: changing them changes nothing
    other = distance_from_init(to_params(Ws, [2 * v for v in bs]), reference=to_params(W0s, b0s),
                               method="exact")
    assert other.complexity == b.complexity
    # the default (certified) spectral norms are upper bounds on the exact ones
    cert = distance_from_init(to_params(Ws, bs), reference=to_params(W0s, b0s))
    assert cert.terms["spec_dist"] >= b.terms["spec_dist"] * (1 - 1e-12)


def test_distance_from_init_needs_matching_reference():
    rng = np.random.default_rng(4)
    Ws, bs = random_net(rng, [5, 4, 3])
    W0s, b0s = random_net(rng, [5, 4, 2])
    with pytest.raises(ValueError, match="reference"):
        distance_from_init(to_params(Ws, bs), reference=to_params(W0s, b0s))


# ----------------------------------------------------------------------------------------------
# Jiang et al.'s measures.


def jiang_reference(Ws, bs, W0s, gamma):
    """Jiang et al. (2020) raw measures, from numpy (formulas.md §7.1 table)."""
    f2 = np.array([np.linalg.norm(W, "fro") ** 2 for W in Ws])
    s2 = np.array([np.linalg.svd(W, compute_uv=False)[0] ** 2 for W in Ws])
    df2 = np.array([np.linalg.norm(W - W0, "fro") ** 2 for W, W0 in zip(Ws, W0s, strict=True)])
    ds2 = np.array([np.linalg.svd(W - W0, compute_uv=False)[0] ** 2
                    for W, W0 in zip(Ws, W0s, strict=True)])
    d = len(Ws)
    mu = {
        "num_weights": sum(W.size for W in Ws),
        "inverse_margin": 1 / gamma**2,
        "log_prod_spec": np.log(np.prod(s2)),
        "log_prod_spec_over_margin": np.log(np.prod(s2)) - 2 * np.log(gamma),
        "fro_over_spec": np.sum(f2 / s2),
        "log_sum_spec": np.log(d) + np.log(np.prod(s2)) / d,
        "log_sum_spec_over_margin": np.log(d) + (np.log(np.prod(s2)) - 2 * np.log(gamma)) / d,
        "log_prod_fro": np.log(np.prod(f2)),
        "log_prod_fro_over_margin": np.log(np.prod(f2)) - 2 * np.log(gamma),
        "log_sum_fro": np.log(d) + np.log(np.prod(f2)) / d,
        "log_sum_fro_over_margin": np.log(d) + (np.log(np.prod(f2)) - 2 * np.log(gamma)) / d,
        "fro_dist": np.sum(df2),
        "spec_dist": np.sum(ds2),
        "param_norm": np.sum(f2),
        "path_norm": enumerate_paths(Ws, bs, 2.0),
    }
    mu["log_spec_orig"] = mu["log_prod_spec_over_margin"] + np.log(np.sum(f2 / s2))
    mu["log_spec_init"] = mu["log_prod_spec_over_margin"] + np.log(np.sum(df2 / s2))
    mu["path_norm_over_margin"] = mu["path_norm"] / gamma**2
    mu["l2"] = np.sqrt(np.sum(f2))  # the reference code's L2 and L2_DIST (unnumbered)
    mu["l2_dist"] = np.sqrt(np.sum(df2))
    mu["vc_dim"] = vc_dimension_bound([Ws[0].shape[1]] + [W.shape[0] for W in Ws], bias=True)
    extra = {
        "num_params": sum(W.size for W in Ws) + sum(b.size for b in bs),
        "sum_fro": np.sum(np.sqrt(f2)), "sum_spec": np.sum(np.sqrt(s2)),
        "prod_fro": np.prod(np.sqrt(f2)), "prod_spec": np.prod(np.sqrt(s2)),
        "l2_path_norm": np.sqrt(mu["path_norm"]),
    }
    return mu, extra


def test_norm_measures_match_reference():
    rng = np.random.default_rng(8)
    Ws, bs = random_net(rng, [4, 5, 3, 3])
    W0s, b0s = random_net(rng, [4, 5, 3, 3])
    gamma = 0.3
    mu, extra = jiang_reference(Ws, bs, W0s, gamma)
    got = norm_measures(to_params(Ws, bs), reference=to_params(W0s, b0s), margin=gamma,
                        method="exact")
    assert set(got) == set(mu) | set(extra)
    for name, v in {**mu, **extra}.items():
        assert got[name].is_measure
        np.testing.assert_allclose(got[name].complexity, v, rtol=RTOL, err_msg=name)
    stable = got["fro_over_spec"].terms["stable_rank"]
    np.testing.assert_allclose(
        list(stable.values()),
        [np.linalg.norm(W, "fro") ** 2 / np.linalg.svd(W, compute_uv=False)[0] ** 2 for W in Ws],
        rtol=RTOL)

    n = 5000
    adj = norm_measures(to_params(Ws, bs), reference=to_params(W0s, b0s), margin=gamma, n=n,
                        jiang=True, method="exact")
    assert set(adj) == set(mu)  # only Jiang's measures (and the reference code's l2, l2_dist)
    for name, v in mu.items():
        ref = 0.5 * (v - np.log(n)) if name.startswith("log_") else np.sqrt(v / n)
        np.testing.assert_allclose(adj[name].complexity, ref, rtol=RTOL, err_msg=name)
        assert adj[name].terms["raw"] == pytest.approx(v, rel=RTOL)


def test_norm_measures_without_reference_or_margin():
    rng = np.random.default_rng(9)
    Ws, bs = random_net(rng, [3, 4, 2])
    got = norm_measures(to_params(Ws, bs))
    for absent in ("fro_dist", "spec_dist", "inverse_margin", "log_spec_init", "log_spec_orig",
                   "path_norm_over_margin"):
        assert absent not in got
    assert got["num_weights"].complexity == 3 * 4 + 4 * 2
    assert got["num_params"].complexity == 3 * 4 + 4 * 2 + 4 + 2


def test_norm_measures_bad_input():
    params = to_params(*random_net(np.random.default_rng(0), [3, 4, 2]))
    with pytest.raises(ValueError, match="margin"):
        norm_measures(params, margin=0.0)
    with pytest.raises(ValueError, match="margin"):
        norm_measures(params, margin=-1.0)
    with pytest.raises(ValueError, match="needs n"):
        norm_measures(params, jiang=True)
    with pytest.raises(ValueError, match="n must"):
        norm_measures(params, n=0)
    with pytest.raises(ValueError, match="all zeros"):
        norm_measures({"Dense_0": {"kernel": np.zeros((3, 2))}})


def test_jiang_normalise():
    assert jiang_normalise(400.0, n=100, log=False) == 2.0
    assert jiang_normalise(10.0, n=100, log=True) == pytest.approx(0.5 * (10 - math.log(100)),
                                                                   rel=1e-15)
    with pytest.raises(ValueError, match="n must"):
        jiang_normalise(1.0, n=0, log=False)
    with pytest.raises(ValueError, match="mu"):
        jiang_normalise(-1.0, n=10, log=False)
