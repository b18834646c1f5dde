"""Names below the public surface that the test suite checks directly.

Not part of the API: these names may change without notice. Tests import them from here, not
from private modules, so that moving code between files does not touch the tests.
"""

# ruff: noqa: F401

# --- core ---

# --- linalg ---

# --- network ---

# --- bounds ---

# --- pacbayes ---
from genbounds.pacbayes._gaussian import isotropic_kl
from genbounds.pacbayes._kl import kl_inverse64, kl_inverse_core
from genbounds.pacbayes._montecarlo import mc_batch_size, mc_errors
from genbounds.pacbayes._posterior import run_posterior_loop

# --- measures ---

# --- adversarial ---

# --- harness and command line ---
