"""One rule for Monte-Carlo counting: a draw whose logits (or loss) are NaN or infinite is neither
correct nor wrong, so every entry point that counts draws refuses it, naming the function and
the number of non-finite draws.

The model of each test is finite at its parameters and at most draws, and NaN beyond a region
of weight (or input) space; ``margin <= 0`` is False for NaN, so before the rule such draws
counted as correct (3-class random labels, about a third of the draws NaN: the issue's case).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genbounds import adversarial, measures, pacbayes

RNG = np.random.default_rng(0)
X = RNG.normal(size=(40, 4))
Y = RNG.integers(0, 3, 40)  # random labels: true risk 2/3
W = {"w": jnp.asarray(RNG.normal(size=(4, 3)) * 0.1).at[0, 0].set(0.0), "b": jnp.zeros(3)}
KEY = jax.random.key(0)


def nan_beyond(p, X):
    """Linear logits, NaN when w[0, 0] leaves [-0.5, 0.5] (P ~ 0.31 under N(0, 1))."""
    z = X.astype(p["w"].dtype) @ p["w"] + p["b"]
    return jnp.where(jnp.abs(p["w"][0, 0]) > 0.5, jnp.nan, z)


def nan_above(p, X):
    """Linear logits, NaN when w[0, 0] > 0.5: about 31% of the draws of N(0, 1)."""
    z = X.astype(p["w"].dtype) @ p["w"] + p["b"]
    return jnp.where(p["w"][0, 0] > 0.5, jnp.nan, z)


def wide(tree, s=1.0):
    return pacbayes.DiagonalGaussian(W, jax.tree.map(lambda a: jnp.full_like(a, s), tree))




def test_stochastic_error_refuses_nan_draws_and_counts_them():
    with pytest.raises(ValueError, match=r"stochastic_error: apply_fn returned NaN or infinite "
                                         r"logits for \d+ of the 200 networks") as e:
        pacbayes.stochastic_error(wide(W), X=X, y=Y, apply_fn=nan_above, key=KEY,
                                  num_samples=200)
    k = int(str(e.value).split("for ")[1].split(" of")[0])
    # The count is the real one: P(z > 0.5) = 0.3085, 200 draws (sd 6.5): within 5 sd.
    assert 0.3085 * 200 - 33 < k < 0.3085 * 200 + 33


def test_risk_certificate_refuses_nan_draws():
    with pytest.raises(ValueError, match=r"risk_certificate: .* of the 100 networks"):
        pacbayes.risk_certificate(wide(W), X=X, y=Y, apply_fn=nan_above, prior_mean=W,
                                  prior_std=1.0, key=KEY, num_mc_samples=100)


def test_dziugaite_roy_certificate_refuses_nan_draws():
    with pytest.raises(ValueError, match=r"dziugaite_roy_certificate: .* of the 100 networks"):
        pacbayes.dziugaite_roy_certificate(wide(W), X=X, y=Y, apply_fn=nan_above,
                                           init_params=W, prior_variance=0.05, key=KEY,
                                           num_mc_samples=100)


def test_finite_draws_still_count():
    """The rule changes nothing when every draw is finite (the same error as counted by hand)."""
    narrow = wide(W, 0.05)  # |w00| > 0.5 is a 10-sigma event
    r = pacbayes.stochastic_error(narrow, X=X, y=Y, apply_fn=nan_beyond, key=KEY, num_samples=20)
    assert 0.0 <= r["error"] <= 1.0 and np.isfinite(r["stderr"])


@pytest.mark.parametrize("fn", ["pac_bayes_flatness", "magnitude_aware_flatness"])
def test_flatness_searches_refuse_nan_perturbations(fn):
    p = {"w": W["w"].at[0, 0].set(0.3), "b": W["b"]}
    with pytest.raises(ValueError, match=rf"{fn}: apply_fn returned NaN or infinite logits for "
                                         r"\d+ of the 10 perturbed networks"):
        getattr(measures, fn)(p, X=X, y=Y, apply_fn=nan_beyond, key=KEY, num_samples=10,
                              search_depth=3)


@pytest.mark.parametrize("fn", ["worst_case_sharpness", "magnitude_aware_sharpness"])
def test_sharpness_searches_refuse_nan_points(fn):
    p = {"w": W["w"].at[0, 0].set(0.3), "b": W["b"]}
    with pytest.raises(ValueError, match=rf"{fn}: apply_fn returned NaN or infinite logits for "
                                         r"\d+ of the 12 points of the ascents"):
        getattr(measures, fn)(p, X=X, y=Y, apply_fn=nan_beyond, key=KEY, steps=10,
                              search_depth=3)


def test_keskar_sharpness_refuses_nan_losses():
    p = {"w": W["w"].at[0, 0].set(0.45), "b": W["b"]}
    with pytest.raises(ValueError, match=r"sharpness: apply_fn returned NaN or infinite logits "
                                         r"for \d+ of the 6 points of the ascent"):
        measures.sharpness(p, X=X, y=Y, apply_fn=nan_beyond, epsilon=0.5, steps=5,
                           key=jax.random.key(1))


def nan_inputs(p, x):
    """Linear logits, NaN where an input's first coordinate exceeds 3."""
    z = x @ p
    return jnp.where(x[:, :1] > 3.0, jnp.nan, z)


@pytest.mark.parametrize("attack", ["pgd", "fgsm"])
def test_attacks_refuse_nan_margins(attack):
    w = jnp.asarray(RNG.normal(size=(4, 3)))
    kw = {"steps": 3, "restarts": 2} if attack == "pgd" else {}
    n_points = 40 * (1 + 2 * 4) if attack == "pgd" else 40 * 3
    with pytest.raises(ValueError, match=rf"{attack}: apply_fn returned NaN or infinite logits "
                                         rf"at \d+ of the {n_points} points"):
        getattr(adversarial, attack)(w, X=X, y=Y, apply_fn=nan_inputs, eps=10.0, **kw)
    # Inside the region the attack runs as before.
    r = getattr(adversarial, attack)(w, X=np.clip(X, -1, 1), y=Y, apply_fn=nan_inputs, eps=0.1,
                                     **kw)
    assert 0.0 <= r.robust_accuracy <= 1.0


def test_rademacher_refuses_overflowing_draws():
    Xb = (X * 1e36).astype(np.float32)
    with pytest.raises(ValueError, match=r"rademacher: \d+ of the 8 draws .* NaN or infinite"):
        measures.rademacher(measures.LinearBall(1e6), Xb, num_draws=8, key=KEY)
