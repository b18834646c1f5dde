"""The traced network on a CNN: trace time, report time, conv-norm slack.

Trains the harness CNN on digits (8x8 images), traces it, times `report` (first and second
call, in the same process), and prints for every convolution the certified operator norm, the
exact one (SVD of the explicit operator, float64) and their ratio, beside the reshaped-kernel
norm other code uses. Run: ``python benchmarks/bench_traced_cnn.py``.
"""

from __future__ import annotations

import time

import jax

jax.config.update("jax_enable_x64", True)

import genbounds  # noqa: E402
from genbounds.data import load  # noqa: E402
from genbounds.train import train  # noqa: E402


def main() -> None:
    data = load("digits", seed=0, flatten=False)
    t = time.perf_counter()
    net = train({"kind": "cnn", "depth": 2, "width": 16}, data, lr=3e-3, max_epochs=60,
                seed=0)
    print(f"trained the harness CNN in {time.perf_counter() - t:.1f} s ({net.epochs} epochs, "
          f"train accuracy {net.train_acc:.3f})")
    x = data.X_train[:16]
    t = time.perf_counter()
    traced = genbounds.Network.trace(net.apply_fn, net.params, x)
    print(f"Network.trace: {time.perf_counter() - t:.3f} s, max relative error of the "
          f"re-evaluation {traced.max_error:.2e}")
    print(traced)
    kw = dict(X=data.X_train, y=data.y_train, apply_fn=net.apply_fn,
              init_params=net.init_params, X_test=data.X_test, y_test=data.y_test)
    for which in ("first", "second"):
        t = time.perf_counter()
        rep = genbounds.report(net.params, **kw)
        print(f"report ({which} call): {time.perf_counter() - t:.2f} s")
    print(rep.to_markdown())
    cert = genbounds.spectral_norms(traced)
    exact = genbounds.spectral_norms(traced, method="exact")
    print("\n| conv layer | certified | exact | certified/exact | reshaped kernel |")
    print("|---|---|---|---|---|")
    for layer in traced.layers:
        if layer.kind != "conv":
            continue
        c, e = cert[layer.path], exact[layer.path]
        r = genbounds.reshaped_kernel_norm(layer.kernel)
        print(f"| {layer.path} {layer.conv.strides} {layer.conv.input_shape} | {c:.6g} | "
              f"{e:.6g} | {c / e:.4f} | {r:.6g} |")


if __name__ == "__main__":
    main()
