"""Names below the public surface that the test suite checks directly.

Not part of the API: these names may change without notice. Tests import them from here, not
from private modules, so that moving code between files does not touch the tests.
"""

# ruff: noqa: F401, I001

# --- core ---
from genbounds.core._checks import check_key as check_key
from genbounds.core._checks import check_result as check_result

# --- cmi ---
from genbounds.cmi import _supersample as cmi_supersample

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
from genbounds.network import _norms as network_norms_module  # its kernel entry, counted in tests
from genbounds.network._graph import eval_node as eval_node
from genbounds.network._path_lifting import lifting_structure as lifting_structure
from genbounds.network._elementwise import VAR as ELEMENTWISE_VAR
from genbounds.network._elementwise import analyse as analyse_elementwise
from genbounds.network._elementwise import relu as relu_activation

# --- bounds ---
from genbounds.bounds._spectral import _augmented as spectral_augmented
from genbounds.bounds._vc import _counting_bound as vc_counting_bound

# --- pacbayes ---
from genbounds.pacbayes._gaussian import isotropic_kl
from genbounds.pacbayes._gaussian import clamp_kl as clamp_kl
from genbounds.pacbayes._kl import kl_inverse64, kl_inverse_core
from genbounds.pacbayes._montecarlo import mc_batch_size, mc_errors
from genbounds.pacbayes._montecarlo import tandem_error as tandem_error
from genbounds.pacbayes._posterior import run_posterior_loop

# --- compression ---
from genbounds.compression._bound import CATONI_GRID as compression_catoni_grid
from genbounds.compression._subspace import optimiser as compression_optimiser
from genbounds.compression._subspace import fisher_z as compression_fisher_z
from genbounds.pacbayes._gaussian import Unravel as Unravel
from genbounds.pacbayes._gaussian import flatten as flatten_params

# --- measures ---
from genbounds.measures import _flatness as flatness_module  # its `_search`, swapped by a benchmark
from genbounds.measures._flatness import _chunk_counts as flatness_chunk_counts
from genbounds.measures._flatness import _sigma_prime as sigma_prime
from genbounds.measures._hypotheses import _project as project_to_ball
from genbounds.measures._kendall import _tau as kendall_tau_weighted
from genbounds.measures._kendall import bootstrap_kendall as bootstrap_kendall
from genbounds.measures._rademacher import _batched as rademacher_batched
from genbounds.measures._rademacher import _single as rademacher_single

# --- spectra ---
from genbounds.spectra._ks_scan import fit_many as ks_fit_many
from genbounds.spectra._powerlaw import _tail_log_sums as tail_log_sums
from genbounds.spectra._powerlaw import ks_scan as ks_scan
from genbounds.spectra._powerlaw import ks_scan_pruned as ks_scan_pruned

# --- adversarial ---
from genbounds.adversarial._attacks import _attack as attack_kernel

# --- harness and command line ---
# Resolved on first use (PEP 562): a test of the bound code that imports this namespace does
# not import the harness (flax, optax, the data sets, the command line).
_HARNESS = {
    # genbounds.data: the source modules whose checksums, mirrors and caches tests replace
    "data_mnist": ("genbounds.data._mnist", None),
    "data_mnist1d": ("genbounds.data._mnist1d", None),
    "mnist_pool": ("genbounds.data._mnist", "mnist_pool"),
    # genbounds.train
    "CHECKPOINT_MAGIC": ("genbounds.train._checkpoint", "MAGIC"),
    "lmt_power_step": ("genbounds.train._lipschitz_margin", "power_step"),
    "lmt_power_start": ("genbounds.train._lipschitz_margin", "power_start"),
    # genbounds.experiments
    "PARAMS_MAGIC": ("genbounds.experiments._common", "PARAMS_MAGIC"),
    "Progress": ("genbounds.experiments._progress", "Progress"),
    "sweep_table": ("genbounds.experiments._sweep", "sweep_table"),
    "sweep_figure": ("genbounds.experiments._sweep", "sweep_figure"),
    "box_of": ("genbounds.experiments._common", "box_of"),
    "robustness_crossing": ("genbounds.experiments._robustness", "crossing"),
    "train_binary_mlp": ("genbounds.experiments._dziugaite_roy", "train_mlp"),
    "STUDY_DEFAULT_GRID": ("genbounds.experiments._study", "DEFAULT_GRID"),
    "STUDY_FIXED": ("genbounds.experiments._study", "FIXED"),
    "study_grid_configs": ("genbounds.experiments._study", "grid_configs"),
    "study_net_id": ("genbounds.experiments._study", "net_id"),
    "study_parse_axis": ("genbounds.experiments._study", "parse_axis"),
    "study_score": ("genbounds.experiments._study", "score"),
    "study_table_markdown": ("genbounds.experiments._study", "table_markdown"),
    "study_net_key": ("genbounds.experiments._study", "net_key"),
    "study_settings": ("genbounds.experiments._study", "study_settings"),
    "keep_settings": ("genbounds.experiments._common", "keep_settings"),
    "file_sha256": ("genbounds.experiments._common", "file_sha256"),
}


def __getattr__(name: str):
    if name not in _HARNESS:
        raise AttributeError(f"module 'genbounds.internal' has no attribute {name!r}")
    import importlib

    module, attr = _HARNESS[name]
    found = importlib.import_module(module)
    return found if attr is None else getattr(found, attr)
