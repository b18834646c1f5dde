"""The VC bound (Vapnik / Burges eq. (3)) and the VC-dimension bound of ReLU networks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genbounds.bounds import vc, vc_dimension_bound
from genbounds.internal import vc_counting_bound as _counting_bound

HYP = settings(max_examples=60, deadline=None)


def vapnik_ref(train_error, h, n, delta):
    """Burges (1998) eq. (3) in float64, natural logs (h <= 2n)."""
    return train_error + np.sqrt((h * (np.log(2.0 * n / h) + 1.0) - np.log(delta / 4.0)) / n)


# ----------------------------------------------------------------------------------------------
# The bound


def test_vc_oracle():
    # formulas.md section 11: h = 10, n = 1000, delta = 0.05 gives 0.2595481.
    b = vc(n=1000, delta=0.05, vc_dim=10)
    assert b.value == pytest.approx(0.2595481, abs=5e-8)
    assert b.complexity == 10 and b.name == "vc" and b.n == 1000 and b.delta == 0.05
    assert not b.vacuous


def test_vc_matches_reference():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 10**6))
        h = float(rng.integers(1, 2 * n + 1))
        delta, err = rng.uniform(1e-6, 0.99), rng.uniform(0, 1)
        b = vc(n=n, delta=delta, train_error=err, vc_dim=h)
        assert b.value == pytest.approx(vapnik_ref(err, h, n, delta), rel=1e-10)
        assert b.terms["confidence_term"] == pytest.approx(b.value - err, rel=1e-10)


def test_vc_vacuous_is_reported_not_clipped():
    b = vc(n=100, vc_dim=150)
    assert b.value == pytest.approx(vapnik_ref(0.0, 150, 100, 0.05), rel=1e-12)
    assert b.value > 1 and b.vacuous
    assert "vacuous" in repr(b)


def test_vc_beyond_sauer_uses_value_at_two_n():
    # h > 2n: Sauer's lemma does not apply; h (ln(2n/h) + 1) would turn negative for h > 2e n.
    n = 100
    at_2n = vc(n=n, vc_dim=2 * n).value
    for h in (201, 1000, 10**6):
        b = vc(n=n, vc_dim=h)
        assert b.value == pytest.approx(at_2n, rel=1e-12)
        assert b.terms["capacity"] == 2 * n
        assert any("Sauer" in note for note in b.notes)
        assert b.value >= math.sqrt(2)


def test_vc_zero_dimension():
    b = vc(n=50, vc_dim=0, train_error=0.1)
    assert b.value == pytest.approx(0.1 + math.sqrt(math.log(4 / 0.05) / 50), rel=1e-12)


@HYP
@given(
    h=st.integers(0, 10**5),
    n1=st.integers(1, 10**7),
    n2=st.integers(1, 10**7),
    d1=st.floats(1e-8, 0.99),
    d2=st.floats(1e-8, 0.99),
    err=st.floats(0, 1),
)
def test_vc_monotone_in_n_and_delta(h, n1, n2, d1, d2, err):
    n1, n2 = sorted((n1, n2))
    d1, d2 = sorted((d1, d2))
    assert vc(n=n2, delta=d1, vc_dim=h, train_error=err).value <= (
        vc(n=n1, delta=d1, vc_dim=h, train_error=err).value + 1e-12
    )
    assert vc(n=n1, delta=d1, vc_dim=h, train_error=err).value >= (
        vc(n=n1, delta=d2, vc_dim=h, train_error=err).value - 1e-12
    )


@HYP
@given(h1=st.integers(0, 10**6), h2=st.integers(0, 10**6), n=st.integers(1, 10**5))
def test_vc_monotone_in_h(h1, h2, n):
    h1, h2 = sorted((h1, h2))
    assert vc(n=n, vc_dim=h1).value <= vc(n=n, vc_dim=h2).value + 1e-12


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n": 100}, ValueError, "needs params"),
        ({"n": 100, "vc_dim": -1}, ValueError, "vc_dim must be"),
        ({"n": 100, "vc_dim": float("nan")}, ValueError, "vc_dim must be"),
        ({"n": 0, "vc_dim": 3}, ValueError, "n must be an integer >= 1"),
        ({"n": 2.5, "vc_dim": 3}, TypeError, "n must be an integer"),
        ({"n": 100, "vc_dim": 3, "delta": 0.0}, ValueError, "delta must lie in"),
        ({"n": 100, "vc_dim": 3, "delta": 1.5}, ValueError, "delta must lie in"),
        ({"n": 100, "vc_dim": 3, "train_error": 1.2}, ValueError, "train_error must lie in"),
        ({"n": 100, "vc_dim": 3, "train_error": float("nan")}, ValueError, "train_error"),
        ({"n": 100, "vc_dim": "3"}, TypeError, "vc_dim must be"),
    ],
)
def test_vc_bad_input(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        vc(**kwargs)


# ----------------------------------------------------------------------------------------------
# The VC-dimension bound


def log2_sign_patterns_ref(num_polys, degree, num_vars):
    """Anthony & Bartlett (1999) Thm 8.3: 2 (2 e M D / N)^N for M >= N; and always 2^M."""
    if num_polys < num_vars:
        return num_polys
    return min(num_polys, 1 + num_vars * math.log2(2 * math.e * num_polys * degree / num_vars))


def counting_bound_ref(sizes, bias=True, pieces=2, limit=10**6):
    """Largest m <= limit with m <= log2 Pi(m), by scanning every m (docs/bounds/vc.md, eq. (G))."""
    depth = len(sizes) - 1
    params = [sizes[i] * sizes[i + 1] + (sizes[i + 1] if bias else 0) for i in range(depth)]
    cum = np.cumsum(params)
    c = 1 if sizes[-1] <= 2 else sizes[-1] - 1
    best = 0
    for m in range(1, limit):
        total = sum(
            log2_sign_patterns_ref(m * sizes[i] * (pieces - 1), i, cum[i - 1])
            for i in range(1, depth)
        )
        total += log2_sign_patterns_ref(m * c, depth, cum[-1])
        if m <= total + 1e-9:
            best = m
    return best


@pytest.mark.parametrize("d", [1, 2, 3, 5, 10, 50])
def test_halfspaces_oracle(d):
    # Affine halfspaces in R^d: VC dimension exactly d + 1; through the origin: d.
    assert vc_dimension_bound((d, 1)) == d + 1
    assert vc_dimension_bound((d, 2)) == d + 1  # argmax of two linear scores
    assert vc_dimension_bound((d, 1), bias=False) == d
    # the counting argument alone is a valid upper bound, so it is >= the exact value
    assert _counting_bound((d, 1), (True,), 2) >= d + 1
    assert _counting_bound((d, 1), (False,), 2) >= d


@pytest.mark.parametrize(
    "sizes", [(1, 2, 1), (2, 3, 1), (3, 4, 2), (2, 2, 2, 1), (2, 3, 4), (1, 1, 1, 1, 1)]
)
def test_counting_bound_matches_scan(sizes):
    got = vc_dimension_bound(sizes)
    assert got == counting_bound_ref(sizes, limit=8 * got + 100)


def test_counting_bound_pieces_and_bias():
    assert vc_dimension_bound((2, 3, 1), pieces=3) == counting_bound_ref(
        (2, 3, 1), pieces=3, limit=5000
    )
    assert vc_dimension_bound((2, 3, 1), bias=False) == counting_bound_ref(
        (2, 3, 1), bias=False, limit=5000
    )
    assert vc_dimension_bound((2, 3, 1), bias=[True, False]) < vc_dimension_bound((2, 3, 1))


def test_vc_dimension_bound_grows_with_the_network():
    base = vc_dimension_bound((10, 20, 1))
    assert vc_dimension_bound((10, 40, 1)) > base
    assert vc_dimension_bound((10, 20, 20, 1)) > base
    assert vc_dimension_bound((10, 20, 5)) > base  # more outputs: more loss patterns
    w = 10 * 20 + 20 + 20 + 1
    assert base >= w


def test_vc_dimension_bound_large_network_is_fast_and_order_wll():
    # 784-600-600-10: W = 837,610 parameters, L = 3; the bound is O(W L log W).
    h = vc_dimension_bound((784, 600, 600, 10))
    w = 784 * 600 + 600 + 600 * 600 + 600 + 600 * 10 + 10
    assert w < h < 3 * w * math.log2(w)


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        (((3,),), {}, ValueError, "at least"),
        (((3, 0, 1),), {}, ValueError, "positive integer"),
        (((3, 2.0, 1),), {}, TypeError, "positive integer"),
        (("31",), {}, TypeError, "sequence"),
        (((3, 2, 1),), {"bias": [True]}, ValueError, "one True/False per weight layer"),
        (((3, 2, 1),), {"pieces": 0}, ValueError, "pieces"),
    ],
)
def test_vc_dimension_bound_bad_input(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        vc_dimension_bound(*args, **kwargs)


# ----------------------------------------------------------------------------------------------
# From parameters


def _mlp_params(sizes, seed=0, bias=True):
    rng = np.random.default_rng(seed)
    params = {}
    for i in range(len(sizes) - 1):
        layer = {"kernel": rng.normal(size=(sizes[i], sizes[i + 1]))}
        if bias:
            layer["bias"] = np.zeros(sizes[i + 1])
        params[f"Dense_{i}"] = layer
    return {"params": params}


def test_vc_from_params_matches_architecture():
    pytest.importorskip("genbounds.network")
    for sizes in [(4, 8, 1), (5, 7, 3, 10), (6, 1)]:
        b = vc(_mlp_params(sizes), n=5000, train_error=0.02)
        h = vc_dimension_bound(sizes)
        assert b.complexity == h and b.terms["vc_dim"] == h
        assert b.value == pytest.approx(vc(n=5000, vc_dim=h, train_error=0.02).value, rel=1e-14)
        assert b.terms["num_params"] == sum(
            sizes[i] * sizes[i + 1] + sizes[i + 1] for i in range(len(sizes) - 1)
        )
    no_bias = vc(_mlp_params((4, 8, 1), bias=False), n=100)
    assert no_bias.complexity == vc_dimension_bound((4, 8, 1), bias=False)


def test_vc_from_flax_linen_params():
    pytest.importorskip("genbounds.network")
    import flax.linen as nn

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Dense(6)(x))
            x = nn.relu(nn.Dense(6)(x))
            return nn.Dense(3)(x)

    variables = MLP().init(jax.random.PRNGKey(0), jnp.ones((1, 5), jnp.float32))
    assert vc(variables, n=1000).complexity == vc_dimension_bound((5, 6, 6, 3))


def test_vc_vc_dim_overrides_params():
    pytest.importorskip("genbounds.network")
    b = vc(_mlp_params((4, 8, 1)), n=1000, vc_dim=10)
    assert b.complexity == 10 and b.value == pytest.approx(0.2595481, abs=5e-8)


def test_vc_rejects_conv_params():
    pytest.importorskip("genbounds.network")
    params = {
        "Conv_0": {"kernel": jnp.ones((3, 3, 1, 4)), "bias": jnp.zeros(4)},
        "Dense_0": {"kernel": jnp.ones((4, 1)), "bias": jnp.zeros(1)},
    }
    with pytest.raises(ValueError, match="fully connected layers.*Conv_0.*convolutions"):
        vc(params, n=100)
