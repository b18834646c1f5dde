"""Zero biases are no biases: golowich and pac_bayes bound a network whose biases are all zero
(or absent) as the bias-free network, against float64 references of Golowich et al.'s Theorem 1
and of Neyshabur et al.'s beta; a nonzero bias still augments."""

import math

import numpy as np
import pytest

from genbounds import golowich, pac_bayes


def net(rng, sizes, bias):
    """Flax layout; bias: None (absent), 'zero' or 'random'."""
    params = {}
    for j, (i, o) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layer = {"kernel": rng.standard_normal((i, o)) / math.sqrt(i)}
        if bias == "zero":
            layer["bias"] = np.zeros(o)
        elif bias == "random":
            layer["bias"] = rng.standard_normal(o)
        params[f"Dense_{j}"] = layer
    return params


def kernels(params):
    return [np.asarray(params[f"Dense_{j}"]["kernel"], np.float64) for j in range(len(params))]


def augmented(params):
    """[[W, b], [0, 1]] for hidden layers, [W; b] for the last (Flax (in, out) layout)."""
    out, L = [], len(params)
    for j in range(L):
        W = np.asarray(params[f"Dense_{j}"]["kernel"], np.float64)
        b = np.asarray(params[f"Dense_{j}"].get("bias", np.zeros(W.shape[1])), np.float64)
        A = np.vstack([W, b[None, :]])
        if j < L - 1:
            c = np.zeros((A.shape[0], 1))
            c[-1, 0] = 1.0
            A = np.hstack([A, c])
        out.append(A)
    return out


def theorem1(Ws, X):
    """Golowich, Rakhlin & Shamir (2018), Theorem 1: (1/m) prod ||W||_F (sqrt(2 ln2 d)+1) ||X||_F."""
    d = len(Ws)
    prod = np.prod([np.linalg.norm(W, "fro") for W in Ws])
    return prod * (math.sqrt(2 * math.log(2) * d) + 1) * np.linalg.norm(X) / len(X)


@pytest.mark.parametrize("bias", [None, "zero"])
def test_golowich_bias_free_matches_theorem_1(bias):
    rng = np.random.default_rng(0)
    p = net(rng, [6, 8, 8, 3], bias)
    X = rng.standard_normal((30, 6))
    got = golowich(p, X=X).complexity
    assert got == pytest.approx(theorem1(kernels(p), X), rel=1e-10)
    assert got == pytest.approx(golowich(net(np.random.default_rng(0), [6, 8, 8, 3], None),
                                         X=X).complexity, rel=1e-12)


def test_golowich_nonzero_bias_still_augments():
    rng = np.random.default_rng(1)
    p = net(rng, [6, 8, 3], "zero")
    p["Dense_1"]["bias"][0] = 0.5  # one nonzero bias anywhere: the augmented network
    X = rng.standard_normal((30, 6))
    Xa = np.hstack([X, np.ones((30, 1))])
    assert golowich(p, X=X).complexity == pytest.approx(theorem1(augmented(p), Xa), rel=1e-10)
    assert golowich(p, X=X).complexity > theorem1(kernels(p), X)


def _pac_bayes(p, X):
    logits = X
    for j, W in enumerate(kernels(p)):
        b = np.asarray(p[f"Dense_{j}"].get("bias", np.zeros(W.shape[1])))
        logits = logits @ W + b
        if j < len(p) - 1:
            logits = np.maximum(logits, 0.0)
    y = np.argmax(logits, axis=1)
    return pac_bayes(p, X=X, y=y, logits=logits, margin_quantile=0.1, method="exact",
                     input_bound=float(np.max(np.linalg.norm(X, axis=1))))


def test_pac_bayes_deep_bias_free_net_is_not_augmented():
    rng = np.random.default_rng(2)
    sizes = [4] + [4] * 30 + [3]
    p = net(rng, sizes, "zero")
    for j in range(len(p)):  # positive layers of spectral norm 0.5: beta = 0.5, no dead ReLU
        W = np.abs(p[f"Dense_{j}"]["kernel"])
        p[f"Dense_{j}"]["kernel"] = 0.5 * W / np.linalg.svd(W, compute_uv=False)[0]
    X = np.abs(rng.standard_normal((50, 4)))
    b = _pac_bayes(p, X)
    s = [np.linalg.svd(W, compute_uv=False)[0] for W in kernels(p)]
    assert b.terms["beta"] == pytest.approx(math.exp(np.mean(np.log(s))), rel=1e-9)
    assert b.terms["beta"] == pytest.approx(0.5, rel=1e-9)
    assert b.terms["width"] == 4  # h of the network itself, not of the augmented one
    absent = {k: {"kernel": v["kernel"]} for k, v in p.items()}
    assert _pac_bayes(absent, X).value == pytest.approx(b.value, rel=1e-12)
    # With a nonzero bias, the augmented layers carry the constant unit: norms >= 1.
    p["Dense_3"]["bias"][1] = 0.1
    aug = _pac_bayes(p, X)
    sa = [np.linalg.svd(A, compute_uv=False)[0] for A in augmented(p)]
    assert aug.terms["beta"] == pytest.approx(math.exp(np.mean(np.log(sa))), rel=1e-9)
    assert aug.terms["beta"] > 0.9  # against 0.5 for the bias-free network
