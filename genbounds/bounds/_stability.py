"""Uniform stability of SGD: Hardt, Recht & Singer (2016) bounds and an empirical estimate.

An algorithm A is $\\epsilon$-uniformly stable if for all samples $S, S'$ differing in one example,
$\\sup_z E_A[f(A(S); z) - f(A(S'); z)] \\le \\epsilon$; then the expected generalisation gap of
the loss f is at most $\\epsilon$ (HRS Theorem 2.2). These are statements **in expectation**
over the sample and the algorithm, about the loss f (not the 0-1 error, not with probability
1 - delta), so every result here is a measure (``value=None``) whose ``complexity`` is
$\\epsilon$.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import check_array, check_n, check_positive, check_same_length

_REFERENCE = (
    "Hardt, Recht, Singer. Train faster, generalize better: Stability of stochastic gradient "
    "descent. ICML 2016, arXiv:1509.01240"
)


def hardt_stability_convex(
    *,
    lipschitz: float,
    step_sizes: Any,
    n: int,
    smoothness: float | None = None,
) -> Bound:
    """Uniform stability of SGD on a convex, L-Lipschitz, beta-smooth loss (HRS Theorem 3.8).

    $$\\epsilon_{stab} \\le \\frac{2 L^2}{n} \\sum_{t=1}^{T} \\alpha_t \\qquad (\\alpha_t \\le 2/\\beta)$$

    for T steps of SGD (one example drawn uniformly per step) with step sizes $\\alpha_t$.
    Proof (docs/bounds/stability.md): with the same sample path, a step on a shared example is
    non-expansive (convex, beta-smooth, $\\alpha \\le 2/\\beta$), a step on the differing example
    (probability 1/n) expands the distance by at most $2\\alpha_t L$; so
    $E\\|w_T - w'_T\\| \\le \\frac{2L}{n}\\sum_t \\alpha_t$ and $f$ is L-Lipschitz.

    Args:
      lipschitz: L > 0, the Lipschitz constant of $w \\mapsto f(w; z)$ for every z.
      step_sizes: the step sizes $\\alpha_1..\\alpha_T$ (a 1-D array, >= 0), or one number for
        a single step.
      n: number of training examples.
      smoothness: beta; when given, the condition $\\alpha_t \\le 2/\\beta$ is checked.

    Returns:
      A measure: ``complexity`` = the bound on $\\epsilon_{stab}$; ``terms``: ``epsilon``,
      ``sum_step_sizes``, ``num_steps``.

    Raises:
      ValueError, TypeError: bad arguments, or a step size above 2/beta.

    Examples:
      >>> round(hardt_stability_convex(lipschitz=1.0, step_sizes=[0.1] * 100, n=1000).complexity, 12)
      0.02

    References:
      Hardt, Recht & Singer, Train faster, generalize better: Stability of stochastic gradient
      descent, ICML 2016, arXiv:1509.01240, Theorem 3.8.
    """
    L = check_positive(lipschitz, "lipschitz")
    n = check_n(n, "n")
    alpha = np.atleast_1d(
        np.asarray(check_array(step_sizes, "step_sizes", ndim=(0, 1)), np.float64)
    )
    if np.any(alpha < 0):
        raise ValueError(f"step_sizes must be >= 0, got min {alpha.min():g}")
    if smoothness is not None:
        beta = check_positive(smoothness, "smoothness")
        if np.any(alpha > 2.0 / beta):
            raise ValueError(
                f"step_sizes must be <= 2/smoothness = {2.0 / beta:g} for Theorem 3.8, got max "
                f"{alpha.max():g}"
            )
    s = float(alpha.sum())
    eps = 2.0 * L * L * s / n  # Theorem 3.8, HRS 2016
    return Bound(
        name="hardt_stability_convex",
        value=None,
        complexity=eps,
        terms={"epsilon": eps, "sum_step_sizes": s, "num_steps": int(alpha.size)},
        n=n,
        reference=_REFERENCE,
        notes=(
            "bounds the expected generalisation gap of the loss f, in expectation",
            "assumes f convex, L-Lipschitz, beta-smooth; steps <= 2/beta"
            + ("" if smoothness is not None else " (not checked: smoothness not given)"),
        ),
    )


def hardt_stability_nonconvex(
    *,
    lipschitz: float,
    smoothness: float,
    c: float,
    num_steps: int,
    n: int,
) -> Bound:
    """Uniform stability of SGD on a non-convex loss in [0, 1] (HRS Theorem 3.12).

    For $f(\\cdot; z) \\in [0, 1]$, L-Lipschitz and beta-smooth, and T steps of SGD with
    non-increasing step sizes $\\alpha_t \\le c/t$:

    $$\\epsilon_{stab} \\le \\frac{1 + 1/(\\beta c)}{n - 1}\\, (2 c L^2)^{\\frac{1}{\\beta c + 1}}\\,
    T^{\\frac{\\beta c}{\\beta c + 1}}.$$

    The constant of HRS's Theorem 3.12 is [R] (not read in the paper; consistent with a secondary proof sketch);
    it is **derived** here in docs/bounds/stability.md from HRS's Lemma 3.11 and the growth
    recursion, by optimising the burn-in time $t_0$ (treated as real, as in the paper).

    Args:
      lipschitz: L > 0.
      smoothness: beta > 0.
      c: the step-size constant, alpha_t <= c / t, > 0.
      num_steps: T >= 1.
      n: number of training examples, >= 2.

    Returns:
      A measure: ``complexity`` = the bound; ``terms``: ``epsilon``, ``t0`` (the optimal burn-in
      $(2cL^2)^{1/(\\beta c+1)} T^{\\beta c/(\\beta c+1)}$), ``beta_c``.

    Raises:
      ValueError, TypeError: bad arguments.

    Examples:
      >>> r = hardt_stability_nonconvex(lipschitz=1.0, smoothness=1.0, c=1.0, num_steps=100, n=101)
      >>> round(r.complexity, 6)  # 2/100 * 2^(1/2) * 100^(1/2)
      0.282843

    References:
      Hardt, Recht & Singer, Train faster, generalize better: Stability of stochastic gradient
      descent, ICML 2016, arXiv:1509.01240, Lemma 3.11 and Theorem 3.12.
    """
    L = check_positive(lipschitz, "lipschitz")
    beta = check_positive(smoothness, "smoothness")
    c = check_positive(c, "c")
    T = check_n(num_steps, "num_steps")
    n = check_n(n, "n")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    q = beta * c
    t0 = (2.0 * c * L * L) ** (1.0 / (q + 1.0)) * T ** (q / (q + 1.0))
    # Theorem 3.12, HRS 2016 (derived in docs/bounds/stability.md).
    eps = (1.0 + 1.0 / q) / (n - 1) * (2.0 * c * L * L) ** (1.0 / (q + 1.0)) * T ** (q / (q + 1.0))
    notes = [
        "bounds the expected generalisation gap of a loss in [0, 1], in expectation",
        "assumes f(.; z) in [0, 1], L-Lipschitz, beta-smooth; alpha_t <= c/t non-increasing",
    ]
    if t0 > n:
        notes.append(f"optimal burn-in t0 = {t0:.3g} exceeds n: the bound exceeds 1 and is vacuous")
    return Bound(
        name="hardt_stability_nonconvex",
        value=None,
        complexity=eps,
        terms={"epsilon": eps, "t0": t0, "beta_c": q, "num_steps": T},
        n=n,
        reference=_REFERENCE,
        notes=tuple(notes),
    )


def empirical_stability(
    train_fn: Callable[[jax.Array, jax.Array, jax.Array], Any],
    loss_fn: Callable[[Any, jax.Array, jax.Array], jax.Array],
    *,
    X: Any,
    y: Any,
    X_test: Any,
    y_test: Any,
    key: jax.Array,
    num_replacements: int = 16,
    num_seeds: int = 1,
    X_replace: Any = None,
    y_replace: Any = None,
    batch: int | None = None,
    devices: Sequence[Any] | None = None,
) -> Bound:
    """Empirical uniform stability: retrain with one example replaced, measure the loss change.

    For replacements $r = 1..R$ (example $i_r$ of S replaced by a fresh $z'_r$, giving $S^{(r)}$)
    and training seeds $s = 1..K$ (the same seed, hence the same sample path, for $S$ and
    $S^{(r)}$), with $\\Delta_{s,r}(z) = f(A_s(S); z) - f(A_s(S^{(r)}); z)$ over the test points z:

    $$\\hat\\epsilon = \\max_{r} \\max_{z} \\Big| \\frac1K \\sum_s \\Delta_{s,r}(z) \\Big|.$$

    This is a **lower** estimate of the uniform stability $\\epsilon_{stab}$, a supremum over all
    samples, replacements and points (here: those tried); the average over seeds estimates
    $E_A$. All $R$ retrainings of a seed run batched under ``jax.vmap``.

    Args:
      train_fn: ``train_fn(X, y, key) -> params``, pure JAX (vmapped over X and y).
      loss_fn: ``loss_fn(params, X, y) -> per-example losses (n,)``.
      X, y: the training sample S (n examples).
      X_test, y_test: the points z at which the loss change is measured.
      key: PRNG key (which examples are replaced, the replacements, the training seeds).
      num_replacements: R.
      num_seeds: K training seeds.
      X_replace, y_replace: pool of replacement examples (default: X_test, y_test).
      batch: retrainings vmapped together (default: all R).
      devices: when given, the R retrainings of each seed are one population sharded over
        these devices (and over processes after `jax.distributed.initialize`), by
        `genbounds.cmi.run_population` with groups of ``batch``; default: one device.

    Returns:
      A measure: ``complexity`` = $\\hat\\epsilon$; ``terms``: ``epsilon``, ``max_abs_change``
      ($\\max_{s,r,z}|\\Delta|$), ``mean_abs_change``, ``max_change_per_run`` (K x R array of
      $\\max_z |\\Delta_{s,r}(z)|$), ``replaced_indices``, ``replacement_indices``.

    Raises:
      ValueError, TypeError: bad shapes or arguments.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> train = lambda X, y, k: jnp.linalg.solve(X.T @ X + jnp.eye(2), X.T @ y)  # ridge
      >>> loss = lambda w, X, y: (X @ w - y) ** 2
      >>> X = jax.random.normal(jax.random.key(0), (50, 2)); y = X @ jnp.array([1.0, -1.0])
      >>> r = empirical_stability(train, loss, X=X, y=y, X_test=X, y_test=y,
      ...                         key=jax.random.key(1))
      >>> r.complexity > 0
      True

    References:
      Hardt, Recht & Singer, ICML 2016, arXiv:1509.01240 (Definition 2.1); Bousquet & Elisseeff,
      Stability and Generalization, JMLR 2002.
    """
    if not callable(train_fn) or not callable(loss_fn):
        raise TypeError("train_fn and loss_fn must be callable")
    X = jnp.asarray(check_array(X, "X", ndim=(1, 2, 3, 4, 5)))
    y = jnp.asarray(check_array(y, "y", ndim=(1, 2)))
    X_test = jnp.asarray(check_array(X_test, "X_test", ndim=X.ndim))
    y_test = jnp.asarray(check_array(y_test, "y_test", ndim=y.ndim))
    n = check_same_length(X, y, "X", "y")
    check_same_length(X_test, y_test, "X_test", "y_test")
    if X_replace is None:
        X_replace, y_replace = X_test, y_test
    elif y_replace is None:
        raise TypeError("y_replace must be given with X_replace")
    X_replace = jnp.asarray(check_array(X_replace, "X_replace", ndim=X.ndim))
    y_replace = jnp.asarray(check_array(y_replace, "y_replace", ndim=y.ndim))
    n_rep = check_same_length(X_replace, y_replace, "X_replace", "y_replace")
    if X_replace.shape[1:] != X.shape[1:] or X_test.shape[1:] != X.shape[1:]:
        raise ValueError(
            f"X_test and X_replace must have example shape {X.shape[1:]}, got "
            f"{X_test.shape[1:]} and {X_replace.shape[1:]}"
        )
    R = check_n(num_replacements, "num_replacements")
    K = check_n(num_seeds, "num_seeds")
    if R > n:
        raise ValueError(f"num_replacements must be <= n = {n}, got {R}")
    batch = R if batch is None else min(check_n(batch, "batch"), R)

    k_idx, k_rep, k_seed = jax.random.split(key, 3)
    idx = jax.random.choice(k_idx, n, (R,), replace=False)
    rep = jax.random.randint(k_rep, (R,), 0, n_rep)
    Xs = jax.vmap(lambda i, j: X.at[i].set(X_replace[j]))(idx, rep)
    ys = jax.vmap(lambda i, j: y.at[i].set(y_replace[j]))(idx, rep)

    @jax.jit
    def one_seed(k):
        base = loss_fn(train_fn(X, y, k), X_test, y_test)

        def retrain(Xr, yr):
            return base - loss_fn(train_fn(Xr, yr, k), X_test, y_test)

        return jax.lax.map(lambda a: retrain(*a), (Xs, ys), batch_size=batch)  # (R, n_test)

    if devices is not None:
        from genbounds.cmi._sharding import run_population

        def one_seed(k):  # noqa: F811 - the sharded population replaces the jitted map
            base = jax.jit(lambda: loss_fn(train_fn(X, y, k), X_test, y_test))()
            changed = run_population(lambda a: loss_fn(train_fn(a[0], a[1], k), X_test, y_test),
                                     (np.asarray(Xs), np.asarray(ys)), devices=devices,
                                     chunk=batch)
            return np.asarray(base)[None] - changed

    deltas = np.stack(
        [np.asarray(one_seed(jax.random.fold_in(k_seed, s)), np.float64) for s in range(K)]
    )  # (K, R, n_test)
    eps = float(np.max(np.abs(deltas.mean(axis=0))))
    return Bound(
        name="empirical_stability",
        value=None,
        complexity=eps,
        terms={
            "epsilon": eps,
            "max_abs_change": float(np.max(np.abs(deltas))),
            "mean_abs_change": float(np.mean(np.abs(deltas))),
            "max_change_per_run": np.max(np.abs(deltas), axis=-1),
            "replaced_indices": np.asarray(idx),
            "replacement_indices": np.asarray(rep),
            "num_seeds": K,
        },
        n=n,
        estimated=True,
        reference=_REFERENCE,
        notes=(
            "lower estimate of the uniform stability (a sup over what was tried)",
            "same training seed for S and its modified copies (coupled sample paths)",
        ),
    )
