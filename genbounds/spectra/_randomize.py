r"""Randomised ESDs: the spectrum of each weight matrix with its entries shuffled.

Shuffling the entries of $W$ keeps their distribution and destroys their correlations, so the
randomised ESD is close to Marchenko-Pastur; eigenvalues of the randomised matrix far past its
MP bulk are "correlation traps" (Martin & Mahoney 2021, JMLR 22(165), arXiv:1810.01075; the
WeightWatcher 0.7.7 columns ``rand_num_spikes`` = ``num_traps``). The randomised ESD is also
compared with the original one: ``rand_distance`` is the Jensen-Shannon distance (natural log)
between the two **sorted eigenvalue vectors**, each taken as a probability vector and compared
index by index (WeightWatcher's ``jensen_shannon_distance``; it is not a distance between
densities), ``ww_softrank`` = $\max \lambda^{rand} / \max \lambda$, ``ww_maxdist`` =
$\max \lambda - \max \lambda^{rand}$.

WeightWatcher shuffles with the global, unseeded ``np.random.shuffle``; the
``"weightwatcher"`` preset draws the same permutations from a ``np.random.RandomState(seed)`` (so
it equals WeightWatcher run after ``np.random.seed(seed)``), in WeightWatcher's order: per
layer, ``num_replicas`` passes over the slices, then one fresh pass for the distance. The
default preset draws them from an explicit JAX key, and its distance takes the spectrum of the
first of the pooled shuffles instead of one more (``share_fresh=True``): one shuffle is as good
a draw for the distance as another, and this saves a decomposition of every matrix of the layer
(half the randomised work of a layer with one replica; the MP fit, the traps and the distance
then come from the same shuffle). All shuffled matrices of a pass are
decomposed in one batched call per shape group, by the eigenvalues of their Gram matrices
(`_eigen.py`, ``method="gram"``: about 2.5x faster than the SVD on a CPU; each eigenvalue within
$O(n\\,\\varepsilon\\,\\lambda_{\\max})$ of the SVD's, which moves the randomised metrics by far
less than one shuffle differs from another).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from genbounds.spectra._eigen import singular_values


@dataclasses.dataclass(frozen=True)
class RandomSpectra:
    """Randomised eigenvalues of one layer.

    Attributes:
      pooled: sorted eigenvalues of ``num_replicas`` shuffles of every matrix (for the MP fit
        and the correlation traps).
      fresh: sorted eigenvalues of one more shuffle (for the distance), or of the first
        pooled shuffle (``share_fresh=True``).
      num_replicas: shuffles in ``pooled``.
    """

    pooled: np.ndarray
    fresh: np.ndarray
    num_replicas: int


def replicas_for(n_comp: int) -> int:
    """WeightWatcher's rule: 5 replicas when a layer has fewer than 100 components, else 1."""
    return 5 if n_comp < 100 else 1


def _shuffle_numpy(mats: np.ndarray, copies: int, rs: np.random.RandomState) -> np.ndarray:
    out = np.empty((copies * mats.shape[0], *mats.shape[1:]), mats.dtype)
    k = 0
    for _ in range(copies):
        for W in mats:
            flat = W.flatten()
            rs.shuffle(flat)
            out[k] = flat.reshape(W.shape)
            k += 1
    return out


def _shuffle_key(mats: np.ndarray, copies: int, key: jax.Array) -> np.ndarray:
    # The permutations come from a numpy Generator seeded by the key's bits: reproducible from
    # the key alone, without compiling a permutation kernel for every matrix shape. Each copy of
    # each matrix is shuffled in place (Fisher-Yates), the fastest of numpy's shuffles.
    bits = np.asarray(jax.random.key_data(key)).astype(np.uint32).ravel()
    rng = np.random.default_rng(bits)
    flat = np.tile(mats.reshape(mats.shape[0], -1), (copies, 1))
    for row in flat:
        rng.shuffle(row)
    return flat.reshape(copies * mats.shape[0], *mats.shape[1:])


def _evals(svals: np.ndarray, n_comp: int) -> np.ndarray:
    # WW: per matrix np.sort(sv)[-n_comp:] ** 2, concatenated, sorted
    return np.sort(np.concatenate([s[-n_comp:] ** 2 for s in svals]))


def random_spectra(layers: Sequence[Any], *, rng: Any, method: str = "svd",
                   num_replicas: int | None = None,
                   share_fresh: bool = False) -> list[RandomSpectra]:
    """Randomised spectra of every layer (``LayerMatrices``), in layer order.

    ``rng``: a ``np.random.RandomState`` (WeightWatcher's order of draws) or a JAX key (one
    subkey per layer, by ``fold_in`` of its index). ``share_fresh=True`` (a JAX key only): the
    distance's spectrum is the first pooled shuffle's, not one more shuffle's.
    """
    share_fresh = share_fresh and not isinstance(rng, np.random.RandomState)
    pooled_mats, fresh_mats, reps = [], [], []
    for i, layer in enumerate(layers):
        n_comp = layer.M * layer.rf
        r = replicas_for(n_comp) if num_replicas is None else num_replicas
        reps.append(r)
        if isinstance(rng, np.random.RandomState):
            pooled_mats.append(_shuffle_numpy(layer.mats, r, rng))
            fresh_mats.append(_shuffle_numpy(layer.mats, 1, rng))
        else:
            k1, k2 = jax.random.split(jax.random.fold_in(rng, i))
            pooled_mats.append(_shuffle_key(layer.mats, r, k1))
            if not share_fresh:
                fresh_mats.append(_shuffle_key(layer.mats, 1, k2))
    sv = singular_values(pooled_mats + fresh_mats, method="gram" if method == "svd" else method)
    out = []
    for i, layer in enumerate(layers):
        n_comp = layer.M * layer.rf
        pooled = _evals(sv[i], n_comp)
        if not share_fresh:
            fresh = _evals(sv[len(layers) + i], n_comp)
        elif reps[i] == 1:
            fresh = pooled
        else:  # the shuffles are stacked replica by replica: the first count are replica 0
            fresh = _evals(sv[i][:layer.mats.shape[0]], n_comp)
        out.append(RandomSpectra(pooled=pooled, fresh=fresh, num_replicas=reps[i]))
    return out


def jensen_shannon_distance(p: np.ndarray, q: np.ndarray) -> float:
    """WeightWatcher's ``jensen_shannon_distance``: with m = (p + q)/2 on the raw vectors,
    sqrt((H(p||m) + H(q||m))/2), each argument of ``scipy.stats.entropy`` normalised there."""
    from scipy import stats

    p = np.array(p)
    q = np.array(q)
    m = (p + q) / 2
    with np.errstate(invalid="ignore"):  # a divergence rounding below 0 gives NaN, as in WW
        return float(np.sqrt((stats.entropy(p, m) + stats.entropy(q, m)) / 2))
