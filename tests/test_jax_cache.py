"""The persistent compilation cache genbounds turns on at import: where, when, and the opt-outs.

Each case runs in a fresh interpreter (the cache is process-wide JAX configuration).
"""

import json
import os
import subprocess
import sys

PROBE = """
import json, os, jax, jax.numpy as jnp
import genbounds
jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()
d = jax.config.jax_compilation_cache_dir
print(json.dumps({"dir": d, "min_secs": jax.config.jax_persistent_cache_min_compile_time_secs,
                  "files": sorted(os.listdir(d)) if d and os.path.isdir(d) else []}))
"""


def _probe(tmp_path, **env):
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("GENBOUNDS_JAX_CACHE", "JAX_COMPILATION_CACHE_DIR",
                                 "JAX_PERSISTENT_CACHE"))}
    base.update(XDG_CACHE_HOME=str(tmp_path / "xdg"), JAX_PLATFORMS="cpu", **env)
    out = subprocess.run([sys.executable, "-c", PROBE], env=base, capture_output=True,
                         text=True, timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cache_on_by_default_in_xdg_cache_home(tmp_path):
    # JAX's own setting (0 s) is respected; only its default of 1 s would be lowered to 0.1 s.
    r = _probe(tmp_path, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    assert r["dir"] == str(tmp_path / "xdg" / "genbounds" / "jax")
    assert r["min_secs"] == 0.0
    assert any(f.startswith("jit_") for f in r["files"])  # the program above was written
    r = _probe(tmp_path)
    assert r["min_secs"] == 0.1


def test_opt_out_and_user_settings_win(tmp_path):
    r = _probe(tmp_path, GENBOUNDS_JAX_CACHE="0")
    assert r["dir"] is None and r["min_secs"] == 1.0
    assert not (tmp_path / "xdg").exists()
    mine = tmp_path / "mine"
    r = _probe(tmp_path, JAX_COMPILATION_CACHE_DIR=str(mine))
    assert r["dir"] == str(mine) and r["min_secs"] == 1.0
    r = _probe(tmp_path, GENBOUNDS_JAX_CACHE_DIR=str(tmp_path / "chosen"))
    assert r["dir"] == str(tmp_path / "chosen")
