"""Strict test settings: warnings are errors (pyproject), float64 available everywhere.

The references in the tests are float64 numpy/scipy; x64 is switched on for the whole run so that
the library's float64 paths are exercised. Tests of float32 behaviour cast explicitly.
"""

import jax

jax.config.update("jax_enable_x64", True)
