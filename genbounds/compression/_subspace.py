"""Random subspaces of parameter space and training in them (Li et al. 2018; Lotfi et al. 2022).

The network's flat parameter vector is $\\theta = \\theta_0 + P z$ with $z \\in \\mathbb{R}^d$,
$d \\ll D$, and $P \\in \\mathbb{R}^{D \\times d}$ a random matrix regenerated from an integer seed
(so it costs no bits in a code: the decoder regenerates it). Two projectors:

* ``"dense"``: i.i.d. $N(0, 1/D)$ entries, $D d$ numbers (small networks);
* ``"sparse"``: each of the $D$ rows holds `nnz` entries $\\pm\\sqrt{d/(D\\,\\mathrm{nnz})}$ in
  uniformly drawn columns (Li, Hastie & Church's very sparse projections): $O(D\\,\\mathrm{nnz} + d)$
  memory, $P z$ a gather and a sum.

Both have $\\mathbb{E}\\|P z\\|^2 = \\|z\\|^2$. ``"identity"`` ($d = D$, $P = I$) trains every
parameter through the same loop (the prior network of the data-dependent bound).

Training (`run_epoch`) minimises the mean cross-entropy of ``apply_fn(unravel(θ0 + P decode(s)))``
over the trainable state `s` with optax, one jitted `lax.scan` per epoch over a random permutation;
`decode` is the identity for continuous training and the straight-through quantiser of
`_quantise.py` for the centroid fine-tune.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from genbounds.core._dtypes import standard_promotion
from genbounds.losses._losses import cross_entropy, zero_one

KINDS = ("auto", "dense", "sparse", "identity")
# "auto" takes the dense projector while D*d float32 numbers stay under 64 MiB.
DENSE_LIMIT = 1 << 24


@partial(jax.tree_util.register_dataclass, data_fields=("matrix", "index", "weight"),
         meta_fields=("kind", "num_params", "dim", "seed"))
@dataclasses.dataclass(frozen=True)
class Projector:
    """A random linear map $P: \\mathbb{R}^d \\to \\mathbb{R}^D$ regenerated from `seed`.

    Attributes:
      kind: ``"dense"``, ``"sparse"`` or ``"identity"``.
      num_params: D, the network's number of parameters.
      dim: d, the subspace dimension.
      seed: the integer the matrix was drawn from.
      matrix: the dense (D, d) matrix, or None.
      index, weight: the sparse rows' (D, nnz) column indices and values, or None.
    """

    kind: str
    num_params: int
    dim: int
    seed: int
    matrix: Any = None
    index: Any = None
    weight: Any = None

    def __call__(self, z: jax.Array) -> jax.Array:
        """$P z$, a (D,) vector."""
        if self.kind == "identity":
            return z
        if self.kind == "dense":
            return jnp.dot(self.matrix, z, precision=jax.lax.Precision.HIGHEST)
        return jnp.sum(self.weight * z[self.index], axis=-1)


def make_projector(num_params: int, dim: int, *, seed: int = 0, kind: str = "auto",
                   nnz: int = 8) -> Projector:
    """The projector of `kind` from `seed` (float32); see the module docstring.

    Args:
      num_params: D >= 1.
      dim: d >= 1 (d = D for ``"identity"``).
      seed: integer >= 0; the same seed gives the same matrix.
      kind: ``"auto"`` (dense while D*d <= 2**24, else sparse), ``"dense"``, ``"sparse"``,
        ``"identity"``.
      nnz: non-zeros per row of the sparse projector, >= 1.

    Examples:
      >>> P = make_projector(100, 5, kind="sparse", seed=1)
      >>> P(jnp.ones(5, jnp.float32)).shape
      (100,)
    """
    D, d = int(num_params), int(dim)
    if kind == "auto":
        kind = "dense" if D * d <= DENSE_LIMIT else "sparse"
    key = jax.random.key(int(seed))
    if kind == "identity":
        if d != D:
            raise ValueError(f"the identity projector needs dim == num_params, got {d} != {D}")
        return Projector("identity", D, d, int(seed))
    if kind == "dense":
        m = jax.random.normal(key, (D, d), jnp.float32) / jnp.float32(np.sqrt(D))
        return Projector("dense", D, d, int(seed), matrix=m)
    if kind == "sparse":
        s = int(nnz)
        ki, ks = jax.random.split(key)
        index = jax.random.randint(ki, (D, s), 0, d, jnp.int32)
        sign = jnp.where(jax.random.bernoulli(ks, 0.5, (D, s)), 1.0, -1.0).astype(jnp.float32)
        return Projector("sparse", D, d, int(seed), index=index,
                         weight=sign * jnp.float32(np.sqrt(d / (D * s))))
    raise ValueError(f"projector must be one of {KINDS}, got {kind!r}")


@dataclasses.dataclass(frozen=True)
class SubspaceLoop:
    """The static part of a training loop in a subspace (hashable; compared by value).

    Attributes:
      apply_fn: ``apply_fn(params, X) -> logits``.
      unravel: flat vector -> parameter tree (hashable, `Unravel`).
      decode: trainable state -> z (a module-level function: stable identity).
      optimiser: ``("adam", lr)``, ``("adam", lr, steps)`` (the learning rate decays from lr to
        0 along a cosine over `steps` steps; Loshchilov & Hutter 2017) or
        ``("sgd", lr, momentum)``.
      batch_size: examples per step.
    """

    apply_fn: Callable
    unravel: Callable
    decode: Callable
    optimiser: tuple
    batch_size: int


def identity(state: Any) -> Any:
    """The decode of continuous training: the state is z."""
    return state


def optimiser(spec: tuple) -> optax.GradientTransformation:
    """The optax optimiser named by ``("adam", lr)``, ``("adam", lr, steps)`` (cosine decay to 0
    over `steps` steps) or ``("sgd", lr, momentum)``."""
    if spec[0] == "adam":
        if len(spec) > 2 and spec[2] > 0:
            return optax.adam(optax.cosine_decay_schedule(spec[1], int(spec[2])))
        return optax.adam(spec[1])
    return optax.sgd(spec[1], momentum=spec[2])


def init_opt(loop: SubspaceLoop, state: Any) -> Any:
    """The optimiser's state for `state`."""
    return optimiser(loop.optimiser).init(state)


def network_params(loop: SubspaceLoop, projector: Projector, origin: jax.Array, z: jax.Array):
    """The parameter tree $\\theta_0 + P z$."""
    return loop.unravel(origin + projector(z))


@partial(jax.jit, static_argnums=0)
def run_epoch(loop: SubspaceLoop, state, opt_state, projector: Projector, origin, X, y, key):
    """One epoch (``m // batch_size`` Adam/SGD steps over a random permutation) of the mean
    cross-entropy of $\\theta_0 + P\\,\\mathrm{decode}(s)$; returns the new state, optimiser
    state and the epoch's mean loss."""
    tx = optimiser(loop.optimiser)
    m = X.shape[0]
    batch = min(loop.batch_size, m)
    steps = m // batch
    perm = jax.random.permutation(key, m)[: steps * batch].reshape(steps, batch)

    def loss(s, Xb, yb):
        logits = loop.apply_fn(network_params(loop, projector, origin, loop.decode(s)), Xb)
        return jnp.mean(cross_entropy(logits, yb))

    grad = jax.value_and_grad(loss)

    def step(carry, idx):
        s, o = carry
        f, g = grad(s, X[idx], y[idx])
        with standard_promotion():  # optax's Adam bias correction: float ** int32
            updates, o = tx.update(g, o, s)
        return (optax.apply_updates(s, updates), o), f

    (state, opt_state), losses = jax.lax.scan(step, (state, opt_state), perm)
    return state, opt_state, jnp.mean(losses)


@partial(jax.jit, static_argnums=(0, 1))
def _errors(apply_fn, unravel, theta, X, y):
    return jnp.sum(zero_one(apply_fn(unravel(theta), X), y))


def error_rate(apply_fn: Callable, unravel: Callable, theta: jax.Array, X: Any, y: Any,
               *, chunk: int = 4096) -> float:
    """The 0-1 error (margin <= 0 counts as an error) of the network with flat parameters
    `theta` on (X, y), evaluated in chunks of `chunk` examples; a float."""
    X, y = jnp.asarray(X), jnp.asarray(y)
    m = int(X.shape[0])
    wrong = 0.0
    for a in range(0, m, chunk):
        wrong += float(_errors(apply_fn, unravel, theta, X[a:a + chunk], y[a:a + chunk]))
    return wrong / m


def train(loop: SubspaceLoop, state: Any, projector: Projector, origin: jax.Array, X: Any, y: Any,
          *, epochs: int, key: jax.Array, callback: Callable | None = None) -> tuple[Any, list]:
    """`epochs` calls of `run_epoch`; returns the final state and the per-epoch mean losses.

    `callback(epoch, loss)` is called after each epoch when given.
    """
    X, y = jnp.asarray(X), jnp.asarray(y)
    opt_state = init_opt(loop, state)
    history = []
    for e, k in enumerate(jax.random.split(key, epochs)):
        state, opt_state, f = run_epoch(loop, state, opt_state, projector, origin, X, y, k)
        history.append(float(f))
        if callback is not None:
            callback(e, history[-1])
    return state, history


def fisher_z(apply_fn: Callable, unravel: Callable, projector: Projector, origin: jax.Array,
             z: jax.Array, X: Any, y: Any, *, chunk: int = 256) -> np.ndarray:
    r"""The empirical Fisher matrix of the cross-entropy in z on (X, y),
    $\frac1m\sum_i g_i g_i^\top$ with $g_i = \nabla_z \ell(\theta_0 + P z; x_i, y_i)$
    (per-example gradients, `chunk` examples at a time); (d, d) float64 numpy."""
    def loss1(zz, xi, yi):
        logits = apply_fn(unravel(origin + projector(zz)), xi[None])
        return jnp.mean(cross_entropy(logits, yi[None]))

    grads = _per_example(loss1)
    X, y = jnp.asarray(X), jnp.asarray(y)
    m, d = int(X.shape[0]), int(z.shape[0])
    H = np.zeros((d, d))
    for a in range(0, m, chunk):
        G = np.asarray(grads(z, X[a:a + chunk], y[a:a + chunk]), np.float64)
        H += G.T @ G
    return H / m


def _per_example(loss1: Callable) -> Callable:
    return jax.jit(jax.vmap(jax.grad(loss1), in_axes=(None, 0, 0)))
