"""Names below the public surface that the test suite checks directly.

Not part of the API: these names may change without notice. Tests import them from here, not
from private modules, so that moving code between files does not touch the tests.
"""

# ruff: noqa: F401

# --- core ---

# --- linalg ---

# --- network ---
from genbounds.network._activations import _FIXED as KNOWN_ACTIVATIONS
from genbounds.network._activations import _GRID as ACTIVATION_GRID
from genbounds.network._activations import identify as identify

# --- bounds ---

# --- pacbayes ---

# --- measures ---

# --- adversarial ---

# --- harness and command line ---
