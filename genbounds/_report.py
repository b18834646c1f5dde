"""Every bound and measure for one network in one call: `report`."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from genbounds.bounds._golowich import golowich
from genbounds.bounds._gonon import gonon
from genbounds.bounds._rademacher import rademacher_bound
from genbounds.bounds._spectral import spectral
from genbounds.bounds._vc import vc
from genbounds.core._bound import Bound
from genbounds.core._checks import (
    NotBoundable,
    check_array,
    check_delta,
    check_finite_tree,
    check_float_array,
    check_int,
    check_key,
    check_labels,
    check_margin,
    check_no_none_leaves,
    check_same_length,
    check_unit_interval,
)
from genbounds.losses._margins import margins
from genbounds.measures._evidence import laplace_evidence
from genbounds.measures._flatness import _sigma_prime
from genbounds.measures._hessian_spectrum import hessian_top_eigenvalues
from genbounds.measures._lipschitz import lipschitz
from genbounds.measures._norm_measures import norm_measures
from genbounds.measures._rademacher import rademacher
from genbounds.network._chain import verify_chain
from genbounds.network._network import as_network
from genbounds.pacbayes._dziugaite_roy import dziugaite_roy
from genbounds.pacbayes._neyshabur import pac_bayes
from genbounds.spectra._heavy_tail import heavy_tail_measures


def _error(logits: Any, y: np.ndarray) -> float:
    """0-1 error of the argmax prediction (a single logit: positive means class 1)."""
    m = np.asarray(margins(logits, y))
    return float(np.mean(m <= 0.0))


def _rademacher_entry(est: Any, *, n: int, delta: float, train_error: float) -> Bound:
    """The Monte-Carlo Rademacher complexity of a class, as a measure.

    Nothing ties the trained network to the class the estimate is about (and for a network
    class the suprema are lower estimates), so the Rademacher bound is given only as a term,
    ``bound_if_in_class``: what `rademacher_bound` would give *if* the predictor belonged to a
    class whose 0-1 loss class had this complexity, with the estimate's deviation charged to
    delta/2. The value of the entry is None: it is not a certified bound.
    """
    r_delta = delta / 2.0
    upper = est.upper(1.0 - r_delta, allow_lower_estimate=True)
    b = rademacher_bound(upper, n=n, delta=delta, train_loss=train_error,
                         rademacher_delta=r_delta, estimated=True)
    notes = (f"Monte-Carlo estimate over {est.num_draws} sign vectors: {float(est.value):.4g} "
             f"(stderr {float(est.stderr):.2g}); a measure, not a bound on this network",)
    if est.lower_estimate:
        notes += ("suprema found by training: a LOWER estimate of the complexity; about 1 for "
                  "a class that fits random signs (Zhang et al. 2017), which makes any "
                  "Rademacher bound for it vacuous",)
    terms = {"estimate": est.value, "stderr": est.stderr, "upper_confidence": upper,
             "lower_estimate": bool(est.lower_estimate), "num_draws": est.num_draws,
             "bound_if_in_class": b.value, "rademacher_delta": r_delta}
    return Bound(name="rademacher", value=None, complexity=float(est.value), terms=terms, n=n,
                 delta=delta, estimated=True, reference=b.reference, notes=notes)


def _fmt(x: Any) -> str:
    if x is None:
        return "-"
    v = float(x)
    if math.isnan(v):
        return "nan"
    if v != 0.0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4f}"


@dataclasses.dataclass(frozen=True)
class Report:
    """The bounds and measures of one network, with the errors they bound.

    Attributes:
      bounds: results whose ``value`` bounds the test error (each at its own ``delta``).
      measures: complexity measures (``value=None``).
      skipped: ``(name, reason)`` for every entry that does not apply to this network.
      seconds: wall time of each entry, by name.
      train_error, test_error: the 0-1 errors of the network (test_error None without test
        data).
      n: number of training examples; delta: the confidence each bound was asked for.
    """

    bounds: tuple[Bound, ...]
    measures: tuple[Bound, ...]
    skipped: tuple[tuple[str, str], ...]
    seconds: Mapping[str, float]
    train_error: float
    test_error: float | None
    n: int
    delta: float

    def ranked(self) -> list[Bound]:
        """The bounds from tightest (smallest value) to loosest."""
        return sorted(self.bounds, key=lambda b: float(b.value))

    def to_records(self) -> list[dict[str, Any]]:
        """One plain dict per bound and measure (`Bound.to_dict` plus ``seconds``)."""
        out = []
        for b in (*self.ranked(), *self.measures):
            d = b.to_dict()
            d["kind"] = "measure" if b.value is None else "bound"
            d["seconds"] = self.seconds.get(b.name)
            out.append(d)
        return out

    def to_pandas(self) -> Any:
        """The records of `to_records` as a ``pandas.DataFrame``, one row per bound and measure.

        Columns: ``name``, ``kind`` (``"bound"`` or ``"measure"``), ``value``, ``complexity``,
        ``vacuous``, ``estimated``, ``n``, ``delta``, ``seconds``, ``reference``, ``terms``,
        ``notes``. Bounds come first, tightest first, as in `ranked`.

        Raises:
          ImportError: pandas is not installed (``pip install 'genbounds[pandas]'``).
        """
        try:
            import pandas as pd
        except ImportError:
            raise ImportError("Report.to_pandas needs pandas: pip install 'genbounds[pandas]' "
                              "(or use Report.to_records)") from None
        records = self.to_records()
        first = ["name", "kind", "value", "complexity", "vacuous", "estimated", "n", "delta",
                 "seconds"]
        cols = first + sorted({k for r in records for k in r} - set(first))
        return pd.DataFrame.from_records(records, columns=cols)

    def _rows(self) -> list[tuple[str, str, str, str, str]]:
        rows = []
        for b in self.ranked():
            flag = "vacuous" if b.vacuous else "non-vacuous"
            if b.estimated:
                flag += ", estimated"
            rows.append((b.name, _fmt(b.value), _fmt(b.complexity), flag,
                         f"{self.seconds.get(b.name, float('nan')):.2f}"))
        for m in self.measures:
            rows.append((m.name, "-", _fmt(m.complexity), "measure",
                         f"{self.seconds.get(m.name, float('nan')):.2f}"))
        return rows

    def _header(self) -> str:
        test = "n/a" if self.test_error is None else f"{self.test_error:.4f}"
        return (f"n = {self.n}, delta = {self.delta:g}, train error = {self.train_error:.4f}, "
                f"test error = {test}")

    def to_markdown(self) -> str:
        """A Markdown table, bounds ranked, then measures and skipped entries."""
        lines = [self._header(), "", "| name | value | complexity | status | seconds |",
                 "|---|---|---|---|---|"]
        lines += ["| " + " | ".join(r) + " |" for r in self._rows()]
        if self.skipped:
            lines += ["", "Skipped:"] + [f"- {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)

    def to_text(self) -> str:
        """A plain-text table."""
        rows = [("name", "value", "complexity", "status", "seconds"), *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = [self._header()]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        lines += [f"skipped {name}: {why}" for name, why in self.skipped]
        return "\n".join(lines)

    __str__ = to_text

    def plot(self, ax: Any = None) -> Any:
        """Bar chart of the bounds (log scale) with the measured test error as a line."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3.5))
        ranked = self.ranked()
        ax.bar([b.name for b in ranked], [float(b.value) for b in ranked], color="tab:blue")
        if self.test_error is not None:
            ax.axhline(max(self.test_error, 1e-4), color="tab:red", label="test error")
        ax.axhline(1.0, color="gray", ls="--", label="vacuous (1)")
        ax.set_yscale("log")
        ax.set_ylabel("bound on test error")
        ax.legend()
        return ax


@dataclasses.dataclass(frozen=True)
class ReportOptions:
    """The options of `report` beyond the network, the data, ``delta`` and ``key``.

    Pass one as ``report(..., options=ReportOptions(...))``, or name its fields as keywords of
    `report` (``report(..., margin=0.5)``); keywords given beside ``options`` replace its
    fields. The defaults are `report`'s. The first four say how the default entries are
    computed; the others add opt-in entries (each adds work; none runs by default).

    Attributes:
      margin, margin_quantile: the margin of the margin bounds (default: the 10% quantile of
        the training margins; with ``margin`` given, the quantile is not used).
      input_bound: $B$ for `pac_bayes` (see there).
      layers: explicit layer order (see `read_layers`).
      rademacher_class: optional `HypothesisClass` (e.g. a `NetworkClass` of the same
        architecture with one output) whose Rademacher complexity on ``X`` is estimated by
        Monte Carlo (`rademacher`, ``rademacher_draws`` sign vectors). It is reported as a
        measure (Zhang et al. 2017: about 1 for a class that fits random signs), with the
        `rademacher_bound` it would give in ``terms["bound_if_in_class"]``: nothing checks that
        the network belongs to the class, so it is not reported as a bound.
      rademacher_draws: number of sign vectors for `rademacher_class` (>= 2).
      rademacher_estimate: a `RademacherEstimate` already computed on ``X`` (it does not
        depend on the labels, so a label-noise sweep computes it once), instead of
        `rademacher_class`.
      flatness: add the flatness measures that finish in seconds on small nets: the top Hessian
        eigenvalue (`hessian_top_eigenvalues`, Lanczos) and Jiang et al.'s PAC-Bayes flatness
        (`pac_bayes_flatness`).
      evidence_prior: add the Laplace log-evidence (`laplace_evidence`, Gauss-Newton curvature,
        which is positive definite) with this prior precision (the net should be a minimum of
        the L2-regularised loss for it to mean anything; tens of seconds for 1e5 weights).
      dziugaite_roy_options: run `dziugaite_roy` (needs `init_params`; minutes, so opt-in)
        with these keyword options, e.g. ``{"steps": 3000, "num_mc_samples": 1000}``. Its value
        bounds the error of the stochastic network (the optimised posterior), at its own delta.
      extra: more entries, name -> zero-argument function returning a `Bound`.
      robustness: add the robustness entry (opt-in; attacks take seconds): keyword options of
        `genbounds.robustness`, at least ``eps`` (the grid), e.g. ``{"eps": [0, 0.5, 1],
        "norm": "l2", "box": (0, 1)}``; on the test set when given, else the training set.
        A measure: ``complexity`` the median certified radius, ``terms`` the curve (clean, PGD
        and certified accuracy against eps).

    Examples:
      >>> opts = ReportOptions(margin=0.5, flatness=True)
      >>> opts.margin_quantile, opts.rademacher_draws
      (0.1, 8)
    """

    margin: float | None = None
    margin_quantile: float | None = 0.1
    input_bound: float | None = None
    layers: Sequence[str] | None = None
    rademacher_class: Any = None
    rademacher_draws: int = 8
    rademacher_estimate: Any = None
    flatness: bool = False
    evidence_prior: float | None = None
    dziugaite_roy_options: Mapping[str, Any] | None = None
    extra: Mapping[str, Callable[[], Bound]] | None = None
    robustness: Mapping[str, Any] | None = None


_OPTION_NAMES = tuple(f.name for f in dataclasses.fields(ReportOptions))


def _report_options(options: Any, values: Mapping[str, Any]) -> ReportOptions:
    """`options` (default: `ReportOptions()`) with the keyword ``values`` in place of its fields;
    a name that is no field is refused, named as Python names an unexpected keyword."""
    for name in values:
        if name not in _OPTION_NAMES:
            raise TypeError(f"report() got an unexpected keyword argument {name!r} (the options "
                            f"it takes by name are the fields of ReportOptions: "
                            f"{', '.join(_OPTION_NAMES)})")
    if options is None:
        options = ReportOptions()
    elif not isinstance(options, ReportOptions):
        raise TypeError(f"options must be a ReportOptions, got {type(options).__name__}")
    return dataclasses.replace(options, **values) if values else options


def _check_report_args(params: Any, *, init_params: Any, apply_fn: Any, margin: Any,
                       margin_quantile: Any, key: Any, rademacher_draws: Any,
                       rademacher_class: Any) -> None:
    """The caller's arguments, checked before any bound runs (their errors must raise, not
    turn into skipped entries)."""
    if not callable(apply_fn):
        raise TypeError(f"apply_fn must be callable (apply_fn(params, X) -> logits), got "
                        f"{type(apply_fn).__name__}")
    check_no_none_leaves(params, "params")
    if init_params is not None:
        check_no_none_leaves(init_params, "init_params")
        p_leaves = jax.tree_util.tree_leaves_with_path(params)
        i_leaves = jax.tree_util.tree_leaves_with_path(init_params)
        if jax.tree_util.tree_structure(params) != jax.tree_util.tree_structure(init_params):
            raise ValueError(
                "init_params must have the structure of params (the same network at "
                f"initialisation), got {len(i_leaves)} arrays against {len(p_leaves)}: "
                f"{sorted(jax.tree_util.keystr(p) for p, _ in i_leaves)[:4]} vs "
                f"{sorted(jax.tree_util.keystr(p) for p, _ in p_leaves)[:4]}"
            )
        for (path, a), (_, b) in zip(p_leaves, i_leaves, strict=True):
            if np.shape(a) != np.shape(b):
                raise ValueError(
                    f"init_params{jax.tree_util.keystr(path)} has shape {np.shape(b)}, but "
                    f"params{jax.tree_util.keystr(path)} has {np.shape(a)}: init_params must be "
                    "the same network at initialisation"
                )
        check_finite_tree(init_params, "init_params")
    if margin is not None:
        check_margin(margin)
    elif margin_quantile is not None:
        check_unit_interval(margin_quantile, "margin_quantile", closed=False)
    if key is not None:
        check_key(key)
    if rademacher_class is not None:
        check_int(rademacher_draws, "rademacher_draws", minimum=2)


def report(
    params: Any,
    *,
    X: Any,
    y: Any,
    apply_fn: Callable[[Any, Any], Any],
    X_test: Any = None,
    y_test: Any = None,
    init_params: Any = None,
    delta: float = 0.05,
    key: jax.Array | None = None,
    options: ReportOptions | None = None,
    **option_values: Any,
) -> Report:
    r"""Every bound and measure genbounds has, for one trained network, in one call.

    Bounds (each an upper bound on the 0-1 test error with probability at least
    $1-\delta$ on its own; they are compared side by side, not combined): `vc`, `spectral`
    (Bartlett et al. 2017, $M_i = 0$), `pac_bayes` (Neyshabur et al. 2018, prior at 0 and, with
    `init_params`, at the initialisation), `golowich` (Theorems 1 and 2), `gonon` (Gonon et al.
    2024: the path-norm bound for DAG ReLU networks, residual and pooling ones included).
    Measures: the spectral
    complexity and the norm measures of `norm_measures` (path norms included) (distance from
    initialisation with `init_params`), the heavy-tailed ESD summary of `heavy_tail`
    (``ht_alpha``, ``ht_alpha_weighted``, ``ht_log_alpha_norm``, ...; Martin & Mahoney). Entries
    that do not apply (e.g. a bound implemented for dense layers on a CNN) are listed in ``skipped`` with the reason, never dropped
    silently.

    Args:
      params: the trained network's parameters.
      X, y: the training set the bounds are about (n examples).
      apply_fn: ``apply_fn(params, X) -> logits``.
      X_test, y_test: optional held-out data, for the measured test error.
      init_params: the parameters at initialisation (for the distance-from-init variants).
      delta: confidence of each bound, in (0, 1).
      key: PRNG key for the certified spectral norms (and the estimates that draw).
      options: a `ReportOptions`: the margin, the layer order and the opt-in entries (the
        Rademacher estimate, flatness, evidence, Dziugaite-Roy, robustness, extra entries).
      **option_values: fields of `ReportOptions` by name (``margin=0.5``, ``flatness=True``,
        ...), replacing those of `options`; any other name is refused.

    Returns:
      A `Report`: ``.ranked()``, ``.to_markdown()``, ``.to_text()``, ``.to_records()``,
      ``.plot()``.

    Examples:
      >>> import numpy as np
      >>> params = {"Dense_0": {"kernel": np.eye(2)}, "Dense_1": {"kernel": np.eye(2)}}
      >>> X = np.array([[1.0, 0.0], [0.0, 1.0]] * 50); y = np.array([0, 1] * 50)
      >>> f = lambda p, x: x @ p["Dense_0"]["kernel"] @ p["Dense_1"]["kernel"]
      >>> r = report(params, X=X, y=y, apply_fn=f)
      >>> r.train_error, all(b.value >= r.train_error for b in r.bounds)
      (0.0, True)
      >>> same = report(params, X=X, y=y, apply_fn=f, options=ReportOptions(margin_quantile=0.1))
      >>> [b.value for b in same.bounds] == [b.value for b in r.bounds]
      True

    Raises:
      TypeError: a keyword that is neither a parameter nor a field of `ReportOptions` (named),
        an `options` that is not a `ReportOptions`, a non-callable `apply_fn`.
      ValueError: data, labels or options out of range (named).
    """
    opts = _report_options(options, option_values)
    margin, margin_quantile, input_bound, layers = (
        opts.margin, opts.margin_quantile, opts.input_bound, opts.layers)
    rademacher_class, rademacher_draws, rademacher_estimate = (
        opts.rademacher_class, opts.rademacher_draws, opts.rademacher_estimate)
    flatness, evidence_prior, dziugaite_roy_options, extra, robustness = (
        opts.flatness, opts.evidence_prior, opts.dziugaite_roy_options, opts.extra,
        opts.robustness)
    delta = check_delta(delta)
    X = check_float_array(X, "X")
    y = check_labels(y, "y")
    n = check_same_length(X, y, "X", "y")
    _check_report_args(params, init_params=init_params, apply_fn=apply_fn, margin=margin,
                       margin_quantile=margin_quantile, key=key,
                       rademacher_draws=rademacher_draws, rademacher_class=rademacher_class)
    logits = apply_fn(params, X)
    check_array(logits, "apply_fn(params, X)", ndim=(1, 2))
    k = 2 if np.ndim(logits) == 1 else int(np.shape(logits)[1])
    check_same_length(X, logits, "X", "apply_fn(params, X)")
    # The network is read once, from its function (traced and verified against apply_fn), and
    # every bound below reads that one record; read by names (layers=), it must reproduce the
    # logits.
    net = as_network(params, apply_fn=None if layers is not None else apply_fn,
                     X=None if layers is not None else X, layers=layers, caller="report")
    if net.structure_assumed:
        verify_chain(net, np.asarray(X, np.float64).reshape(n, -1), logits, "report")
    check_labels(y, "y", num_classes=k)
    train_error = _error(logits, y)
    test_error = None
    if X_test is not None or y_test is not None:
        if X_test is None or y_test is None:
            raise ValueError("report: give both X_test and y_test, or neither")
        X_test = check_float_array(X_test, "X_test")
        if np.shape(X_test)[1:] != np.shape(X)[1:]:
            raise ValueError(
                f"X_test must have the per-example shape of X, {np.shape(X)[1:]}, "
                f"got {np.shape(X_test)[1:]}"
            )
        y_test = check_labels(y_test, "y_test", num_classes=k)
        check_same_length(X_test, y_test, "X_test", "y_test")
        test_logits = apply_fn(params, X_test)
        check_array(test_logits, "apply_fn(params, X_test)", ndim=(1, 2))
        test_error = _error(test_logits, y_test)

    common = dict(X=X, y=y, logits=logits, margin=margin,
                  margin_quantile=None if margin is not None else margin_quantile,
                  delta=delta)
    entries: dict[str, Callable[[], Bound | dict[str, Bound]]] = {
        "vc": lambda: vc(net, n=n, delta=delta, train_error=train_error),
        "spectral": lambda: spectral(net, key=key, **common),
        "pac_bayes": lambda: pac_bayes(net, input_bound=input_bound, key=key, **common),
        "golowich": lambda: golowich(net, **common),
        "golowich_l1inf": lambda: golowich(net, norm="l1inf", **common),
        "gonon": lambda: gonon(net, **common),
        "norms": lambda: norm_measures(net, reference=init_params, key=key),
        "lipschitz": lambda: lipschitz(net, key=key),
        # Martin & Mahoney's ESD summary: needs no data and no structure (bootstrap off here)
        "heavy_tail": lambda: heavy_tail_measures(params, key=key, bootstrap=0),
    }
    if init_params is not None:
        entries["spectral_init"] = lambda: spectral(net, reference=init_params, key=key,
                                                    **common)
        entries["pac_bayes_init"] = lambda: pac_bayes(net, reference=init_params,
                                                      input_bound=input_bound, key=key, **common)
    if rademacher_class is not None and rademacher_estimate is None:
        rademacher_estimate = rademacher(
            rademacher_class, np.asarray(X, np.float64).reshape(n, -1),
            num_draws=rademacher_draws, key=jax.random.key(1) if key is None else key)
    if rademacher_estimate is not None:
        if rademacher_estimate.n != n:
            raise ValueError(f"rademacher_estimate was computed on {rademacher_estimate.n} "
                             f"points, but X has {n}")
        entries["rademacher"] = lambda: _rademacher_entry(
            rademacher_estimate, n=n, delta=delta, train_error=train_error)
    if flatness:
        fkey = jax.random.key(2) if key is None else key
        entries["hessian_top"] = lambda: hessian_top_eigenvalues(
            params, X=X, y=y, apply_fn=apply_fn, key=fkey
        )
        # The unperturbed logits computed above order the data and give the base error.
        entries["pac_bayes_flatness"] = lambda: _sigma_prime(
            params, X=X, y=y, apply_fn=apply_fn, key=fkey, search_depth=8, logits=logits)
    if evidence_prior is not None:
        entries["laplace_evidence"] = lambda: laplace_evidence(
            params, X=X, y=y, apply_fn=apply_fn, prior_precision=evidence_prior,
            curvature="ggn", key=jax.random.key(3) if key is None else key)
    if dziugaite_roy_options is not None:
        if init_params is None:
            raise ValueError("report: dziugaite_roy_options needs init_params (the prior mean)")
        opts = {"key": jax.random.key(4) if key is None else key, **dziugaite_roy_options}
        entries["dziugaite_roy"] = lambda: dziugaite_roy(
            params, X=X, y=y, apply_fn=apply_fn, init_params=init_params, **opts
        )[0]
    if robustness is not None:
        from genbounds.adversarial._curve import robustness_measure

        rx, ry = (X_test, y_test) if X_test is not None else (X, y)
        entries["robustness"] = lambda: robustness_measure(params, apply_fn=apply_fn, X=rx,
                                                           y=ry, **robustness)
    if extra:
        entries.update(extra)

    bounds, measures, skipped, seconds = [], [], [], {}
    for name, fn in entries.items():
        start = time.perf_counter()
        try:
            out = fn()
        except (NotBoundable, NotImplementedError) as e:
            # Only an entry that does not apply to this network is skipped; any other error is
            # the caller's (or a bug) and propagates: a report never hides it.
            skipped.append((name, str(e)))
            continue
        elapsed = time.perf_counter() - start
        results = out.values() if isinstance(out, Mapping) else [out]
        for b in results:
            label = name if isinstance(out, Bound) else b.name
            if label != b.name:
                b = dataclasses.replace(b, name=label)
            seconds[label] = elapsed / max(len(results), 1)
            (measures if b.value is None else bounds).append(b)
    return Report(bounds=tuple(bounds), measures=tuple(measures), skipped=tuple(skipped),
                  seconds=seconds, train_error=train_error, test_error=test_error, n=n,
                  delta=delta)
