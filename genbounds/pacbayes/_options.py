"""Option bundles of the trained PAC-Bayes bounds, with the papers' defaults.

Dziugaite & Roy (2017) and Pérez-Ortiz et al. (2021) each have a dozen hyper-parameters beside
the data: how the prior is learnt, how the posterior is trained, how the certificate counts its
Monte-Carlo networks. Each group is one small frozen dataclass here, passed as one argument
(``prior=PriorTraining(epochs=50)``). The earlier flat keywords (``prior_epochs=50``) keep
working: `bundle_keywords` maps them into the bundles, and any other name is refused by the
function, naming it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Certificate:
    """How a certificate estimates the stochastic network's error: N networks drawn from Q,
    bounded by the sample-convergence bound at $\\delta'$ (Langford & Caruana 2002).

    Attributes:
      num_mc_samples: N, the networks drawn from Q; None: the function's default (10 000 in
        `dziugaite_roy`, 1 000 in `perez_ortiz` and `risk_certificate`; both papers draw
        150 000: Dziugaite & Roy 2017, §4; Pérez-Ortiz et al. 2021, §5).
      delta_prime: $\\delta'$, the failure probability of the sample-convergence bound; 0.01 as in
        Dziugaite & Roy 2017, Section 4.4, and Pérez-Ortiz et al. 2021 (``DELTA_TEST``).
      mc_subset: evaluate each network on its own `mc_subset` examples drawn uniformly with
        replacement (unbiased; the bound still counts N trials, the networks); None: all.
      mc_batch: networks evaluated together (default: 1 on CPU, 64 on an accelerator).

    References:
      Dziugaite & Roy, UAI 2017, arXiv:1703.11008; Pérez-Ortiz, Rivasplata, Shawe-Taylor &
      Szepesvári, JMLR 22(227), 2021, arXiv:2007.12911; Langford & Caruana, NIPS 2002.
    """

    num_mc_samples: int | None = None
    delta_prime: float = 0.01
    mc_subset: int | None = None
    mc_batch: int | None = None


@dataclasses.dataclass(frozen=True)
class DziugaiteRoyTraining:
    """How `dziugaite_roy` optimises its posterior and prior variance (Adam on the Pinsker
    surrogate of Dziugaite & Roy 2017, §3.1; docs/bounds/dziugaite_roy.md).

    Attributes:
      steps: Adam steps, rounded up to a multiple of `chunk`; 20 000 (a reduced run: the paper
        optimises for longer).
      batch_size: minibatch of the surrogate loss; 100.
      lr: Adam learning rate; 3e-3.
      init_log_prior_variance: starting $\\ln\\lambda$; -6, the prior std $e^{-3}$ of the
        authors' code (gkdziugaite/pacbayes-opt).
      init_std_scale: posterior std at start = scale * |w|; 1 (the authors' code uses 2).
      chunk: steps per jitted call (progress granularity); 1000.
      dtype: dtype of the optimisation; float32, also under x64 (the certificate is float64).

    References:
      Dziugaite & Roy, Computing Nonvacuous Generalization Bounds for Deep (Stochastic) Neural
      Networks with Many More Parameters than Training Data, UAI 2017, arXiv:1703.11008.
    """

    steps: int = 20_000
    batch_size: int = 100
    lr: float = 3e-3
    init_log_prior_variance: float = -6.0
    init_std_scale: float = 1.0
    chunk: int = 1000
    dtype: Any = jnp.float32


@dataclasses.dataclass(frozen=True)
class PriorTraining:
    """How `perez_ortiz` learns the prior mean, and on which examples (Pérez-Ortiz et al.
    2021, §4 and their code mperezortiz/PBB).

    Attributes:
      fraction: the share of the training set that forms the prior set, in [0, 1); 0.5 as in
        the paper's MNIST runs (``perc_prior``). 0 keeps the data-free prior at the
        initialisation. Used by `perez_ortiz`; `learn_prior` takes the prior set itself.
      split_seed: seed of the random prior/bound split; 0. Used by `perez_ortiz`.
      objective: ``"erm"`` (SGD on the cross-entropy) or a PAC-Bayes objective of
        `pac_bayes_objective` against the data-free prior; ``"erm"``.
      epochs: the most SGD epochs; 300 (with early stopping, ERM usually stops well before).
      lr: learning rate; 0.03 (SGD with momentum 0.9 trains the digits MLPs and CNNs of
        docs/bounds/risk_certificates.md to their held-out optimum within the epoch budget;
        the earlier 0.01 for 20 epochs left a digits CNN at 75% test error).
      momentum: SGD momentum; 0.9 (the paper: 0.95-0.99).
      batch_size: minibatch; 64.
      p_min: floor of the bounded cross-entropy of a PAC-Bayes prior objective; 1e-5 (``PMIN``
        in the authors' ``running_example.py``).
      holdout: the share of the *prior set* held out for early stopping (ERM only), in [0, 1);
        0.2. The prior is fitted on the rest; after every epoch its 0-1 error (ties broken by
        the cross-entropy) on the held-out part is measured, and the parameters of the best
        epoch are kept. Both parts belong to the prior set, so the prior stays independent of
        the bound set. 0: train all `epochs`, no held-out part.
      patience: stop after this many epochs without a better held-out error; 30.
      weak_error: a prior net whose held-out 0-1 error (training error on the prior set when
        ``holdout=0``) exceeds this gets a note in the result: the certificate cannot be much
        better than the prior; 0.2.

    References:
      Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári, Tighter risk certificates for neural
      networks, JMLR 22(227), 2021, arXiv:2007.12911.
    """

    fraction: float = 0.5
    split_seed: int = 0
    objective: str = "erm"
    epochs: int = 300
    lr: float = 0.03
    momentum: float = 0.9
    batch_size: int = 64
    p_min: float = 1e-5
    holdout: float = 0.2
    patience: int = 30
    weak_error: float = 0.2


@dataclasses.dataclass(frozen=True)
class PosteriorTraining:
    """How `train_posterior` (and `perez_ortiz`) trains the Gaussian posterior: SGD with momentum
    on a PAC-Bayes objective (Pérez-Ortiz et al. 2021, §3).

    Attributes:
      objective: ``"quad"`` ($f_{quad}$, the paper's), ``"lambda"``, ``"classic"`` or
        ``"dziugaite_roy"``; ``"quad"``.
      epochs: SGD epochs; 20.
      lr: learning rate; 0.001 (the paper: 0.001-0.005).
      momentum: SGD momentum; 0.95 (the paper: 0.95-0.99).
      batch_size: minibatch; 128.
      p_min: floor of the bounded cross-entropy; 1e-5 (``PMIN`` in the authors'
        ``running_example.py``).
      kl_penalty: multiplies the KL inside the objective; 1 for the paper's certificates.

    References:
      Pérez-Ortiz, Rivasplata, Shawe-Taylor & Szepesvári, Tighter risk certificates for neural
      networks, JMLR 22(227), 2021, arXiv:2007.12911.
    """

    objective: str = "quad"
    epochs: int = 20
    lr: float = 0.001
    momentum: float = 0.95
    batch_size: int = 128
    p_min: float = 1e-5
    kl_penalty: float = 1.0


@dataclasses.dataclass(frozen=True, eq=False)
class HeldOut:
    """Held-out data on which `perez_ortiz` reports (does not certify) the test errors of the
    stochastic net, of its mean and of the prior net.

    Attributes:
      X, y: the test set.
      num_mc_samples: networks of the Monte-Carlo stochastic test error; 200.
      mc_subset: examples per network (uniform with replacement); None: all.
    """

    X: Any
    y: Any
    num_mc_samples: int = 200
    mc_subset: int | None = None


# The defaults of the functions' bundle arguments (instances are immutable, so shared).
CERTIFICATE = Certificate()
DZIUGAITE_ROY_TRAINING = DziugaiteRoyTraining()
PRIOR_TRAINING = PriorTraining()
POSTERIOR_TRAINING = PosteriorTraining()


def bundle_keywords(**routes: Any) -> Callable[[Callable], Callable]:
    """Lets a function that takes option bundles accept the earlier flat keywords.

    ``routes[arg]`` maps each earlier keyword to the field of the bundle argument `arg` it sets
    (``{"prior_epochs": "epochs"}``; a keyword may appear in several routes), or is a function
    ``(bundle, {keyword: value}) -> bundle`` marked by `keyword_route` for a bundle built
    otherwise. Keywords set on top
    of the bundle passed (or the default one). The wrapped function keeps its signature; a name
    that is neither its parameter nor an earlier keyword is refused by it, named.
    """

    def wrap(fn: Callable) -> Callable:
        params = inspect.signature(fn).parameters
        known = set()
        for route in routes.values():
            known |= set(route if isinstance(route, dict) else route.keywords)
        clash = known & set(params)
        if clash:  # pragma: no cover - a programming error in the routes
            raise TypeError(f"{fn.__name__}: earlier keywords {sorted(clash)} are parameters")

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            earlier = {k: v for k, v in kwargs.items() if k in known}
            for k in earlier:
                del kwargs[k]
            for arg, route in routes.items():
                table = route if isinstance(route, dict) else route.keywords
                # a keyword may set fields of several bundles (perez_ortiz's batch_size)
                moved = {k: v for k, v in earlier.items() if k in table}
                if not moved:
                    continue
                bundle = kwargs.get(arg, params[arg].default)
                if isinstance(route, dict) and not dataclasses.is_dataclass(bundle):
                    raise TypeError(f"{arg} must be an option bundle, got {type(bundle).__name__}")
                if isinstance(route, dict):
                    kwargs[arg] = dataclasses.replace(
                        bundle, **{route[k]: v for k, v in moved.items()})
                else:
                    kwargs[arg] = route(bundle, moved)
            return fn(*args, **kwargs)

        return call

    return wrap


def keyword_route(*keywords: str) -> Callable[[Callable], Callable]:
    """Marks a function ``(bundle, {keyword: value}) -> bundle`` as the route of `keywords`."""

    def mark(f: Callable) -> Callable:
        f.keywords = frozenset(keywords)
        return f

    return mark


def check_bundle(value: Any, cls: type, name: str) -> Any:
    """`value` must be a `cls` instance (an option bundle); returns it."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")
    return value
