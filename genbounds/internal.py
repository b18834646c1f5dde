"""Names below the public surface that the test suite checks directly.

Not part of the API: these names may change without notice. Tests import them from here, not
from private modules, so that moving code between files does not touch the tests.
"""

# ruff: noqa: F401, I001

# --- core ---
from genbounds.core._checks import check_key as check_key
from genbounds.core._checks import check_result as check_result

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
from genbounds.linalg._hessian import full_hessian as full_hessian
from genbounds.losses._losses import zero_one as zero_one

# --- network ---
from genbounds.network._activations import _FIXED as KNOWN_ACTIVATIONS
from genbounds.network._activations import _GRID as ACTIVATION_GRID
from genbounds.network._activations import identify as identify

# --- bounds ---
from genbounds.bounds._vc import _counting_bound as vc_counting_bound

# --- pacbayes ---

# --- measures ---
from genbounds.measures import _flatness as flatness_module  # its `_search`, swapped by a benchmark
from genbounds.measures._flatness import _chunk_counts as flatness_chunk_counts
from genbounds.measures._flatness import _sigma_prime as sigma_prime
from genbounds.measures._hypotheses import _project as project_to_ball
from genbounds.measures._kendall import _tau as kendall_tau_weighted
from genbounds.measures._kendall import bootstrap_kendall as bootstrap_kendall
from genbounds.measures._rademacher import _batched as rademacher_batched
from genbounds.measures._rademacher import _single as rademacher_single

# --- adversarial ---
from genbounds.adversarial._attacks import _attack as attack_kernel

# --- harness and command line ---
from genbounds.data._mnist import mnist_pool as mnist_pool
from genbounds.train._train import _power_start as power_start
from genbounds.train._train import _power_step as power_step
