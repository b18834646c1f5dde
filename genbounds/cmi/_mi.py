"""The plug-in mutual information between the mask bit of each pair and a discrete variable.

For each supersample s and pair i, the K training runs give K draws of (U_i, V_i), U_i the mask
bit and V_i a discrete variable (the pair of predicted labels for f-CMI, the pair of losses for
e-CMI, the loss difference for ld-CMI). The plug-in estimate is the mutual information of their
empirical joint distribution,

$$\\hat I_i = \\sum_{v, u} \\hat p(v, u) \\ln \\frac{\\hat p(v, u)}{\\hat p(v)\\, \\hat p(u)}$$

(nats; marginals are the empirical ones, as in Harutyunyan et al.'s ``discrete_mi_est``). It is
the exact conditional mutual information when the K masks enumerate {0,1}^n, and a biased
estimate otherwise (its bias is about (|V| - 1)/(2K) for independent variables). Weights let
one call evaluate many bootstrap resamples of the masks at once.
"""

from __future__ import annotations

import numpy as np


def symbols(values: np.ndarray, *, axis_pairs: bool) -> tuple[np.ndarray, int]:
    """Maps a discrete variable to integer symbols 0..m-1 (shared across every pair).

    Args:
      values: array (..., K, n) of values, or (..., K, n, 2) with ``axis_pairs=True`` (the two
        elements of each pair, combined into one symbol).
      axis_pairs: whether the last axis holds the two elements of each pair.

    Returns:
      (symbols of shape (..., K, n), number of distinct symbols m).
    """
    v = np.asarray(values)
    if axis_pairs:
        flat = v.reshape(-1, 2)
        _, inv = np.unique(flat, axis=0, return_inverse=True)
        out = inv.reshape(v.shape[:-1])
    else:
        _, inv = np.unique(v.reshape(-1), return_inverse=True)
        out = inv.reshape(v.shape)
    return out.astype(np.int64), int(out.max()) + 1 if out.size else 0


def plugin_mi_counts(counts: np.ndarray) -> np.ndarray:
    """Mutual information (nats) of empirical joint tables.

    Args:
      counts: array (..., m, 2) of non-negative (weighted) counts of (symbol, mask bit).

    Returns:
      array (...) of the plug-in mutual information, in [0, ln 2]; 0 log 0 = 0.
    """
    c = np.asarray(counts, np.float64)
    total = c.sum(axis=(-2, -1), keepdims=True)
    p = c / total
    pv = p.sum(axis=-1, keepdims=True)
    pu = p.sum(axis=-2, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / (pv * pu)), 0.0)
    # A KL divergence between empirical tables: >= 0 up to rounding (-1e-17), never more.
    return np.maximum(terms.sum(axis=(-2, -1)), 0.0)


def plugin_mi(sym: np.ndarray, masks: np.ndarray, num_symbols: int,
              weights: np.ndarray | None = None) -> np.ndarray:
    """Plug-in MI between the mask bit and a symbol, for every pair.

    Args:
      sym: integer symbols (S, K, n) in [0, num_symbols).
      masks: mask bits (S, K, n) in {0, 1}.
      num_symbols: m.
      weights: optional (B, S, K) non-negative weights of the K runs (bootstrap counts).

    Returns:
      (S, n) without weights, (B, S, n) with them.
    """
    S, K, n = sym.shape
    joint = sym * 2 + masks  # (S, K, n) in [0, 2m)
    out = []
    for s in range(S):
        onehot = np.zeros((K, n, 2 * num_symbols), np.float64)
        np.put_along_axis(onehot, joint[s][..., None], 1.0, axis=-1)
        if weights is None:
            counts = onehot.sum(axis=0)  # (n, 2m)
        else:
            counts = np.einsum("bk,knj->bnj", np.asarray(weights[:, s], np.float64), onehot)
        out.append(plugin_mi_counts(counts.reshape(*counts.shape[:-1], num_symbols, 2)))
    return np.stack(out, axis=-2)  # (S, n) or (B, S, n)


def bootstrap_weights(rng: np.random.Generator, num_bootstrap: int, S: int, K: int) -> np.ndarray:
    """Multinomial counts (B, S, K): each resample draws K of the K runs with replacement,
    independently for each supersample."""
    return rng.multinomial(K, np.full(K, 1.0 / K), size=(num_bootstrap, S)).astype(np.float64)
