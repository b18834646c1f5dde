"""Recipes of the documentation, run as they are written on the page."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import genbounds

ROOT = Path(__file__).resolve().parent.parent


def _block_after(page: Path, heading: str) -> str:
    """The first ```python block after `heading` on `page`."""
    text = page.read_text()
    start = text.index(heading)
    m = re.compile(r"```python\n(.*?)```", re.S).search(text, start)
    assert m, heading
    return m.group(1)


def _nnx_recipe():
    """The page's nnx recipe run up to its report line: (namespace, report line, X)."""
    code = _block_after(ROOT / "docs" / "your_network.md", "## Flax nnx")
    assert "nnx.BatchNorm" in code and "model.eval()" in code
    head, tail = code.split("rep = genbounds.report")
    X = np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32)
    ns = {"genbounds": genbounds, "X": X}
    exec(head, ns)
    # y: the model's own predictions (as if it were trained: every margin positive)
    ns["y"] = np.asarray(np.argmax(np.asarray(ns["apply_fn"](ns["params"], X)), -1), np.int32)
    return ns, "rep = genbounds.report" + tail, X


def test_the_nnx_recipe_works_on_a_model_with_batchnorm():
    nnx = pytest.importorskip("flax.nnx")
    ns, _, X = _nnx_recipe()
    model, apply_fn, params = ns["model"], ns["apply_fn"], ns["params"]
    # the function the bounds are about is the model's, BatchNorm on its running statistics
    np.testing.assert_allclose(np.asarray(apply_fn(params, X)), np.asarray(model(X)),
                               rtol=1e-6, atol=1e-6)
    net = genbounds.Network.trace(apply_fn, params, X[:8])
    assert "2 linear maps" in str(net)  # BatchNorm folded into the first layer
    b = genbounds.spectral(params, apply_fn=apply_fn, X=X, y=ns["y"])
    assert np.isfinite(b.value) and b.value > 0.0
    # what the page says of the shorter recipe: it fails on a model with BatchNorm
    with pytest.raises(ValueError, match="Non-exhaustive"):
        nnx.split(model, nnx.Param)


@pytest.mark.slow
def test_the_nnx_recipe_as_written_gives_a_report():
    pytest.importorskip("flax.nnx")
    ns, line, _ = _nnx_recipe()
    exec(line, ns)
    rep = ns["rep"]
    assert rep.train_error == 0.0
    assert {"spectral", "pac_bayes", "golowich", "vc"} <= {b.name for b in rep.bounds}
    assert all(b.value > 0.0 and np.isfinite(b.value) for b in rep.bounds)
