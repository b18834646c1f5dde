"""The one jitted loop that trains a Gaussian posterior on a PAC-Bayes objective.

Dziugaite & Roy (2017, §3.1) and Pérez-Ortiz et al. (2021, §3) train the same thing: a diagonal
Gaussian $Q = N(\\mu, \\mathrm{diag}(\\sigma^2))$ over the flat parameter vector, by stochastic
gradient steps on an objective that adds a minibatch loss of one sampled network
$w = \\mu + \\sigma \\odot \\varepsilon$, $\\varepsilon \\sim N(0, I)$ (the reparametrisation trick),
to a penalty in $KL(Q \\| P)$ (`isotropic_kl`). What differs is told by a `PosteriorLoop`, a
hashable description passed to `run_posterior_loop` as a static argument:

* the objective (a module-level function of the bound's file) and what it carries from step to
  step (Pérez-Ortiz et al.'s $\\lambda$ of $f_\\lambda$; nothing for Dziugaite & Roy);
* the optimiser, by its hyper-parameters (``("adam", lr)``, ``("sgd", lr, momentum)``);
* the minibatches: `steps` batches drawn with replacement (Dziugaite & Roy) or, with
  ``steps=0``, one epoch of a random permutation (Pérez-Ortiz et al.).

Equal settings give equal loops, so repeated calls with the same network, data shapes and
hyper-parameters compile once; everything numeric that varies between calls (the state, the
prior, the data, the key, the objective's constants) is a traced argument.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax

from genbounds.core._dtypes import standard_promotion

from ._gaussian import Unravel


@dataclasses.dataclass(frozen=True)
class PosteriorLoop:
    """The static part of a posterior-training loop (hashable; compared by value).

    Attributes:
      apply_fn: ``apply_fn(params, X) -> logits``; pure JAX.
      unravel: flat vector -> parameter tree.
      objective: ``objective(loop, theta, carry, eps, Xb, yb, prior_mean, consts) -> (f, aux)``:
        the value to minimise and what the step records; a module-level function (stable
        identity).
      after_step: ``after_step(loop, carry, f, aux, consts) -> (carry, record)``: the carried
        value for the next step and the step's record (its mean over the call is returned).
      optimiser: ``("adam", lr)`` or ``("sgd", lr, momentum)``.
      batch_size: examples per step.
      steps: steps per call, minibatches drawn with replacement; 0: one epoch, ``m //
        batch_size`` steps over a random permutation.
      option: a static choice of the objective (e.g. which of Pérez-Ortiz et al.'s objectives).
    """

    apply_fn: Callable
    unravel: Unravel
    objective: Callable
    after_step: Callable
    optimiser: tuple
    batch_size: int
    steps: int = 0
    option: Hashable = None


def optimiser(spec: tuple) -> optax.GradientTransformation:
    """The optax optimiser named by ``("adam", lr)`` or ``("sgd", lr, momentum)``."""
    if spec[0] == "adam":
        return optax.adam(spec[1])
    if spec[0] == "sgd":
        return optax.sgd(spec[1], momentum=spec[2])
    raise ValueError(f"optimiser must be ('adam', lr) or ('sgd', lr, momentum), got {spec!r}")


def init_state(loop: PosteriorLoop, theta: Any, carry: Any = ()) -> tuple:
    """The loop's starting state: ``(theta, optimiser state, carry)``."""
    return theta, optimiser(loop.optimiser).init(theta), carry


@partial(jax.jit, static_argnums=0)
def run_posterior_loop(loop: PosteriorLoop, state, prior_mean, X, y, key, consts):
    """Runs the steps of one call of `loop` from `state`; returns the new state and the mean of
    each record over the steps.

    `state` is ``(theta, opt_state, carry)`` (`init_state`); `prior_mean` the flat prior mean,
    whose shape and dtype the noise $\\varepsilon$ takes; `consts` the objective's numbers.
    """
    tx = optimiser(loop.optimiser)
    m = X.shape[0]
    batch = loop.batch_size
    if loop.steps:
        # Dziugaite & Roy: each step splits its key into the noise's and the minibatch's.
        inputs = jax.random.split(key, loop.steps)

        def draw(k):
            ke, kb = jax.random.split(k)
            return ke, jax.random.randint(kb, (batch,), 0, m)
    else:
        # Pérez-Ortiz et al.: one epoch over a random permutation, one noise key per step.
        steps = m // batch
        k_perm, k_eps = jax.random.split(key)
        perm = jax.random.permutation(k_perm, m)[: steps * batch].reshape(steps, batch)
        inputs = (perm, jax.random.split(k_eps, steps))

        def draw(inp):
            idx, k = inp
            return k, idx

    grad_fn = jax.value_and_grad(partial(loop.objective, loop), has_aux=True)

    def step(state, inp):
        theta, opt_state, carry = state
        k, idx = draw(inp)
        eps = jax.random.normal(k, prior_mean.shape, prior_mean.dtype)
        (f, aux), g = grad_fn(theta, carry, eps, X[idx], y[idx], prior_mean, consts)
        with standard_promotion():  # optax's Adam bias correction: float ** int32
            updates, opt_state = tx.update(g, opt_state, theta)
        theta = optax.apply_updates(theta, updates)
        carry, record = loop.after_step(loop, carry, f, aux, consts)
        return (theta, opt_state, carry), record

    state, hist = jax.lax.scan(step, state, inputs)
    return state, jax.tree.map(jnp.mean, hist)
