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
from genbounds.core._checks import check_choice, check_float_array, check_key
from genbounds.network._network import Network, as_network

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
      propagated_accuracy: accuracy certified by bound propagation (CROWN by default,
        `genbounds.verify.crown_radius`) at each radius; None where not computed or refused
        (the reason is in ``settings["propagation_note"]``).
      propagated: its `CertifiedRadii` (None likewise); with ``propagation_search="grid"``
        (the default) its radii are the largest certified on the way to deciding the grid,
        lower bounds of the searched radii, and the curve's dictionary gives no median of
        them.
      propagated_violations: examples certified by it at some radius that PGD broke there.
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
    propagated_accuracy: np.ndarray | None = None
    propagated: CertifiedRadii | None = None
    propagated_violations: int = 0

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
            "propagated_accuracy": None if self.propagated_accuracy is None
            else self.propagated_accuracy.tolist(),
            # a median radius only where each example's radius was searched (not the grid's)
            "median_propagated_radius": None if self.propagated is None
            or self.propagated.terms.get("search") == "grid"
            else float(np.median(self.propagated.radius)),
            "propagated_violations": self.propagated_violations,
        }

    def to_markdown(self) -> str:
        """A Markdown table: one row per radius."""
        prop = self.propagated_accuracy
        name = "" if prop is None else f" {self.propagated.method} certified acc |"
        head = "| eps | PGD robust acc | FGSM robust acc | certified acc |" + name
        lines = [f"{self.norm} attacks; clean accuracy {self.clean_accuracy:.4f}", "", head,
                 "|---|---|---|---|" + ("" if prop is None else "---|")]
        for i, e in enumerate(self.eps):
            fg = "-" if self.fgsm_accuracy is None else f"{self.fgsm_accuracy[i]:.4f}"
            extra = "" if prop is None else f" {prop[i]:.4f} |"
            lines.append(f"| {e:.4g} | {self.pgd_accuracy[i]:.4f} | {fg} | "
                         f"{self.certified_accuracy[i]:.4f} |" + extra)
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
                label="Lipschitz-certified accuracy (lower bound)")
        low = self.certified_accuracy
        if self.propagated_accuracy is not None:
            ax.plot(self.eps, self.propagated_accuracy, "v-", color="tab:green", ms=3,
                    label=f"{self.propagated.method}-certified accuracy (lower bound)")
            low = np.maximum(low, self.propagated_accuracy)
        ax.fill_between(self.eps, low, self.pgd_accuracy, color="tab:purple",
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
    propagation: str | None = "crown",
    propagation_search: str = "grid",
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
      method, failure_probability: as in `certified_radius` (the Lipschitz certificate).
      propagation: ``"crown"`` (default), ``"alpha-crown"`` or ``"ibp"``: also the accuracy
        certified by bound propagation (`genbounds.verify.crown_radius`), in
        ``propagated_accuracy``; None skips it. A network it cannot relax (GELU, LayerNorm,
        attention) gets None there and the reason in ``settings["propagation_note"]``.
      propagation_search: ``"grid"`` (default: `crown_radius` decides each radius of ``eps``
        and stops there, the fewest bound evaluations; the radii in ``propagated`` are then
        the largest certified on the way, lower bounds of the searched ones between two radii
        of the grid) or ``"bracket"`` (each example's radius to within 2%, about 2-6 times the
        evaluations). Either way an example counts at a radius only where an evaluation of
        the bound certified it (the grid search evaluates the radii themselves; the bracket's
        radii may stop up to 2% short of a radius of the grid).

    Returns:
      A `RobustnessCurve` (``.to_markdown()``, ``.plot()``, ``.to_dict()``).
    """
    grid = _check_eps(eps)
    box = _check_box(box)
    check_choice(propagation_search, "propagation_search", ("grid", "bracket"))
    key = jax.random.key(0) if key is None else check_key(key)
    k_attack, k_norm = jax.random.split(key)
    net = params
    if apply_fn is not None and not isinstance(params, Network):
        # traced and verified on every example of X once, for both certificates
        net = as_network(params, apply_fn=apply_fn, X=check_float_array(X, "X"),
                         caller="robustness")
    radii = certified_radius(net, X=X, y=y, norm=norm, method=method,
                             key=k_norm, failure_probability=failure_probability)
    prop, note = None, None
    if propagation is not None:
        from genbounds.core._checks import NotBoundable
        from genbounds.verify._radius import crown_radius

        check_choice(propagation, "propagation", ("crown", "alpha-crown", "ibp"))
        by_grid = propagation_search == "grid" and bool(np.any(grid > 0))
        # each evaluation decides a radius of the grid at least: enough to decide every one
        search = {"search": "grid", "grid": grid,
                  "search_steps": max(8, int(np.sum(grid > 0)))} if by_grid else {}
        try:
            prop = crown_radius(net, X=X, y=y, norm=norm, method=propagation, **search)
        except NotBoundable as err:
            note = f"bound propagation skipped: {err}"
    pgd_acc, fg_acc, cert_acc, prop_acc = [], [], [], []
    violations = prop_violations = 0
    clean = None
    for i, e in enumerate(grid):
        r = pgd(params, X=X, y=y, apply_fn=apply_fn, eps=float(e), norm=norm, steps=steps, restarts=restarts,
                box=box, key=jax.random.fold_in(k_attack, i))
        certified = radii.radius > e
        violations += int(np.sum(certified & ~r.robust))
        pgd_acc.append(r.robust_accuracy)
        cert_acc.append(float(np.mean(certified)))
        if prop is not None:
            # radius 0 is the point itself (crown_radius's terms say where it is certified)
            by_prop = prop.radius > e if e > 0 else prop.terms["certified_at_zero"]
            prop_violations += int(np.sum(by_prop & ~r.robust))
            prop_acc.append(float(np.mean(by_prop)))
        if fgsm_too:
            fg_acc.append(fgsm(params, X=X, y=y, apply_fn=apply_fn, eps=float(e), norm=norm,
                               box=box).robust_accuracy)
        if clean is None:
            clean = float(np.mean(np.asarray(radii.margins) > 0))
    settings = {"attack": "PGD", "steps": steps, "restarts": restarts,
                "step_size": "2.5 eps / steps", "loss": "margin (Carlini-Wagner)",
                "random_start": True, "box": None if box is None else list(box),
                "certificate": method, "propagation": propagation if prop is not None else None,
                "propagation_search": prop.terms["search"] if prop is not None else None,
                "propagation_note": note}
    return RobustnessCurve(eps=grid, norm=norm, clean_accuracy=clean,
                           pgd_accuracy=np.asarray(pgd_acc),
                           fgsm_accuracy=np.asarray(fg_acc) if fgsm_too else None,
                           certified_accuracy=np.asarray(cert_acc), violations=violations,
                           radii=radii, settings=settings,
                           propagated_accuracy=None if prop is None else np.asarray(prop_acc),
                           propagated=prop, propagated_violations=prop_violations)


def robustness_measure(params: Any, *, apply_fn: Callable, X: Any, y: Any,
                       **options: Any) -> Bound:
    """`robustness` as a `Bound` entry of a report (a measure: ``value=None``).

    ``complexity`` is the median certified radius (with bound propagation, the median of the
    larger of the two sound radii of each example, the notes saying which won how often);
    ``terms`` hold the whole curve (`RobustnessCurve.to_dict`).
    """
    # the report's radius is each example's: searched to 2%, not only decided on the grid
    options.setdefault("propagation_search", "bracket")
    curve = robustness(params, apply_fn=apply_fn, X=X, y=y, **options)
    d = curve.to_dict()
    notes = (f"{curve.norm} radii; certified accuracy <= PGD robust accuracy at every eps "
             f"({curve.violations} violations)",)
    radius = d["median_certified_radius"]
    if curve.propagated is not None:
        # both certificates are sound: each example keeps the larger of its two radii
        best = np.maximum(curve.radii.radius, curve.propagated.radius)
        won = float(np.mean(curve.propagated.radius > curve.radii.radius))
        radius = float(np.median(best))
        d["median_best_radius"] = radius
        if curve.propagated.terms["search"] == "grid":
            notes += (f"the {curve.propagated.method} radii were decided on the grid of eps "
                      "only: lower bounds of the searched ones",)
        notes += (f"{curve.propagated.method}-certified accuracy beside it "
                  f"({curve.propagated_violations} violations); complexity is the median of "
                  f"the larger radius per example ({curve.propagated.method} larger on "
                  f"{won:.0%} of them, the Lipschitz radius on the rest)",)
    return Bound(name="robustness", value=None, complexity=radius,
                 terms=d, n=int(np.shape(X)[0]), estimated=False,
                 reference="Tsuzuku, Sato & Sugiyama 2018 (arXiv:1802.04034), Madry et al. "
                           "2018 (arXiv:1706.06083)", notes=notes)
