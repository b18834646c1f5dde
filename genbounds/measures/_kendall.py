"""Rank correlation of a measure with the generalisation gap over a population of networks.

Jiang, Neyshabur, Mobahi, Krishnan & Bengio (2020) score a complexity measure by how well it
*ranks* trained networks: Kendall's $\\tau$ between the measure and the generalisation gap over all
networks, and the granulated coefficient $\\Psi$ (both in their Section 4), the mean over
hyperparameter axes of $\\tau$ over the networks that differ in that axis alone. docs/measures/
study.md describes the protocol; ``genbounds study`` runs one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from genbounds.core._checks import check_int, check_n


def _vector(x: Any, name: str) -> np.ndarray:
    try:
        v = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name} must be a 1-D sequence of real numbers, got {x!r}") from e
    if v.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {v.shape}")
    if np.any(np.isnan(v)):
        raise ValueError(f"{name} must not contain NaN (got {int(np.isnan(v).sum())} NaN)")
    return v


def _pair_signs(x: np.ndarray) -> np.ndarray:
    """sign(x_i - x_j) by comparison, so that +-inf are ordered values (``inf - inf`` would be
    NaN): +inf lies above every finite value, -inf below, and equal infinities tie."""
    a, b = x[:, None], x[None, :]
    return (a > b).astype(np.float64) - (a < b).astype(np.float64)


def _inf_note(x: np.ndarray, y: np.ndarray) -> tuple[str, ...]:
    """The note that says how infinite values were ranked, when there are any."""
    parts = [f"{name} holds {int(np.sum(np.isposinf(v)))} +inf and {int(np.sum(np.isneginf(v)))} "
             f"-inf" for name, v in (("measure", x), ("gap", y)) if np.any(np.isinf(v))]
    if not parts:
        return ()
    return ("; ".join(parts) + ": ranked as ordered values (+inf above every finite value, -inf "
            "below, equal infinities tied)",)


def _tau(x: np.ndarray, y: np.ndarray, variant: str, weights: np.ndarray | None = None) -> float:
    """tau over the pairs of distinct indices; `weights` are multiplicities (a bootstrap)."""
    s = _pair_signs(x) * _pair_signs(y)
    if weights is None:
        w = np.ones((len(x), len(x)))
    else:
        w = np.outer(weights, weights).astype(np.float64)
    np.fill_diagonal(w, 0.0)  # a net is never paired with itself (nor with its bootstrap copy)
    if variant == "a":
        den = float(np.sum(w))
    else:
        den = float(np.sqrt(np.sum(w * _pair_signs(x) ** 2) * np.sum(w * _pair_signs(y) ** 2)))
    if den == 0.0:
        return float("nan")
    return float(np.sum(w * s) / den)


def kendall_tau(measure: Any, gap: Any, *, variant: str = "a") -> float:
    r"""Kendall's rank correlation between a measure and the generalisation gap.

    Jiang et al. (2020), Section 4, over the $n$ networks $(\mu_i, g_i)$:

    $$\tau = \frac{1}{n(n-1)} \sum_{i \ne j} \operatorname{sign}(\mu_i - \mu_j)
      \operatorname{sign}(g_i - g_j),$$

    Kendall's $\tau_a$ (``variant="a"``, the default): a tie in either variable contributes 0 and
    stays in the denominator, so ties pull $\tau$ towards 0 (a constant measure has $\tau = 0$).
    ``variant="b"`` divides instead by $\sqrt{(P - T_\mu)(P - T_g)}$ ($P$ pairs, $T$ the tied
    pairs of each variable): Kendall's $\tau_b$, as ``scipy.stats.kendalltau`` computes it. The
    two agree when there are no ties. $\tau = 1$: the measure ranks the networks exactly as their
    gaps; $-1$: in reverse.

    Infinite values (a bound or measure that overflowed, e.g. a product of norms) are ranked as
    ordered values: $+\infty$ above every finite value, $-\infty$ below, two equal infinities
    tied; `granulated_kendall` says so in its ``notes``. NaN has no rank and is refused.

    Args:
      measure: the measure of each network, shape (n,), n >= 2, no NaN (+-inf allowed).
      gap: the generalisation gap (or any target) of each network, shape (n,).
      variant: ``"a"`` (Jiang et al.) or ``"b"``.

    Returns:
      $\tau$ in [-1, 1] (NaN for ``variant="b"`` when either variable is constant).

    Raises:
      ValueError, TypeError: shapes that differ, fewer than 2 networks, NaN, an unknown variant.

    Examples:
      >>> kendall_tau([1.0, 2.0, 3.0], [0.1, 0.3, 0.2])  # pairs: +, +, -
      0.3333333333333333
      >>> kendall_tau([1.0, 1.0, 3.0], [0.1, 0.3, 0.2])  # the tie counts 0
      0.0

    References:
      Kendall, "A New Measure of Rank Correlation", Biometrika 30, 1938.
      Jiang et al., ICLR 2020, arXiv:1912.02178, Section 4 (Kendall's rank correlation).
    """
    if variant not in ("a", "b"):
        raise ValueError(f"variant must be 'a' or 'b', got {variant!r}")
    x, y = _vector(measure, "measure"), _vector(gap, "gap")
    if x.shape != y.shape:
        raise ValueError(f"measure and gap must have the same length, got {len(x)} and {len(y)}")
    if len(x) < 2:
        raise ValueError(f"kendall_tau needs at least 2 networks, got {len(x)}")
    return _tau(x, y, variant)


class GranulatedKendall(NamedTuple):
    """Jiang et al.'s granulated Kendall coefficient and its parts.

    ``psi`` = $\\Psi$, the mean of ``per_axis`` ($\\psi_i$ for each axis with at least one group);
    ``num_groups`` the number of groups (settings of the other axes) averaged for each axis;
    ``notes``: how infinite values were ranked, and the groups left out with no $\\tau$.
    """

    psi: float
    per_axis: dict[str, float]
    num_groups: dict[str, int]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"psi": self.psi, "per_axis": dict(self.per_axis),
                "num_groups": dict(self.num_groups), "notes": list(self.notes)}


def _columns(hparams: Any, n: int) -> dict[str, list]:
    if isinstance(hparams, Mapping):
        cols = {str(k): list(v) for k, v in hparams.items()}
    elif isinstance(hparams, Sequence) and all(isinstance(h, Mapping) for h in hparams):
        keys = list(hparams[0].keys()) if hparams else []
        for i, h in enumerate(hparams):
            if list(h.keys()) != keys and set(h.keys()) != set(keys):
                raise ValueError(f"hparams[{i}] has keys {sorted(h)}; hparams[0] has {sorted(keys)}")
        cols = {str(k): [h[k] for h in hparams] for k in keys}
    else:
        raise TypeError("hparams must be a mapping axis -> values (one per network) or a list of "
                        f"one mapping per network, got {type(hparams).__name__}")
    if not cols:
        raise ValueError("hparams must name at least one hyperparameter axis")
    for k, v in cols.items():
        if len(v) != n:
            raise ValueError(f"hparams[{k!r}] has {len(v)} values but there are {n} networks")
    return cols


def _key(v: Any) -> Any:
    """A hashable, exact key for a hyperparameter value (floats compare exactly)."""
    if isinstance(v, (list, tuple)):
        return tuple(_key(u) for u in v)
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return ("nan",)  # NaN == NaN here: every NaN value of an axis is one setting
    return v


def _groups(cols: Mapping[str, list], axis: str, n: int) -> list[np.ndarray]:
    others = [k for k in cols if k != axis]
    buckets: dict[tuple, list[int]] = {}
    for i in range(n):
        buckets.setdefault(tuple(_key(cols[k][i]) for k in others), []).append(i)
    return [np.asarray(ix) for ix in buckets.values()]


def _granulated(x, y, cols, axes, variant, weights=None) -> GranulatedKendall:
    n = len(x)
    per_axis: dict[str, float] = {}
    counts: dict[str, int] = {}
    undefined = 0
    for axis in axes:
        taus = []
        for ix in _groups(cols, axis, n):
            w = None if weights is None else weights[ix]
            if (weights is None and len(ix) < 2) or (w is not None and np.sum(w) - np.max(w) < 1):
                continue  # one network (or copies of one): no pair differs in this axis
            if len({_key(cols[axis][i]) for i in ix}) < 2:
                continue
            t = _tau(x[ix], y[ix], variant, w)
            if np.isnan(t):  # tau_b of a group where the measure or the gap is constant
                undefined += 1
            else:
                taus.append(t)
        counts[axis] = len(taus)
        if taus:
            per_axis[axis] = float(np.mean(taus))
    psi = float(np.mean(list(per_axis.values()))) if per_axis else float("nan")
    notes = _inf_note(x, y)
    if undefined:
        notes += (f"{undefined} group(s) left out: tau_b is undefined where the measure or the "
                  "gap is constant within the group",)
    return GranulatedKendall(psi=psi, per_axis=per_axis, num_groups=counts, notes=notes)


def granulated_kendall(
    measure: Any,
    gap: Any,
    hparams: Any,
    *,
    axes: Sequence[str] | None = None,
    variant: str = "a",
) -> GranulatedKendall:
    r"""Jiang et al. (2020)'s granulated Kendall coefficient $\Psi$.

    For each hyperparameter axis $i$ the networks are grouped by the values of all the *other*
    columns of `hparams`; within a group only axis $i$ varies. With $\tau$ of `kendall_tau` on
    each group,

    $$\psi_i = \frac{1}{m_i} \sum_{\theta_{-i}} \tau\big(\{(\mu, g) : \text{networks with }
      \theta_{-i}\}\big), \qquad \Psi = \frac1N \sum_{i=1}^N \psi_i,$$

    with $m_i$ the number of groups. On a full grid $m_i = \prod_{j \ne i} |\Theta_j|$ as in the
    paper. On an incomplete population (a network that failed its stopping criterion and was
    left out) a group with fewer than two networks, or whose networks share the axis value, has
    no pair and is skipped; ``num_groups`` says how many entered each $\psi_i$.

    Columns of `hparams` that are not in `axes` still define the groups (a ``seed`` column keeps
    different seeds apart) but get no $\psi$ of their own.

    Args:
      measure: the measure of each network, (n,).
      gap: the generalisation gap of each network, (n,).
      hparams: the hyperparameters of each network: a mapping ``axis -> values`` (n each), or a
        list of n mappings with the same keys. Values are compared exactly (NaN values of an
        axis count as one setting).
      axes: the axes to average over (default: every column).
      variant: ``"a"`` (Jiang et al.'s $\tau$) or ``"b"``; see `kendall_tau`.

    Infinite values are ranked as in `kendall_tau` (ordered, equal infinities tied), and a
    group holding one enters its $\psi_i$ like any other; ``notes`` says so.

    Returns:
      A `GranulatedKendall` (``psi``, ``per_axis``, ``num_groups``, ``notes``); ``psi`` is NaN
      when no axis has a group.

    Raises:
      ValueError, TypeError: lengths that differ, NaN, an axis not in `hparams`, bad variant.

    Examples:
      >>> hp = {"depth": [1, 1, 2, 2], "lr": [0.1, 0.01, 0.1, 0.01]}
      >>> r = granulated_kendall([1.0, 2.0, 3.0, 5.0], [0.1, 0.2, 0.4, 0.3], hp)
      >>> r.per_axis  # depth: both groups agree (+1); lr: +1 and -1
      {'depth': 1.0, 'lr': 0.0}
      >>> r.psi
      0.5

    References:
      Jiang et al., ICLR 2020, arXiv:1912.02178, Section 4 (granulated Kendall coefficient).
    """
    if variant not in ("a", "b"):
        raise ValueError(f"variant must be 'a' or 'b', got {variant!r}")
    x, y = _vector(measure, "measure"), _vector(gap, "gap")
    if x.shape != y.shape:
        raise ValueError(f"measure and gap must have the same length, got {len(x)} and {len(y)}")
    cols = _columns(hparams, len(x))
    axes = list(cols) if axes is None else [str(a) for a in axes]
    missing = [a for a in axes if a not in cols]
    if missing:
        raise ValueError(f"axes {missing} are not columns of hparams ({sorted(cols)})")
    return _granulated(x, y, cols, axes, variant)


def bootstrap_kendall(
    measure: Any,
    gap: Any,
    hparams: Any,
    *,
    axes: Sequence[str] | None = None,
    num_resamples: int = 200,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Bootstrap draws of tau and Psi, resampling networks with replacement.

    A resample is a vector of multiplicities $c_k$; $\\tau$ is recomputed over the pairs of
    *distinct* networks, each pair weighted $c_k c_l$ (a network is never paired with its own
    copy, so duplicates do not add artificial ties). Returns ``{"tau": (B,), "psi": (B,)}``.
    """
    x, y = _vector(measure, "measure"), _vector(gap, "gap")
    if x.shape != y.shape:
        raise ValueError(f"measure and gap must have the same length, got {len(x)} and {len(y)}")
    cols = _columns(hparams, len(x))
    axes = list(cols) if axes is None else list(axes)
    missing = [a for a in axes if a not in cols]
    if missing:
        raise ValueError(f"axes {missing} are not columns of hparams ({sorted(cols)})")
    num_resamples = check_n(num_resamples, "num_resamples")
    rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
    n = len(x)
    taus, psis = [], []
    for _ in range(num_resamples):
        c = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        taus.append(_tau(x, y, "a", c))
        psis.append(_granulated(x, y, cols, axes, "a", c).psi)
    return {"tau": np.asarray(taus), "psi": np.asarray(psis)}
