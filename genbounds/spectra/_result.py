"""The result of `heavy_tail`: per-layer spectra and metrics, the model summary, tables, plots."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

# The metrics WeightWatcher's get_summary averages (weightwatcher.py, get_summary).
SUMMARY_METRICS = ("log_norm", "alpha", "alpha_weighted", "log_alpha_norm", "log_spectral_norm",
                   "stable_rank", "mp_softrank")


@dataclasses.dataclass(frozen=True)
class LayerSpectrum:
    """One analysed layer: its eigenvalues and every metric computed from them.

    Attributes:
      name: the layer's path in the parameter tree.
      metrics: the layer's row (plain Python values): ``alpha`` (the tail exponent), ``xmin``,
        ``D``, ``num_pl_spikes`` (tail size), ``alpha_weighted``, ``log_norm``,
        ``log_spectral_norm``, ``log_alpha_norm``, ``stable_rank``, ``entropy``, ``N``, ``M``,
        ``Q`` (aspect ratio), ``status``, the bootstrap interval (default preset), the MP-fit
        and randomisation columns when asked for; see docs/measures/heavy_tail.md.
      evals: the ESD, sorted ascending (eigenvalues of $W^\\top W$ over the layer's matrices).
      rand_evals: the randomised ESD (pooled over replicas) when ``randomize=True``, else None.
    """

    name: str
    metrics: Mapping[str, Any]
    evals: np.ndarray
    rand_evals: np.ndarray | None = None

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


@dataclasses.dataclass(frozen=True)
class HeavyTail:
    """Heavy-tailed self-regularisation metrics of a network (`heavy_tail`).

    Attributes:
      layers: the analysed layers, in the order the network applies them.
      skipped: ``(name, reason)`` for every weight array that was not analysed (never silent).
      preset: ``"genbounds"`` or ``"weightwatcher"``.
      options: the options that ran (plain values).
      notes: conventions that ran.
    """

    layers: tuple[LayerSpectrum, ...]
    skipped: tuple[tuple[str, str], ...]
    preset: str
    options: Mapping[str, Any]
    notes: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> LayerSpectrum:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(f"no analysed layer {name!r}; analysed: {[x.name for x in self.layers]}")

    @property
    def num_failed(self) -> int:
        """Layers whose power-law fit failed."""
        return sum(1 for x in self.layers if x.metrics["status"] != "success")

    def summary(self) -> dict[str, float]:
        """Unweighted means over layers of ``log_norm``, ``alpha``, ``alpha_weighted``,
        ``log_alpha_norm``, ``log_spectral_norm``, ``stable_rank`` (and ``mp_softrank`` after an
        MP fit).

        Under ``preset="weightwatcher"`` every analysed layer counts, a failed fit with its
        ``alpha = -1`` included, as WeightWatcher 0.7.7's ``get_summary`` does. Under the
        default preset the alpha-based means are over the layers whose fit succeeded;
        ``num_layers`` and ``num_failed`` say how many layers there were and how many failed.
        """
        out: dict[str, float] = {}
        ww = self.preset == "weightwatcher"
        for m in SUMMARY_METRICS:
            rows = [x.metrics for x in self.layers if m in x.metrics]
            if not rows:
                continue
            if not ww and m in ("alpha", "alpha_weighted", "log_alpha_norm"):
                rows = [r for r in rows if r["status"] == "success"]
            vals = [float(r[m]) for r in rows]
            if not ww:
                vals = [v for v in vals if math.isfinite(v)]
            out[m] = _mean(vals)
        out["num_layers"] = float(len(self.layers))
        out["num_failed"] = float(self.num_failed)
        return out

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per analysed layer (``layer`` first, then its metrics)."""
        return [{"layer": x.name, **dict(x.metrics)} for x in self.layers]

    def to_pandas(self) -> Any:
        """The records of `to_records` as a ``pandas.DataFrame`` (one row per layer).

        Raises:
          ImportError: pandas is not installed (``pip install 'genbounds[pandas]'``).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("HeavyTail.to_pandas needs pandas: pip install "
                              "'genbounds[pandas]' (or use HeavyTail.to_records)") from None
        return pd.DataFrame.from_records(self.to_records())

    def to_text(self) -> str:
        """A plain-text table of the main columns and the summary."""
        cols = ("alpha", "xmin", "D", "num_pl_spikes", "alpha_weighted", "log_spectral_norm",
                "stable_rank", "status")
        head = ("layer", *cols)
        rows = [head]
        for x in self.layers:
            cells = [x.name]
            for c in cols:
                v = x.metrics.get(c)
                cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
            rows.append(tuple(cells))
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [f"heavy_tail (preset {self.preset!r}): {len(self.layers)} layers"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines += [f"skipped {n}: {why}" for n, why in self.skipped]
        s = self.summary()
        lines.append("summary: " + ", ".join(f"{k} = {v:.4g}" for k, v in s.items()))
        return "\n".join(lines)

    __str__ = to_text

    def plot(self, layer: str | int = 0, ax: Any = None) -> Any:
        """The ESD of one layer on log-log axes with its fitted power-law tail (from
        ``xmin``) and, after an MP fit, the Marchenko-Pastur bulk.

        Args:
          layer: the layer's name or its index in `layers`.
          ax: a matplotlib axis (a new figure when None).

        Returns:
          The axis.
        """
        import matplotlib.pyplot as plt

        from genbounds.spectra._marchenko_pastur import mp_density

        x = self.layers[layer] if isinstance(layer, int) else self[layer]
        if ax is None:
            _, ax = plt.subplots(figsize=(5.5, 4))
        ev = x.evals[x.evals > 1e-5]
        bins = np.logspace(np.log10(ev.min()), np.log10(ev.max()), 60)
        ax.hist(ev, bins=bins, density=True, color="tab:blue", alpha=0.6, label="ESD")
        m = x.metrics
        if m["status"] == "success" and m["alpha"] > 1:
            a, xmin = float(m["alpha"]), float(m["xmin"])
            frac = float(m["num_pl_spikes"]) / ev.size
            t = np.logspace(np.log10(xmin), np.log10(ev.max()), 100)
            ax.plot(t, frac * (a - 1) / xmin * (t / xmin) ** (-a), "r--",
                    label=f"power law, alpha = {a:.2f}")
            ax.axvline(xmin, color="r", lw=0.8, ls=":")
        if "sigma_mp" in m and math.isfinite(float(m["sigma_mp"])) and m["Q"] != 1:
            s2 = x.evals.size / float(np.sum(x.evals))  # mean-1 rescaling of the MP fit
            t = np.logspace(np.log10(ev.min()), np.log10(ev.max()), 400)
            ax.plot(t, mp_density(t * s2, Q=float(m["Q"]), sigma=float(m["sigma_mp"])) * s2,
                    color="k", lw=1, label="Marchenko-Pastur bulk")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("eigenvalue of W^T W")
        ax.set_ylabel("density")
        ax.set_title(x.name, fontsize=9)
        ax.legend(fontsize=8)
        return ax
