r"""Hypothesis classes for the Monte-Carlo Rademacher estimate: what `sup_h` means per draw.

A class turns one sign vector σ ∈ {±1}^n into the supremum over the class of the empirical
correlation $(1/n) \sum_i \sigma_i h(x_i)$. Three classes ship:

- `LinearBall`: linear functions in a norm ball; the supremum is a dual norm (closed form).
- `KernelBall`: the ball of an RKHS; the supremum is a quadratic form in the Gram matrix.
- `NetworkClass`: a neural network (Flax linen module or an init/apply pair); the supremum is
  approximated by training the network to correlate with σ, so each per-draw value is a LOWER
  estimate of the supremum.

Each class also states how far one $h(x_i)$ can reach, $b_i = \sup_h |h(x_i)|$: the bounded
differences that give the estimator's concentration (see `rademacher` and docs/rademacher_mc.md).

A user may subclass `HypothesisClass` for a class of their own: implement `prepare`, `sup`,
`value_bounds` and set `lower_estimate`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import check_choice, check_n, check_positive
from genbounds.core._dtypes import standard_promotion

_HIGHEST = jax.lax.Precision.HIGHEST


class HypothesisClass:
    r"""Base class of the hypothesis classes that `genbounds.rademacher` accepts.

    Subclasses are frozen dataclasses (hashable: they are static arguments of `jax.jit`) and
    implement:

    - ``prepare(X) -> state``: the pytree of arrays the per-draw supremum needs: at least the
      data under ``"X"``, and any numeric hyperparameter (e.g. the radius), so that changing it
      does not recompile. Runs once per call, outside the per-draw work. May raise on bad input.
    - ``sup(state, sigma, key) -> scalar``: $\sup_{h} (1/n) \sum_i \sigma_i h(x_i)$ for one sign
      vector ``sigma`` of shape (n,). Traced under `jit`/`vmap`/`shard_map`: no Python control
      flow on values. ``key`` is this draw's own PRNG key (for random initialisation).
    - ``value_bounds(X) -> np.ndarray``: $b_i \ge \sup_h |h(x_i)|$ for each point, shape (n,),
      float64. These bound the per-draw value's sensitivity and range.
    - ``lower_estimate``: True when ``sup`` only approximates the supremum from below.
    - ``loop_on_cpu``: True when a Python loop over draws beats `vmap` on CPU (strategy "auto").
    - ``per_draw_bytes(state) -> int``: rough working memory of one draw, for the default chunk.
    - ``trace_key() -> Hashable``: what the compiled per-draw program depends on besides
      ``state``; two instances with equal keys share compiled code. Default: the instance itself.
    """

    lower_estimate: bool = False
    loop_on_cpu: bool = False

    def prepare(self, X: jax.Array) -> Any:
        return {"X": X}

    def sup(self, state: Any, sigma: jax.Array, key: jax.Array) -> jax.Array:
        raise NotImplementedError

    def value_bounds(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def per_draw_bytes(self, state: Any) -> int:
        X = state["X"]
        return int(4 * (X.shape[0] + X.shape[1]) * X.dtype.itemsize)

    def trace_key(self) -> Any:
        return self


# --------------------------------------------------------------------------------------------
# Linear functions in a norm ball
# --------------------------------------------------------------------------------------------

_DUAL = {"l2": "l2", "l1": "linf", "linf": "l1"}


@dataclasses.dataclass(frozen=True)
class LinearBall(HypothesisClass):
    r"""Linear functions in a norm ball, $H = \{x \mapsto \langle w, x\rangle : ||w|| \le B\}$.

    The supremum over the ball is the dual norm (Hölder, attained), so per draw
    $\sup_h (1/n)\sum_i \sigma_i h(x_i) = (B/n)\,||X^\top \sigma||_*$ exactly:

    - ``norm="l2"``: $(B/n)||\sum_i \sigma_i x_i||_2$ (the dual norm of ℓ2);
    - ``norm="l1"``: $(B/n)||\sum_i \sigma_i x_i||_\infty$ (the ℓ∞ dual);
    - ``norm="linf"``: $(B/n)||\sum_i \sigma_i x_i||_1$.

    The Monte-Carlo estimate is therefore exact up to Monte-Carlo error. The reach of one point,
    $b_i = \sup_h |h(x_i)| = B ||x_i||_*$ (the dual norm of the point).

    Args:
      radius: $B > 0$, the radius of the ball.
      norm: the norm of the ball, ``"l2"``, ``"l1"`` or ``"linf"``.

    Raises:
      ValueError: radius not a finite number > 0, or unknown norm.

    Examples:
      >>> LinearBall(1.0, norm="l1")
      LinearBall(radius=1.0, norm='l1')
    """

    radius: float
    norm: str = "l2"

    def __post_init__(self):
        object.__setattr__(self, "radius", check_positive(self.radius, "radius"))
        check_choice(self.norm, "norm", tuple(_DUAL))

    def prepare(self, X):
        return {"X": X, "radius": jnp.asarray(self.radius, X.dtype)}

    def trace_key(self):
        return self.norm  # the radius is data (in the state): a new radius does not recompile

    def sup(self, state, sigma, key):
        X = state["X"]
        v = jnp.dot(sigma, X, precision=_HIGHEST)  # X^T σ, shape (d,)
        dual = _DUAL[self.norm]
        if dual == "l2":
            r = jnp.sqrt(jnp.sum(v * v))
        elif dual == "linf":
            r = jnp.max(jnp.abs(v))
        else:
            r = jnp.sum(jnp.abs(v))
        return state["radius"] * r / X.shape[0]

    def value_bounds(self, X):
        X = np.asarray(X, dtype=np.float64)
        dual = _DUAL[self.norm]
        if dual == "l2":
            r = np.linalg.norm(X, axis=1)
        elif dual == "linf":
            r = np.max(np.abs(X), axis=1)
        else:
            r = np.sum(np.abs(X), axis=1)
        return self.radius * r


# --------------------------------------------------------------------------------------------
# RKHS ball
# --------------------------------------------------------------------------------------------

_KERNELS = ("rbf", "laplace", "linear", "polynomial")


@functools.partial(jax.jit, static_argnums=0)
def _gram(kernel, X, Y, bandwidth, degree, coef0):
    """Gram matrix k(X_i, Y_j) for the named kernels, float in X's dtype."""
    if kernel == "linear":
        return jnp.dot(X, Y.T, precision=_HIGHEST)
    if kernel == "polynomial":
        return (jnp.dot(X, Y.T, precision=_HIGHEST) + coef0) ** degree
    sq = (
        jnp.sum(X * X, axis=1)[:, None]
        + jnp.sum(Y * Y, axis=1)[None, :]
        - 2.0 * jnp.dot(X, Y.T, precision=_HIGHEST)
    )
    sq = jnp.maximum(sq, 0.0)  # rounding can make ||x - y||^2 slightly negative near x = y
    if kernel == "rbf":
        return jnp.exp(-sq / (2.0 * bandwidth**2))
    return jnp.exp(-jnp.sqrt(sq) / bandwidth)  # laplace


@functools.partial(jax.jit, static_argnums=0)
def _gram_callable(k, X):
    return jax.vmap(lambda a: jax.vmap(lambda b: k(a, b))(X))(X)


@dataclasses.dataclass(frozen=True)
class KernelBall(HypothesisClass):
    r"""The ball of radius B of a reproducing-kernel Hilbert space, $\{f : ||f||_{\mathcal H} \le B\}$.

    By the reproducing property $\sum_i \sigma_i f(x_i) = \langle f, \sum_i \sigma_i k(x_i,\cdot)
    \rangle$, so by Cauchy-Schwarz (attained) the per-draw supremum is exactly
    $(B/n)\sqrt{\sigma^\top K \sigma}$ with the Gram matrix $K_{ij} = k(x_i, x_j)$, and
    $b_i = B\sqrt{k(x_i, x_i)}$. The Gram matrix is built once (n² memory).

    Kernels: ``"rbf"`` $\exp(-||x-y||^2/(2s^2))$, ``"laplace"`` $\exp(-||x-y||/s)$ (s =
    ``bandwidth``), ``"linear"`` $x\cdot y$ (then this is `LinearBall(B, "l2")`),
    ``"polynomial"`` $(x\cdot y + c)^p$ (p = ``degree``, c = ``coef0`` ≥ 0), or a callable
    ``k(x, y) -> scalar`` on two points of shape (d,), which must be a positive-semidefinite
    kernel (not checked).

    Args:
      radius: $B > 0$.
      kernel: a kernel name or a callable.
      bandwidth: $s > 0$ for "rbf" and "laplace".
      degree: integer $p \ge 1$ for "polynomial".
      coef0: $c \ge 0$ for "polynomial".

    Raises:
      ValueError: radius or bandwidth not > 0, unknown kernel name, bad degree or coef0.

    Examples:
      >>> KernelBall(2.0, kernel="rbf", bandwidth=0.5).radius
      2.0
    """

    radius: float
    kernel: str | Callable[[jax.Array, jax.Array], jax.Array] = "rbf"
    bandwidth: float = 1.0
    degree: int = 2
    coef0: float = 1.0

    def __post_init__(self):
        object.__setattr__(self, "radius", check_positive(self.radius, "radius"))
        object.__setattr__(self, "bandwidth", check_positive(self.bandwidth, "bandwidth"))
        object.__setattr__(self, "degree", check_n(self.degree, "degree"))
        object.__setattr__(self, "coef0", check_positive(self.coef0, "coef0", allow_zero=True))
        if not callable(self.kernel):
            check_choice(self.kernel, "kernel", _KERNELS)

    def _gram(self, X):
        if callable(self.kernel):
            return _gram_callable(self.kernel, X)
        return _gram(self.kernel, X, X, self.bandwidth, self.degree, self.coef0)

    def trace_key(self):
        return None  # everything numeric is in the state (the Gram matrix, the radius)

    def prepare(self, X):
        K = self._gram(X)
        if K.shape != (X.shape[0], X.shape[0]):
            raise ValueError(
                f"kernel must return one scalar per pair of points, got a Gram matrix of shape "
                f"{tuple(K.shape)} for {X.shape[0]} points"
            )
        return {"X": X, "K": K.astype(X.dtype), "radius": jnp.asarray(self.radius, X.dtype)}

    def sup(self, state, sigma, key):
        K = state["K"]
        q = jnp.dot(sigma, jnp.dot(K, sigma, precision=_HIGHEST), precision=_HIGHEST)
        # σᵀKσ >= 0 for a PSD kernel; rounding can leave a tiny negative for a near-singular K.
        return state["radius"] * jnp.sqrt(jnp.maximum(q, 0.0)) / K.shape[0]

    def value_bounds(self, X):
        X = jnp.asarray(X)
        if callable(self.kernel):
            diag = jax.vmap(lambda a: self.kernel(a, a))(X)
        elif self.kernel in ("rbf", "laplace"):
            diag = jnp.ones(X.shape[0])
        else:
            diag = jnp.diagonal(_gram(self.kernel, X, X, 1.0, self.degree, self.coef0))
        diag = np.asarray(diag, dtype=np.float64)
        if np.any(diag < 0) or not np.all(np.isfinite(diag)):
            raise ValueError(
                "kernel must satisfy k(x, x) >= 0 (a PSD kernel), got a negative value"
            )
        return self.radius * np.sqrt(diag)

    def per_draw_bytes(self, state):
        return int(4 * state["K"].shape[0] * state["K"].dtype.itemsize)


# --------------------------------------------------------------------------------------------
# Neural networks, supremum approximated by training
# --------------------------------------------------------------------------------------------

_OUTPUTS = ("tanh", "clip")
_CONSTRAINTS = ("frobenius", "spectral")
_LOSSES = ("auto", "logistic", "correlation")


def _project(params: Any, radius: float | None, norm: str) -> Any:
    """Projects every weight leaf of rank >= 2 onto the ball {W : ||W|| <= radius}.

    Frobenius: the Euclidean projection W * min(1, r/||W||_F). Spectral: the Euclidean
    (Frobenius-distance) projection onto the spectral-norm ball, which clips the singular values
    at r. A kernel of rank > 2 (a convolution) is treated as the matrix (fan_in, fan_out), its
    last axis being the outputs; for a convolution that is not the operator norm of the layer.
    Biases (rank <= 1) are left free.
    """
    if radius is None:
        return params

    def one(w):
        if jnp.ndim(w) < 2:
            return w
        if norm == "frobenius":
            f = jnp.sqrt(jnp.sum(jnp.square(w)))
            return w * jnp.minimum(1.0, radius / f).astype(w.dtype)  # r/0 = inf -> factor 1
        m = w.reshape(-1, w.shape[-1])
        u, s, vt = jnp.linalg.svd(m, full_matrices=False)
        return ((u * jnp.minimum(s, radius)) @ vt).reshape(w.shape).astype(w.dtype)

    return jax.tree.map(one, params)


@dataclasses.dataclass(frozen=True, eq=False)
class NetworkClass(HypothesisClass):
    r"""A neural network class whose supremum is approximated by training (a LOWER estimate).

    The class is $H = \{x \mapsto \phi(f_\theta(x))\}$ for the network $f_\theta$ with scalar
    output and a bounded output map $\phi$: ``output="tanh"`` gives $h = \tanh(f) \in (-1, 1)$,
    ``output="clip"`` gives $h = \mathrm{clip}(f, -1, 1) \in [-1, 1]$. So the per-draw
    correlation $(1/n)\sum_i \sigma_i h(x_i)$ lies in [-1, 1], and it is ≈ 1 when the network
    fits the random signs (Zhang et al. 2017), which makes the complexity ≈ 1 and any bound built
    on it vacuous. With ``norm_constraint=r`` the class is restricted to networks whose every
    weight matrix (parameter leaf of rank >= 2) has Frobenius (or spectral) norm <= r; biases are
    free. Every iterate is projected onto that set, so every iterate is a member of the class.

    For each draw, the network is freshly initialised from that draw's key (and projected) and
    trained for ``steps`` full-batch steps on the signs as labels; the per-draw value is the best
    correlation $(1/n)\sum_i \sigma_i h(x_i)$ over the iterates. The training objective is
    ``loss``: ``"logistic"``, $(1/n)\sum_i \ln(1 + e^{-\sigma_i f(x_i)})$, which keeps pushing a
    point whose output saturated on the wrong side (the correlation of $\tanh f$ has a vanishing
    gradient there and stalls); ``"correlation"``, $-(1/n)\sum_i \sigma_i h(x_i)$ itself, which
    finds larger values inside small balls where nothing saturates; ``"auto"`` (default) takes
    the first without and the second with a norm constraint. ``weight_decay`` λ adds
    $(\lambda/2)||\theta||^2$ to the objective: a training penalty only, it does not change the
    class. Training finds *a* member of the class, not the maximiser, so the value is a LOWER
    estimate of the supremum, and the Monte-Carlo mean estimates a lower bound of the empirical
    Rademacher complexity.

    Args:
      model: a Flax linen module (``model.init(key, x)`` / ``model.apply(variables, x)``; only
        the ``"params"`` collection is trained, other collections are kept at their initial
        values and must not need mutation), or a pair ``(init_fn, apply_fn)`` with
        ``init_fn(key, x) -> params`` and ``apply_fn(params, x) -> outputs``. Given a batch
        (m, d) the model must return shape (m,) or (m, 1).
      steps: training steps per draw, >= 1.
      learning_rate: step size of the default optimiser (Adam), > 0.
      optimizer: an optax ``GradientTransformation``; replaces Adam(learning_rate).
      norm_constraint: None (unconstrained) or r > 0, the radius of the per-layer ball.
      constraint_norm: ``"frobenius"`` or ``"spectral"``.
      weight_decay: λ >= 0.
      output: ``"tanh"`` or ``"clip"``.
      loss: ``"auto"``, ``"logistic"`` or ``"correlation"``.

    Raises:
      TypeError: model is neither a linen module nor an (init_fn, apply_fn) pair, or optimizer
        is not an optax transformation.
      ValueError: bad steps, learning rate, constraint, weight decay, output or loss.

    Examples:
      >>> import flax.linen as nn
      >>> class MLP(nn.Module):
      ...     @nn.compact
      ...     def __call__(self, x):
      ...         return nn.Dense(1)(nn.relu(nn.Dense(64)(x)))
      >>> H = NetworkClass(MLP(), steps=100, norm_constraint=1.0)
      >>> H.lower_estimate
      True

    References:
      Zhang, C., Bengio, S., Hardt, M., Recht, B. and Vinyals, O., "Understanding deep learning
      requires rethinking generalization", ICLR 2017, arXiv:1611.03530.
    """

    model: Any
    _: dataclasses.KW_ONLY
    steps: int = 300
    learning_rate: float = 1e-2
    optimizer: Any = None
    norm_constraint: float | None = None
    constraint_norm: str = "frobenius"
    weight_decay: float = 0.0
    output: str = "tanh"
    loss: str = "auto"

    lower_estimate = True
    loop_on_cpu = True

    def __post_init__(self):
        m = self.model
        linen = hasattr(m, "init") and hasattr(m, "apply") and callable(m.apply)
        pair = isinstance(m, tuple) and len(m) == 2 and all(callable(f) for f in m)
        if not (linen or pair):
            raise TypeError(
                "model must be a Flax linen module or a pair (init_fn, apply_fn), got "
                f"{type(m).__name__}"
            )
        object.__setattr__(self, "steps", check_n(self.steps, "steps"))
        check_positive(self.learning_rate, "learning_rate")
        if self.norm_constraint is not None:
            object.__setattr__(
                self, "norm_constraint", check_positive(self.norm_constraint, "norm_constraint")
            )
        check_choice(self.constraint_norm, "constraint_norm", _CONSTRAINTS)
        check_positive(self.weight_decay, "weight_decay", allow_zero=True)
        check_choice(self.output, "output", _OUTPUTS)
        check_choice(self.loss, "loss", _LOSSES)
        if self.optimizer is not None and not (
            hasattr(self.optimizer, "init") and hasattr(self.optimizer, "update")
        ):
            raise TypeError(
                "optimizer must be an optax GradientTransformation (with init and update), got "
                f"{type(self.optimizer).__name__}"
            )

    # -- the model as (init, apply) on the trainable parameters ------------------------------

    def _init(self, key, x):
        """Returns (trainable, fixed) parameter trees."""
        if isinstance(self.model, tuple):
            return self.model[0](key, x), None
        variables = self.model.init(key, x)
        variables = dict(variables)
        return variables.pop("params"), variables

    def _apply_raw(self, params, fixed, X):
        if isinstance(self.model, tuple):
            return self.model[1](params, X)
        return self.model.apply({**fixed, "params": params}, X)

    def _apply(self, params, fixed, X):
        return self._apply_raw(params, fixed, X).reshape(X.shape[0])

    def _tx(self):
        if self.optimizer is not None:
            return self.optimizer
        import optax  # the bound code does not need optax unless a network is trained

        return optax.adam(self.learning_rate)

    def prepare(self, X):
        shape = jax.eval_shape(lambda k: self._init(k, X[:1]), jax.random.key(0))
        out = jax.eval_shape(lambda p, f: self._apply_raw(p, f, X), *shape)
        if tuple(out.shape) not in ((X.shape[0],), (X.shape[0], 1)):
            raise ValueError(
                f"model must return one scalar per example, shape ({X.shape[0]},) or "
                f"({X.shape[0]}, 1), got {tuple(out.shape)}"
            )
        return {"X": X}

    def _loss(self):
        if self.loss != "auto":
            return self.loss
        return "logistic" if self.norm_constraint is None else "correlation"

    def _h(self, f):
        return jnp.tanh(f) if self.output == "tanh" else jnp.clip(f, -1.0, 1.0)

    def sup(self, state, sigma, key):
        X = state["X"]
        tx = self._tx()
        params, fixed = self._init(key, X[:1])
        params = _project(params, self.norm_constraint, self.constraint_norm)

        def corr(p):
            h = self._h(self._apply(p, fixed, X))
            return jnp.mean(sigma * h)

        def loss(p):
            f = self._apply(p, fixed, X)
            c = jnp.mean(sigma * self._h(f))
            if self._loss() == "logistic":
                # Fitting the signs as labels: the logistic loss does not vanish on a point whose
                # output saturates on the wrong side, unlike the correlation of tanh(f).
                objective = jnp.mean(jnp.logaddexp(0.0, -sigma * f))
            else:
                objective = -c
            if self.weight_decay > 0:
                sq = sum(jnp.sum(jnp.square(w)) for w in jax.tree.leaves(p))
                objective = objective + 0.5 * self.weight_decay * sq
            return objective, c

        def step(carry, _):
            p, opt_state, best = carry
            (_, c), g = jax.value_and_grad(loss, has_aux=True)(p)
            with standard_promotion():  # optax's Adam bias correction: float ** int32
                updates, opt_state = tx.update(g, opt_state, p)
            p = jax.tree.map(lambda a, u: (a + u).astype(a.dtype), p, updates)
            p = _project(p, self.norm_constraint, self.constraint_norm)
            return (p, opt_state, jnp.maximum(best, c)), None

        carry = (params, tx.init(params), corr(params))
        (params, _, best), _ = jax.lax.scan(step, carry, None, length=self.steps)
        # Every iterate is in the class, so the best correlation seen is a valid lower estimate.
        return jnp.maximum(best, corr(params))

    def value_bounds(self, X):
        return np.ones(np.shape(X)[0])

    def per_draw_bytes(self, state):
        # Parameters, gradients, two optimiser moments and updates, plus every intermediate of
        # one forward pass (read from its jaxpr on one example) times n, forward and backward.
        X = state["X"]
        params, fixed = jax.eval_shape(lambda k: self._init(k, X[:1]), jax.random.key(0))
        nbytes = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(params))
        jaxpr = jax.make_jaxpr(lambda p, f: self._apply_raw(p, f, X[:1]))(params, fixed)
        act = sum(
            int(np.prod(v.aval.shape)) * v.aval.dtype.itemsize
            for eqn in jaxpr.jaxpr.eqns
            for v in eqn.outvars
            if hasattr(v.aval, "shape")
        )
        return int(6 * nbytes + 3 * act * X.shape[0])

    def __repr__(self):
        m = self.model
        name = "(init_fn, apply_fn)" if isinstance(m, tuple) else type(m).__name__
        extra = (
            ""
            if self.norm_constraint is None
            else f", norm_constraint={self.norm_constraint}, constraint_norm={self.constraint_norm!r}"
        )
        return (
            f"NetworkClass({name}, steps={self.steps}, output={self.output!r}"
            f"{extra}, weight_decay={self.weight_decay})"
        )


def _check_hypotheses(h: Any) -> HypothesisClass:
    if not isinstance(h, HypothesisClass):
        raise TypeError(
            "hypotheses must be a genbounds hypothesis class (LinearBall, KernelBall, NetworkClass "
            f"or a HypothesisClass subclass), got {type(h).__name__}"
        )
    return h


__all__ = ["HypothesisClass", "KernelBall", "LinearBall", "NetworkClass"]
