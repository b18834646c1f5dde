"""Names below the public surface that the test suite checks directly.

Not part of the API: these names may change without notice. Tests import them from here, not
from private modules, so that moving code between files does not touch the tests.
"""

# ruff: noqa: F401

# --- core ---

# --- linalg ---
from genbounds.linalg._certificate import _certificate_failure, _certificate_plan, _log_chebyshev
from genbounds.linalg._conv import circular_conv_singular_values
from genbounds.linalg._conv_geometry import _conv_map
from genbounds.linalg._conv_kernels import _explicit_svd, _grid_max_sigma, _lanczos
from genbounds.linalg._krylov import (
    _exact_kernel,
    _gkl_kernel,
    _gram_kernel,
    _power_kernel,
    _ritz_host,
    _round_up,
    bucket,
)
from genbounds.linalg._method import as_norm_method

# --- network ---
from genbounds.network._activations import _FIXED as KNOWN_ACTIVATIONS
from genbounds.network._activations import _GRID as ACTIVATION_GRID
from genbounds.network._activations import identify as identify

# --- bounds ---

# --- pacbayes ---

# --- measures ---

# --- adversarial ---

# --- harness and command line ---
