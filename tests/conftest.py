"""Strict test settings: warnings are errors (pyproject), float64 available everywhere.

The references in the tests are float64 numpy/scipy; x64 is switched on for the whole run so that
the library's float64 paths are exercised. Tests of float32 behaviour cast explicitly.
"""

import os

# Hermetic runs: no persistent compilation cache written to ~/.cache (tests/test_jax_cache.py
# checks the default in subprocesses).
os.environ.setdefault("GENBOUNDS_JAX_CACHE", "0")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
# Implicit promotion between float32 and float64 arrays hides precision bugs (a float64 reference
# silently computed from float32 intermediates); the library casts explicitly, so the tests run
# with strict promotion and any implicit mix is an error.
jax.config.update("jax_numpy_dtype_promotion", "strict")


def _memory_maps() -> int:
    try:
        with open("/proc/self/maps") as f:
            return sum(1 for _ in f)
    except OSError:  # not Linux
        return 0


@pytest.fixture(autouse=True, scope="module")
def _bounded_compiled_code():
    """XLA keeps the machine code of every program it compiled mapped while JAX caches the
    program (about three memory maps each). The whole suite compiles tens of thousands of
    programs in one process, past Linux's default limit of 65 530 maps per process
    (``vm.max_map_count``), where the next compilation fails inside LLVM with a segmentation
    fault. After a test module, once past 25 000 maps, JAX's caches are cleared (measured: 6 718
    maps to 965 after two modules); the programs compile again when next used."""
    yield
    if _memory_maps() > 25_000:
        import gc

        jax.clear_caches()
        gc.collect()
