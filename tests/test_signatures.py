"""One calling convention for every bound and measure of the public namespace.

Every public function that takes a network or data does so the same way: the parameters (or
a posterior, or the parameters a method starts from) are the only positional argument, and
the data ``X``, ``y`` and the function ``apply_fn`` are keyword-only. Every default ``delta``
is 0.05, except where a paper fixes another value and the docstring says so.
"""

from __future__ import annotations

import inspect

import pytest

import genbounds

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)

# Functions that take a network or data but whose positional argument is not named "params",
# with the names they take positionally (the object the call is about).
POSITIONAL_EXCEPTIONS = {
    "stochastic_error": ("posterior",),
    "majority_vote_error": ("posterior",),
    "dziugaite_roy_certificate": ("posterior",),
    "risk_certificate": ("posterior",),
    "perez_ortiz": ("init_params",),  # trains prior and posterior from the initialisation
    "learn_prior": ("init_params",),
    "train_posterior": ("prior_mean",),
    "empirical_stability": ("train_fn", "loss_fn"),  # measures a training algorithm
    "rademacher": ("hypotheses", "X"),  # a class, not a network: X is its sample
    "split_data": ("X", "y"),  # splits data; takes no network
    "margins": ("logits", "y"),  # kernels on outputs, not on a network
    "bounded_cross_entropy": ("logits", "y"),
    "margin_loss": ("values", "margin"),
    "ramp_loss": ("values", "margin"),
    # a kernel on a loss closure, in the order of jax.jvp(f, primals, tangents); no data
    "hessian_vector_product": ("loss_fn", "params", "v"),
}

# Functions whose default delta is not 0.05, and the paper their docstring names for it.
DELTA_EXCEPTIONS = {
    "dziugaite_roy": (0.025, "Dziugaite & Roy 2017"),
    "dziugaite_roy_certificate": (0.025, "Dziugaite & Roy 2017"),
    "dziugaite_roy_from_terms": (0.025, "Dziugaite & Roy 2017"),
    "perez_ortiz": (0.025, "Pérez-Ortiz et al. 2021"),
    "risk_certificate": (0.025, "Pérez-Ortiz et al. 2021"),
    "train_posterior": (0.025, "Pérez-Ortiz et al. 2021"),
    "pac_bayes_objective": (0.025, "Pérez-Ortiz et al. 2021"),
    "optimal_lambda": (0.025, "Pérez-Ortiz et al. 2021"),
    "majority_vote_tandem": (0.025, "Pérez-Ortiz et al. 2021"),
}

DATA_NAMES = ("X", "y", "apply_fn", "X_test", "y_test", "init_params")


# The namespaces of the core: the first tier and the sub-namespaces (the harness apart).
NAMESPACES = ("adversarial", "bounds", "core", "linalg", "losses", "measures", "network",
              "pacbayes")


def _public_functions():
    out = {}
    for ns in (genbounds, *(getattr(genbounds, pkg) for pkg in NAMESPACES)):
        for name in dir(ns):
            obj = getattr(ns, name)
            if not name.startswith("_") and inspect.isfunction(obj):
                assert out.get(name, obj) is obj, name  # one name, one function
                out[name] = obj
    return out


FUNCTIONS = _public_functions()
# Those that take a network or data: any of the names above, or params.
NETWORK_FUNCTIONS = sorted(
    n for n, f in FUNCTIONS.items()
    if set(inspect.signature(f).parameters) & {"X", "y", "apply_fn", "params"}
)


def test_the_lists_name_public_functions():
    # an exception for a function that was renamed or removed would silently test nothing
    assert set(POSITIONAL_EXCEPTIONS) <= set(FUNCTIONS)
    assert set(DELTA_EXCEPTIONS) <= set(FUNCTIONS)
    # the functions this convention is about are all found
    for name in ("spectral", "pac_bayes", "golowich", "dziugaite_roy", "sharpness",
                 "pac_bayes_flatness", "magnitude_aware_flatness", "worst_case_sharpness",
                 "magnitude_aware_sharpness", "hessian_top_eigenvalues", "hessian_trace",
                 "laplace_evidence", "report", "lipschitz", "perez_ortiz"):
        assert name in NETWORK_FUNCTIONS


@pytest.mark.parametrize("name", NETWORK_FUNCTIONS)
def test_params_is_the_only_positional_argument(name):
    sig = inspect.signature(FUNCTIONS[name])
    positional = tuple(p.name for p in sig.parameters.values() if p.kind in POSITIONAL)
    assert positional == POSITIONAL_EXCEPTIONS.get(name, ("params",)), (name, str(sig))


@pytest.mark.parametrize("name", NETWORK_FUNCTIONS)
def test_data_and_network_are_keyword_only(name):
    sig = inspect.signature(FUNCTIONS[name])
    allowed = POSITIONAL_EXCEPTIONS.get(name, ())
    for p in sig.parameters.values():
        if p.name in DATA_NAMES and p.name not in allowed:
            assert p.kind is inspect.Parameter.KEYWORD_ONLY, (name, p.name, str(sig))


def test_data_names_are_x_and_y():
    # no X_train / X_bound / X_prior spellings: the data a bound is about is X, y
    for name, f in FUNCTIONS.items():
        for p in inspect.signature(f).parameters:
            assert p not in ("X_train", "y_train", "X_bound", "y_bound", "X_prior", "y_prior"), (
                name, p)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_delta_defaults(name):
    f = FUNCTIONS[name]
    p = inspect.signature(f).parameters.get("delta")
    if p is None or p.default is inspect.Parameter.empty:
        assert name not in DELTA_EXCEPTIONS
        return
    if name in DELTA_EXCEPTIONS:
        value, paper = DELTA_EXCEPTIONS[name]
        assert p.default == value
        doc = " ".join(inspect.getdoc(f).split())
        assert paper in doc and str(value) in doc, name
    else:
        assert p.default == 0.05, (name, p.default)


def test_an_old_keyword_is_refused_by_name():
    # report takes its options by name (the fields of ReportOptions): any other name is refused
    # by name before anything runs; the old spelling alone misses the data X, y.
    with pytest.raises(TypeError, match="X_train"):
        genbounds.report({}, X=None, y=None, X_train=None, y_train=None, apply_fn=None)
    with pytest.raises(TypeError, match="'X' and 'y'"):
        genbounds.report({}, X_train=None, y_train=None, apply_fn=None)
    with pytest.raises(TypeError, match="positional"):
        genbounds.sharpness(lambda p, x: x, {}, None, None)
