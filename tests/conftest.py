"""Strict test settings: warnings are errors (pyproject), float64 available everywhere.

The references in the tests are float64 numpy/scipy; x64 is switched on for the whole run so that
the library's float64 paths are exercised. Tests of float32 behaviour cast explicitly.
"""

import os

# Hermetic runs: no persistent compilation cache written to ~/.cache (tests/test_jax_cache.py
# checks the default in subprocesses).
os.environ.setdefault("GENBOUNDS_JAX_CACHE", "0")

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")
