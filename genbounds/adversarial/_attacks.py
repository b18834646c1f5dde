r"""Adversarial attacks: FGSM and PGD in the $\ell_2$ and $\ell_\infty$ norms, jitted and batched.

An attack searches the ball $\{x' : \|x' - x\|_p \le \varepsilon\}$ (intersected with the data's
box $[lo, hi]^d$ when the inputs live in one) for a point whose margin
$f(x')_y - \max_{j \ne y} f(x')_j$ is $\le 0$, i.e. that the network misclassifies. An example is
*robust to the attack* at $\varepsilon$ when no point the attack visits is misclassified; the
fraction of robust examples is the attack's robust accuracy, an upper bound (an *empirical*
one) on the true robust accuracy. Certificates (`certified_radius`) give the matching lower
bound, so that ``certified_accuracy <= true robust accuracy <= attack robust accuracy``.

* FGSM (Goodfellow, Shlens & Szegedy 2015): one step of length $\varepsilon$ along the sign of
  the gradient of the cross-entropy ($\ell_\infty$), or along the normalised gradient ($\ell_2$).
* PGD (Madry et al. 2018): ``steps`` steps of length ``step_size`` (default
  $2.5\varepsilon/\text{steps}$) from a uniformly random start in the ball, each followed by the
  projection onto the ball and the clip to the box, repeated from ``restarts`` random starts.
  Its default loss is the margin loss $\max_{j \ne y} f_j - f_y$ (Carlini & Wagner 2017),
  which does not saturate as the cross-entropy does. Every iterate is checked, so the attack
  reports the first misclassified point it finds, not only its last iterate.

Clipping to the box after projecting onto the ball keeps the point in the ball: the box holds
$x$, and the Euclidean projection onto a convex set holding $x$ moves no point away from $x$
(for $\ell_\infty$ the clip is coordinate-wise and obviously stays in the ball).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genbounds.core._checks import (
    check_choice,
    check_float_array,
    check_key,
    check_labels,
    check_positive,
    check_same_length,
)
from genbounds.losses._margins import margins_core

NORMS = ("l2", "linf")
LOSSES = ("margin", "ce")


@dataclasses.dataclass(frozen=True)
class AttackResult:
    """The outcome of an attack at one radius.

    Attributes:
      eps: the radius of the ball searched.
      norm: ``"l2"`` or ``"linf"``.
      robust: bool array (n,): True where no visited point was misclassified (clean
        misclassification counts as not robust).
      x_adv: the visited point of smallest margin for each example (an adversarial example
        where ``robust`` is False), shape of ``X``.
      margins: the margins at ``x_adv``.
    """

    eps: float
    norm: str
    robust: np.ndarray
    x_adv: np.ndarray
    margins: np.ndarray

    @property
    def robust_accuracy(self) -> float:
        """The fraction of examples the attack did not break."""
        return float(np.mean(self.robust))


def _flat_norm(v: jax.Array) -> jax.Array:
    axes = tuple(range(1, v.ndim))
    return jnp.sqrt(jnp.sum(v * v, axis=axes, keepdims=True))


def _project(x: jax.Array, x0: jax.Array, eps: jax.Array, norm: str, lo, hi) -> jax.Array:
    d = x - x0
    if norm == "linf":
        d = jnp.clip(d, -eps, eps)
    else:
        n = _flat_norm(d)
        d = d * jnp.minimum(1.0, eps / jnp.maximum(n, 1e-30))
    x = x0 + d
    if lo is not None:
        x = jnp.clip(x, lo, hi)
    return x


def _random_start(key, x0, eps, norm):
    if norm == "linf":
        return x0 + jax.random.uniform(key, x0.shape, x0.dtype, -1.0, 1.0) * eps
    k1, k2 = jax.random.split(key)
    g = jax.random.normal(k1, x0.shape, x0.dtype)
    g = g / jnp.maximum(_flat_norm(g), 1e-30)
    dim = math.prod(x0.shape[1:])
    u = jax.random.uniform(k2, (x0.shape[0],) + (1,) * (x0.ndim - 1), x0.dtype)
    return x0 + g * eps * u ** (1.0 / dim)  # uniform in the l2 ball


@partial(jax.jit, static_argnames=("apply_fn", "norm", "steps", "restarts", "loss",
                                   "random_start", "boxed"))
def _attack(apply_fn, params, X, y, eps, step_size, key, lo, hi, *, norm, steps, restarts, loss,
            random_start, boxed):
    lo = lo if boxed else None
    hi = hi if boxed else None
    eps = eps.astype(X.dtype)
    step_size = step_size.astype(X.dtype)

    def nonfinite(logits):  # per example: any NaN/inf logit (its margin would be no number)
        lg = logits.reshape(logits.shape[0], -1)
        return jnp.logical_not(jnp.all(jnp.isfinite(lg), axis=1)).astype(jnp.int32)

    def objective(x):
        logits = apply_fn(params, x)
        m = margins_core(logits, y)
        if loss == "margin":
            obj = -m
        else:
            lg = logits.astype(jnp.float32)
            if lg.ndim == 1 or lg.shape[1] == 1:  # binary score s: logits (0, s)
                s = lg.reshape(-1)
                lg = jnp.stack([jnp.zeros_like(s), s], axis=1)
            obj = optax.softmax_cross_entropy_with_integer_labels(lg, y)
        return jnp.sum(obj), (m, nonfinite(logits))

    grad = jax.grad(objective, has_aux=True)
    clean_logits = apply_fn(params, X)
    clean = margins_core(clean_logits, y)

    def one_run(k):
        x = _project(_random_start(k, X, eps, norm), X, eps, norm, lo, hi) if random_start else X

        def step(carry, _):
            x, best_x, best_m, bad = carry
            g, (m, b) = grad(x)
            bad = bad + b
            better = m < best_m
            best_x = jnp.where(better.reshape((-1,) + (1,) * (X.ndim - 1)), x, best_x)
            best_m = jnp.minimum(m, best_m)
            if norm == "linf":
                move = jnp.sign(g)
            else:
                move = g / jnp.maximum(_flat_norm(g), 1e-30)
            x = _project(x + step_size * move, X, eps, norm, lo, hi)
            return (x, best_x, best_m, bad), None

        init = (x, X, jnp.full(X.shape[0], jnp.inf, clean.dtype),
                jnp.zeros(X.shape[0], jnp.int32))
        (x, best_x, best_m, bad), _ = jax.lax.scan(step, init, None, length=steps)
        logits = apply_fn(params, x)
        m = margins_core(logits, y)
        better = m < best_m
        best_x = jnp.where(better.reshape((-1,) + (1,) * (X.ndim - 1)), x, best_x)
        return best_x, jnp.minimum(m, best_m), bad + nonfinite(logits)

    best_x, best_m, bad = X, clean, nonfinite(clean_logits)
    for k in jax.random.split(key, restarts):
        bx, bm, bb = one_run(k)
        better = bm < best_m
        best_x = jnp.where(better.reshape((-1,) + (1,) * (X.ndim - 1)), bx, best_x)
        best_m = jnp.minimum(bm, best_m)
        bad = bad + bb
    # Per example: the evaluated points (clean, every iterate of every run) with non-finite
    # logits; the caller refuses any (a NaN margin is neither robust nor broken).
    return best_x, best_m, bad


def _check_box(box: Any) -> tuple[float, float] | None:
    if box is None:
        return None
    try:
        lo, hi = (float(v) for v in box)
    except (TypeError, ValueError):
        raise TypeError(f"box must be None or a pair (lo, hi) of numbers, got {box!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"box must be a pair (lo, hi) of finite numbers with lo < hi, got {box!r}")
    return lo, hi


def _check_eps(eps: Any) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"eps must be a number or a 1-D sequence of numbers >= 0, got {eps!r}")
    return arr


def _check_in_range(X: jax.Array, eps: float, alpha: float, box: Any) -> None:
    """The attack's points must be numbers of X's dtype: |x| + eps (and a step) must stay below
    the dtype's largest finite value (eps = 1e39 on float32 inputs would make them inf)."""
    info = jnp.finfo(X.dtype)
    big = float(np.max(np.abs(np.asarray(X, np.float64))))
    reach = big + 2.0 * eps + 2.0 * alpha
    if not reach < float(info.max) / 2:
        raise ValueError(
            f"eps must keep the perturbed inputs finite in X's dtype {X.dtype}: |X| up to "
            f"{big:.4g} plus eps={eps:g} (and steps of {alpha:g}) overflows its largest value "
            f"{float(info.max):.4g}" + ("" if box is None else
                                         "; the points are clipped to the box only after the step"))


def check_attack_outputs(apply_fn: Any, params: Any, X: jax.Array, y: np.ndarray,
                         caller: str) -> int:
    """``apply_fn(params, X)`` must give logits (n,), (n, 1) or (n, K) (checked by shape, no
    computation) and every label must be a class of them; returns K (2 for one output)."""
    n = int(X.shape[0])
    try:
        out = jax.eval_shape(apply_fn, params, X)
    except Exception as e:  # noqa: BLE001 - re-raised naming the arguments
        raise TypeError(f"{caller}: apply_fn(params, X) failed on X of shape {tuple(X.shape)} "
                        f"and dtype {X.dtype}: {e}") from e
    shape = tuple(getattr(out, "shape", ()))
    if not (len(shape) in (1, 2) and shape[0] == n):
        raise ValueError(f"{caller}: apply_fn(params, X) must return logits of shape (n,), "
                         f"(n, 1) or (n, K) with n = {n}, got shape {shape}")
    k = 2 if len(shape) == 1 or shape[1] == 1 else shape[1]
    if int(np.max(y)) >= k:
        raise ValueError(f"y must hold labels in [0, {k}) for the {k} classes of apply_fn's "
                         f"logits {shape}, got labels up to {int(np.max(y))}")
    return k


def _check_int(x: Any, name: str, minimum: int) -> int:
    if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {x!r}")
    return int(x)


def pgd(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Callable[[Any, Any], Any],
    eps: float,
    norm: str = "linf",
    steps: int = 40,
    step_size: float | None = None,
    restarts: int = 1,
    loss: str = "margin",
    box: tuple[float, float] | None = None,
    random_start: bool = True,
    key: jax.Array | None = None,
    batch_size: int = 1024,
) -> AttackResult:
    r"""Projected gradient descent (Madry et al. 2018) on the ball $\|x' - x\|_p \le \varepsilon$.

    Each of ``restarts`` runs starts at a uniformly random point of the ball (or at $x$ with
    ``random_start=False``) and takes ``steps`` steps
    $x \leftarrow \Pi(x + \alpha\, s(\nabla_x \ell))$ with $s$ the sign ($\ell_\infty$) or the
    normalisation to unit $\ell_2$ norm ($\ell_2$), $\alpha$ = ``step_size`` and $\Pi$ the
    projection onto the ball followed by the clip to ``box``. Every iterate is checked.

    Args:
      params: the network's parameters.
      X: inputs, shape (n, ...).
      y: integer labels (n,).
      apply_fn: ``apply_fn(params, X) -> logits`` (n, k) (or binary scores (n,)); a jax function.
      eps: the radius, >= 0.
      norm: ``"linf"`` or ``"l2"``.
      steps: gradient steps per run, >= 1.
      step_size: $\alpha$; default $2.5\varepsilon$ / ``steps``.
      restarts: random starts, >= 1.
      loss: ``"margin"`` ($\max_{j\ne y} f_j - f_y$) or ``"ce"`` (cross-entropy).
      box: ``(lo, hi)``: the attack stays in $[lo, hi]^d$ (the data's range, e.g. (0, 1) for
        images), or None.
      random_start: start at a random point of the ball.
      key: PRNG key of the random starts (default ``jax.random.key(0)``).
      batch_size: examples per jitted call (the last batch is padded, so one shape compiles).

    Returns:
      An `AttackResult`.

    Raises:
      ValueError, TypeError: bad arguments (named).

    Examples:
      >>> import numpy as np
      >>> w = np.array([[1.0, -1.0]]); X = np.array([[0.3], [-0.2]]); y = np.array([0, 1])
      >>> r = pgd(w, X=X, y=y, apply_fn=lambda p, x: x @ p, eps=0.25, norm="linf", steps=5)
      >>> r.robust.tolist()
      [True, False]

    References:
      Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
      Adversarial Attacks", ICLR 2018, arXiv:1706.06083. Carlini & Wagner, "Towards Evaluating
      the Robustness of Neural Networks", IEEE S&P 2017, arXiv:1608.04644 (margin loss).
    """
    eps_arr = _check_eps(eps)
    if eps_arr.size != 1:
        raise ValueError(f"eps must be one number here (robust_accuracy takes a grid), got {eps!r}")
    eps_f = float(eps_arr[0])
    return _run(apply_fn, params, X, y, eps_f, norm=norm, steps=steps, step_size=step_size,
                restarts=restarts, loss=loss, box=box, random_start=random_start, key=key,
                batch_size=batch_size)


def _run(apply_fn, params, X, y, eps, *, norm, steps, step_size, restarts, loss, box,
         random_start, key, batch_size, caller="pgd") -> AttackResult:
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable, got {type(apply_fn).__name__}")
    check_choice(norm, "norm", NORMS)
    check_choice(loss, "loss", LOSSES)
    steps = _check_int(steps, "steps", 1)
    restarts = _check_int(restarts, "restarts", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    box_ = _check_box(box)
    X = check_float_array(X, "X")
    y = check_labels(y, "y")
    n = check_same_length(X, y, "X", "y")
    if X.ndim < 2:
        raise ValueError(f"X must have a batch axis first, shape (n, ...), got shape {X.shape}")
    if box_ is not None and (np.min(X) < box_[0] or np.max(X) > box_[1]):
        raise ValueError(f"X has values in [{np.min(X):.4g}, {np.max(X):.4g}], outside "
                         f"box={box_}; the box must hold the clean inputs")
    alpha = 2.5 * eps / steps if step_size is None else check_positive(step_size, "step_size")
    key = jax.random.key(0) if key is None else check_key(key)
    Xj = jnp.asarray(X)
    if not jnp.issubdtype(Xj.dtype, jnp.floating):
        Xj = Xj.astype(jnp.float32)
    dtype = Xj.dtype
    _check_in_range(Xj, eps, alpha, box_)
    check_attack_outputs(apply_fn, params, Xj, y, caller)
    yj = jnp.asarray(y, jnp.int32)
    lo, hi = (0.0, 1.0) if box_ is None else box_
    size = min(batch_size, n)
    xs, ms, bad = [], [], 0
    for i, start in enumerate(range(0, n, size)):
        xb, yb = Xj[start:start + size], yj[start:start + size]
        real = xb.shape[0]
        if real < size:  # pad with copies of the first example, dropped below
            xb = jnp.concatenate([xb, jnp.repeat(xb[:1], size - real, axis=0)])
            yb = jnp.concatenate([yb, jnp.repeat(yb[:1], size - real, axis=0)])
        bx, bm, bb = _attack(apply_fn, params, xb, yb, jnp.asarray(eps), jnp.asarray(alpha),
                         jax.random.fold_in(key, i), jnp.asarray(lo, dtype),
                         jnp.asarray(hi, dtype), norm=norm, steps=steps, restarts=restarts,
                         loss=loss, random_start=bool(random_start) and eps > 0,
                         boxed=box_ is not None)
        xs.append(np.asarray(bx)[:real])
        ms.append(np.asarray(bm, np.float64)[:real])
        bad += int(np.sum(np.asarray(bb, np.int64)[:real]))
    if bad:
        total = n * (1 + restarts * (steps + 1))
        raise ValueError(
            f"{caller}: apply_fn returned NaN or infinite logits at {bad} of the {total} points "
            f"the attack evaluated (eps={eps:g}); a non-finite margin is neither robust nor "
            "broken, so the robust accuracy would be wrong (check the network and its "
            "numerical range at inputs this far from X)")
    m = np.concatenate(ms)
    return AttackResult(eps=eps, norm=norm, robust=m > 0.0, x_adv=np.concatenate(xs), margins=m)


def fgsm(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Callable[[Any, Any], Any],
    eps: float,
    norm: str = "linf",
    box: tuple[float, float] | None = None,
    batch_size: int = 1024,
) -> AttackResult:
    r"""The fast gradient (sign) method: one step of length $\varepsilon$ on the cross-entropy.

    $x' = \mathrm{clip}(x + \varepsilon\,\mathrm{sign}\nabla_x \mathrm{CE})$ ($\ell_\infty$,
    Goodfellow et al. 2015) or $x + \varepsilon \nabla_x\mathrm{CE} / \|\nabla_x\mathrm{CE}\|_2$
    ($\ell_2$ "fast gradient method"); the clean point and the step are both checked.
    Arguments as in `pgd`.

    References:
      Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR
      2015, arXiv:1412.6572.
    """
    e = _check_eps(eps)
    if e.size != 1:
        raise ValueError(f"eps must be one number here (robust_accuracy takes a grid), got {eps!r}")
    return _run(apply_fn, params, X, y, float(e[0]), norm=norm, steps=1,
                step_size=float(e[0]) if e[0] > 0 else None, restarts=1, loss="ce", box=box,
                random_start=False, key=None, batch_size=batch_size, caller="fgsm")


def robust_accuracy(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Callable[[Any, Any], Any],
    eps: Sequence[float],
    norm: str = "linf",
    attack: str = "pgd",
    key: jax.Array | None = None,
    **options: Any,
) -> np.ndarray:
    r"""The attack's robust accuracy at each radius of a grid (an upper bound on the true one).

    At radius 0 it is the clean accuracy. The same random starts (``key``) serve every radius.

    Args:
      params, X, y, apply_fn: as in `pgd`.
      eps: the grid of radii (each >= 0).
      norm: ``"linf"`` or ``"l2"``.
      attack: ``"pgd"`` or ``"fgsm"``.
      key: PRNG key (pgd).
      **options: passed to `pgd` (``steps``, ``restarts``, ``step_size``, ``loss``, ``box``,
        ``batch_size``) or `fgsm` (``box``, ``batch_size``).

    Returns:
      A float64 array of the robust accuracy at each radius of ``eps``.
    """
    check_choice(attack, "attack", ("pgd", "fgsm"))
    grid = _check_eps(eps)
    out = []
    for e in grid:
        if attack == "pgd":
            r = pgd(params, X=X, y=y, apply_fn=apply_fn, eps=float(e), norm=norm, key=key, **options)
        else:
            r = fgsm(params, X=X, y=y, apply_fn=apply_fn, eps=float(e), norm=norm, **options)
        out.append(r.robust_accuracy)
    return np.asarray(out, np.float64)
