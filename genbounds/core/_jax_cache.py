"""JAX's persistent compilation cache, on by default in a per-user cache directory.

A jitted kernel compiled once (0.1-1 s each on CPU) is written to disk and loaded by the next
process instead of being compiled again. `enable_persistent_cache` runs when genbounds is
imported and changes nothing the user has chosen:

- it does nothing when ``GENBOUNDS_JAX_CACHE`` is ``0``, ``false``, ``no`` or ``off`` (the
  opt-out), or when a compilation cache directory is already set (``jax_compilation_cache_dir``
  in ``jax.config`` or the ``JAX_COMPILATION_CACHE_DIR`` environment variable);
- otherwise it sets the directory to ``$GENBOUNDS_JAX_CACHE_DIR`` if given, else
  ``$XDG_CACHE_HOME/genbounds/jax`` (``~/.cache/genbounds/jax`` by default), and lowers JAX's
  minimum compile time for an entry to be written from 1 s to 0.1 s (most kernels here compile
  in less than a second) unless that setting was changed from JAX's default (1 s) or
  ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` is set.

The cache directory then holds every program the process compiles, the user's own included
(JAX has one cache per process). JAX treats the cache as trusted code: keep it in a directory
only you can write to. See docs/benchmarks.md.
"""

from __future__ import annotations

import os

_OFF = ("0", "false", "no", "off")
_MIN_COMPILE_SECS = 0.1


def default_cache_dir() -> str:
    """``$GENBOUNDS_JAX_CACHE_DIR``, else ``$XDG_CACHE_HOME/genbounds/jax`` (~/.cache/...)."""
    explicit = os.environ.get("GENBOUNDS_JAX_CACHE_DIR")
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "genbounds", "jax")


def enable_persistent_cache() -> str | None:
    """Turns on JAX's persistent compilation cache unless opted out or already configured.

    Returns:
      The directory now in use by genbounds, or None when it left the setting alone (opt-out,
      a directory the user set, or a directory that cannot be created).
    """
    if os.environ.get("GENBOUNDS_JAX_CACHE", "1").strip().lower() in _OFF:
        return None
    import jax

    if jax.config.jax_compilation_cache_dir or os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return None  # the user's own cache settings win
    path = default_cache_dir()
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return None  # read-only home, etc.: run without a persistent cache
    jax.config.update("jax_compilation_cache_dir", path)
    if ("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ
            and jax.config.jax_persistent_cache_min_compile_time_secs == 1.0):  # JAX's default
        jax.config.update("jax_persistent_cache_min_compile_time_secs", _MIN_COMPILE_SECS)
    return path
