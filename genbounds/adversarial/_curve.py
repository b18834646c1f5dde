r"""Robustness curves: clean, attacked (FGSM, PGD) and certified accuracy against the radius.

For every radius $\varepsilon$, certified accuracy $\le$ true robust accuracy $\le$ PGD robust
accuracy: the certificate (`certified_radius`, Tsuzuku, Sato & Sugiyama 2018) is a lower bound,
an attack (`pgd`, Madry et al. 2018) an upper one. `robustness` measures both on one grid and
counts the examples where they contradict each other (a sound certificate has none).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from genbounds.core._bound import Bound
from genbounds.core._checks import check_key

from ._attacks import _check_box, _check_eps, fgsm, pgd
from ._certified import CertifiedRadii, certified_radius


@dataclasses.dataclass(frozen=True)
class RobustnessCurve:
    """Clean, attacked and certified accuracy against the radius.

    Attributes:
      eps: the radii.
      norm: ``"l2"`` or ``"linf"``.
      clean_accuracy: accuracy on the clean inputs.
      pgd_accuracy: PGD robust accuracy at each radius (an upper bound on the robust accuracy).
      fgsm_accuracy: FGSM robust accuracy at each radius (weaker; None if not run).
      certified_accuracy: certified accuracy at each radius (a lower bound).
      violations: examples certified at some radius that PGD broke there (must be 0).
      radii: the `CertifiedRadii`.
      settings: the attack settings.
    """

    eps: np.ndarray
    norm: str
    clean_accuracy: float
    pgd_accuracy: np.ndarray
    fgsm_accuracy: np.ndarray | None
    certified_accuracy: np.ndarray
    violations: int
    radii: CertifiedRadii
    settings: dict

    def eps_at(self, level: float = 0.5) -> float:
        """The smallest grid radius where PGD robust accuracy falls to ``level`` or below
        (linearly interpolated between grid points; NaN if it never does)."""
        a = self.pgd_accuracy
        for i in range(len(a)):
            if a[i] <= level:
                if i == 0 or a[i - 1] == a[i]:
                    return float(self.eps[i])
                f = (a[i - 1] - level) / (a[i - 1] - a[i])
                return float(self.eps[i - 1] + f * (self.eps[i] - self.eps[i - 1]))
        return math.nan

    def to_dict(self) -> dict:
        """Plain Python values (for JSON)."""
        return {
            "norm": self.norm, "eps": self.eps.tolist(), "clean_accuracy": self.clean_accuracy,
            "pgd_accuracy": self.pgd_accuracy.tolist(),
            "fgsm_accuracy": None if self.fgsm_accuracy is None else self.fgsm_accuracy.tolist(),
            "certified_accuracy": self.certified_accuracy.tolist(),
            "violations": self.violations, "lipschitz": self.radii.lipschitz,
            "lipschitz_tight": self.radii.lipschitz_tight,
            "median_certified_radius": float(np.median(self.radii.radius)),
            "failure_probability": self.radii.failure_probability, "settings": self.settings,
        }

    def to_markdown(self) -> str:
        """A Markdown table: one row per radius."""
        head = "| eps | PGD robust acc | FGSM robust acc | certified acc |"
        lines = [f"{self.norm} attacks; clean accuracy {self.clean_accuracy:.4f}", "", head,
                 "|---|---|---|---|"]
        for i, e in enumerate(self.eps):
            fg = "-" if self.fgsm_accuracy is None else f"{self.fgsm_accuracy[i]:.4f}"
            lines.append(f"| {e:.4g} | {self.pgd_accuracy[i]:.4f} | {fg} | "
                         f"{self.certified_accuracy[i]:.4f} |")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Accuracy against the radius: clean, FGSM, PGD and certified."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6.5, 4))
        ax.axhline(self.clean_accuracy, color="gray", ls=":", label="clean accuracy")
        if self.fgsm_accuracy is not None:
            ax.plot(self.eps, self.fgsm_accuracy, "o--", color="tab:orange", ms=3,
                    label="FGSM robust accuracy")
        ax.plot(self.eps, self.pgd_accuracy, "s-", color="tab:red", ms=3,
                label="PGD robust accuracy (upper bound)")
        ax.plot(self.eps, self.certified_accuracy, "^-", color="tab:blue", ms=3,
                label="certified accuracy (lower bound)")
        ax.fill_between(self.eps, self.certified_accuracy, self.pgd_accuracy, color="tab:purple",
                        alpha=0.12, label="true robust accuracy lies here")
        ax.set_xlabel(f"perturbation radius ({self.norm})")
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize=8)
        return ax


def robustness(
    params: Any,
    *,
    apply_fn: Callable[[Any, Any], Any],
    X: Any,
    y: Any,
    eps: Sequence[float],
    norm: str = "l2",
    steps: int = 40,
    restarts: int = 2,
    box: tuple[float, float] | None = None,
    fgsm_too: bool = True,
    key: jax.Array | None = None,
    method: str = "tight",
    failure_probability: float = 1e-6,
) -> RobustnessCurve:
    r"""Clean accuracy, FGSM and PGD robust accuracy, and certified accuracy on a grid of radii.

    For every $\varepsilon$: certified accuracy $\le$ true robust accuracy $\le$ PGD robust
    accuracy (the first with probability at least $1-$ ``failure_probability``). The curve also
    counts *violations*: examples certified at $\varepsilon$ that PGD broke at $\varepsilon$;
    a sound certificate has none.

    Args:
      params, apply_fn: the network (``apply_fn(params, X) -> logits``; traced for the
        certificate).
      X, y: the examples (e.g. the test set).
      eps: the grid of radii.
      norm: ``"l2"`` or ``"linf"``.
      steps, restarts: PGD settings (see `pgd`; step size $2.5\varepsilon$/steps, margin loss,
        random starts).
      box: ``(lo, hi)`` of the inputs (e.g. (0, 1)); attacks stay inside it.
      fgsm_too: also run FGSM.
      key: PRNG key of the attacks' random starts and of the norm certificates.
      method, failure_probability: as in `certified_radius`.

    Returns:
      A `RobustnessCurve` (``.to_markdown()``, ``.plot()``, ``.to_dict()``).
    """
    grid = _check_eps(eps)
    box = _check_box(box)
    key = jax.random.key(0) if key is None else check_key(key)
    k_attack, k_norm = jax.random.split(key)
    radii = certified_radius(params, X=X, y=y, apply_fn=apply_fn, norm=norm, method=method,
                             key=k_norm, failure_probability=failure_probability)
    pgd_acc, fg_acc, cert_acc = [], [], []
    violations = 0
    clean = None
    for i, e in enumerate(grid):
        r = pgd(params, X=X, y=y, apply_fn=apply_fn, eps=float(e), norm=norm, steps=steps, restarts=restarts,
                box=box, key=jax.random.fold_in(k_attack, i))
        certified = radii.radius > e
        violations += int(np.sum(certified & ~r.robust))
        pgd_acc.append(r.robust_accuracy)
        cert_acc.append(float(np.mean(certified)))
        if fgsm_too:
            fg_acc.append(fgsm(params, X=X, y=y, apply_fn=apply_fn, eps=float(e), norm=norm,
                               box=box).robust_accuracy)
        if clean is None:
            clean = float(np.mean(np.asarray(radii.margins) > 0))
    settings = {"attack": "PGD", "steps": steps, "restarts": restarts,
                "step_size": "2.5 eps / steps", "loss": "margin (Carlini-Wagner)",
                "random_start": True, "box": None if box is None else list(box),
                "certificate": method}
    return RobustnessCurve(eps=grid, norm=norm, clean_accuracy=clean,
                           pgd_accuracy=np.asarray(pgd_acc),
                           fgsm_accuracy=np.asarray(fg_acc) if fgsm_too else None,
                           certified_accuracy=np.asarray(cert_acc), violations=violations,
                           radii=radii, settings=settings)


def robustness_measure(params: Any, *, apply_fn: Callable, X: Any, y: Any,
                       **options: Any) -> Bound:
    """`robustness` as a `Bound` entry of a report (a measure: ``value=None``).

    ``complexity`` is the median certified radius; ``terms`` hold the whole curve
    (`RobustnessCurve.to_dict`).
    """
    curve = robustness(params, apply_fn=apply_fn, X=X, y=y, **options)
    d = curve.to_dict()
    notes = (f"{curve.norm} radii; certified accuracy <= PGD robust accuracy at every eps "
             f"({curve.violations} violations)",)
    return Bound(name="robustness", value=None, complexity=d["median_certified_radius"],
                 terms=d, n=int(np.shape(X)[0]), estimated=False,
                 reference="Tsuzuku, Sato & Sugiyama 2018 (arXiv:1802.04034), Madry et al. "
                           "2018 (arXiv:1706.06083)", notes=notes)
