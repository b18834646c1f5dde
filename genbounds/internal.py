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

# --- measures ---

# --- adversarial ---

# --- harness and command line ---
# Resolved on first use (PEP 562): a test of the bound code that imports this namespace does
# not import the harness (flax, optax, the data sets, the command line).
_HARNESS = {
    # genbounds.data: the source modules whose checksums, mirrors and caches tests replace
    "data_mnist": ("genbounds.data._mnist", None),
    "data_mnist1d": ("genbounds.data._mnist1d", None),
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
}


def __getattr__(name: str):
    if name not in _HARNESS:
        raise AttributeError(f"module 'genbounds.internal' has no attribute {name!r}")
    import importlib

    module, attr = _HARNESS[name]
    found = importlib.import_module(module)
    return found if attr is None else getattr(found, attr)
