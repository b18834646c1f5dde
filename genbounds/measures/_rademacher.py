r"""Monte-Carlo estimate of the empirical Rademacher complexity, batched, sharded, multi-host.

The empirical Rademacher complexity of a class $H$ on the data $x_1, \dots, x_n$ (the
normalisation of Bartlett, Foster & Telgarsky 2017, arXiv:1706.08498, Section 3) is

$$\hat{\mathfrak R}_S(H) = \mathbb E_\sigma \sup_{h \in H} \frac1n \sum_{i=1}^n \sigma_i h(x_i),$$

with $\sigma_i$ i.i.d. uniform on $\{-1, +1\}$. `rademacher` estimates it by the mean over $K$
independent sign vectors. The sign vector of draw $k$ is a pure function of
``(key, k)``, so the draws do not depend on the strategy, the chunking, the number of devices or
the number of processes. See docs/rademacher_mc.md for the derivations and the multi-host launch.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from genbounds.core._bound import _plain
from genbounds.core._checks import check_array, check_choice, check_n, check_unit_interval

from ._hypotheses import HypothesisClass, KernelBall, LinearBall, NetworkClass, _check_hypotheses

_STRATEGIES = ("auto", "loop", "vmap", "sharded")
_AXIS = "draws"
# Working memory one vmapped chunk (per device) may use when chunk_size is not given.
_MEMORY_BUDGET = 512 * 2**20


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class RademacherEstimate:
    r"""A Monte-Carlo estimate of an empirical Rademacher complexity, with its uncertainty.

    Attributes:
      value: $\hat R = (1/K)\sum_k s_k$, the mean of the per-draw values
        $s_k = \sup_h (1/n)\sum_i \sigma^{(k)}_i h(x_i)$ (a scalar `jax.Array`).
      stderr: the sample standard deviation of the $s_k$ (ddof = 1) over $\sqrt K$.
      draws: the per-draw values $s_k$, shape (K,), in draw order $k = 0..K-1$.
      interval: ``(lo, hi)``, the two-sided interval at level ``confidence`` from the
        concentration inequality named in ``concentration`` (not clipped to [0, ∞)).
      num_draws: K.
      n: the number of points.
      confidence: the level of ``interval``, $1 - \delta'$.
      lower_estimate: True when each $s_k$ is only a LOWER estimate of the supremum (the network
        class, whose supremum is approximated by training). Then the value estimates a lower
        bound of the Rademacher complexity, and the interval covers the mean of the trained
        values, not the complexity itself.
      concentration: ``"mcdiarmid"`` (exact suprema) or ``"hoeffding"`` (trained suprema).
      deviation_scale: $c$ such that the two-sided half-width is $c\sqrt{2\ln(2/\delta')/K}$:
        $c = \sqrt{\sum_i b_i^2}/n$ for McDiarmid, $c = \max_i b_i$ for Hoeffding, with
        $b_i = \sup_h |h(x_i)|$.
      strategy: the strategy that ran (``"loop"``, ``"vmap"`` or ``"sharded"``).
      chunk_size: draws per device per batched step (None for ``"loop"``).
      num_devices: local devices the draws were spread over.
      num_processes: processes the draws were spread over.
      hypotheses: a description of the class.
      estimated: always True: a Monte-Carlo estimate, not a certified number.
    """

    value: jax.Array
    stderr: jax.Array
    draws: jax.Array
    interval: tuple[jax.Array, jax.Array]
    num_draws: int = dataclasses.field(metadata=dict(static=True))
    n: int = dataclasses.field(metadata=dict(static=True))
    confidence: float = dataclasses.field(metadata=dict(static=True))
    lower_estimate: bool = dataclasses.field(metadata=dict(static=True))
    concentration: str = dataclasses.field(metadata=dict(static=True))
    deviation_scale: float = dataclasses.field(metadata=dict(static=True))
    strategy: str = dataclasses.field(metadata=dict(static=True))
    chunk_size: int | None = dataclasses.field(metadata=dict(static=True))
    num_devices: int = dataclasses.field(metadata=dict(static=True))
    num_processes: int = dataclasses.field(metadata=dict(static=True))
    hypotheses: str = dataclasses.field(metadata=dict(static=True))
    estimated: bool = dataclasses.field(default=True, metadata=dict(static=True))

    def halfwidth(self, confidence: float | None = None) -> float:
        r"""Two-sided half-width $c\sqrt{2\ln(2/\delta')/K}$ at level ``confidence`` = 1 − δ'."""
        conf = self.confidence if confidence is None else confidence
        d = 1.0 - check_unit_interval(conf, "confidence", closed=False)
        return self.deviation_scale * math.sqrt(2.0 * math.log(2.0 / d) / self.num_draws)

    def upper(
        self, confidence: float | None = None, *, allow_lower_estimate: bool = False
    ) -> float:
        r"""One-sided upper confidence limit $\hat R + c\sqrt{2\ln(1/\delta')/K}$.

        With probability at least ``confidence`` = 1 − δ' over the sign vectors, the empirical
        Rademacher complexity is at most this number (for exact suprema: McDiarmid, one-sided).
        This is what a bound that charges the estimate's uncertainty to its δ consumes.

        Args:
          confidence: 1 − δ' in (0, 1); defaults to ``self.confidence``.
          allow_lower_estimate: for a class whose suprema are only lower estimates, the number
            bounds the mean of the trained values, NOT the Rademacher complexity; set True to
            get it anyway (e.g. to show that even the lower estimate makes a bound vacuous).

        Raises:
          ValueError: ``lower_estimate`` is True and ``allow_lower_estimate`` is False, or
            confidence outside (0, 1).
        """
        if self.lower_estimate and not allow_lower_estimate:
            raise ValueError(
                "upper(): the per-draw values of this estimate are LOWER estimates of the "
                "supremum (trained network), so value + deviation is not an upper confidence "
                "limit on the Rademacher complexity; pass allow_lower_estimate=True to get the "
                "limit on the mean of the trained values"
            )
        conf = self.confidence if confidence is None else confidence
        d = 1.0 - check_unit_interval(conf, "confidence", closed=False)
        dev = self.deviation_scale * math.sqrt(2.0 * math.log(1.0 / d) / self.num_draws)
        return float(self.value) + dev

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values (JSON-ready); ``draws`` becomes a list."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def __str__(self) -> str:
        lo, hi = (float(v) for v in self.interval)
        kind = " (lower estimate of the sup)" if self.lower_estimate else ""
        return (
            f"rademacher = {float(self.value):.6g} ± {float(self.stderr):.3g} (stderr), "
            f"{100 * self.confidence:g}% {self.concentration} interval [{lo:.6g}, {hi:.6g}], "
            f"K={self.num_draws}, n={self.n}, {self.hypotheses}{kind}, strategy={self.strategy}"
        )


# --------------------------------------------------------------------------------------------
# One draw, batched draws, sharded draws
# --------------------------------------------------------------------------------------------


def _keys(key: jax.Array, k: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Draw k's sign key and class key: split(fold_in(key, k))."""
    ks, kh = jax.random.split(jax.random.fold_in(key, k))
    return ks, kh


class _Program:
    """A class as a static `jit` argument: equal (shares compiled code) when the trace keys are."""

    __slots__ = ("hyp", "key")

    def __init__(self, hyp: HypothesisClass):
        self.hyp = hyp
        self.key = (type(hyp), hyp.trace_key())

    def __hash__(self):
        return hash(self.key)

    def __eq__(self, other):
        return isinstance(other, _Program) and self.key == other.key


def _draw(prog: _Program, state: Any, key: jax.Array, k: jax.Array) -> jax.Array:
    X = state["X"]
    ks, kh = _keys(key, k)
    sigma = jax.random.rademacher(ks, (X.shape[0],), dtype=X.dtype)
    return prog.hyp.sup(state, sigma, kh)


def _batch(prog, state, key, ks):
    return jax.vmap(functools.partial(_draw, prog), in_axes=(None, None, 0))(state, key, ks)


_single = jax.jit(_draw, static_argnums=0)
_batched = jax.jit(_batch, static_argnums=0)


@functools.lru_cache(maxsize=32)
def _sharded_fn(prog: _Program, mesh: Mesh):
    # Each device runs exactly the program `_batched` runs on one chunk, on its own chunk of
    # draw indices; no collective inside. Same chunk shape => bitwise the same per-draw values.
    body = functools.partial(_batch, prog)
    return jax.jit(
        # check_vma=False: the body has no collectives, and a user's class need not annotate
        # which of its values vary across devices (e.g. a scan carry started from a constant).
        jax.shard_map(
            body, mesh=mesh, in_specs=(P(), P(), P(_AXIS)), out_specs=P(_AXIS), check_vma=False
        )
    )


def _pad(idx: np.ndarray, multiple: int) -> np.ndarray:
    """Pads the draw indices with the next indices (their values are computed and dropped)."""
    m = -(-len(idx) // multiple) * multiple
    if m == len(idx):
        return idx
    start = int(idx[-1]) + 1
    return np.concatenate([idx, np.arange(start, start + m - len(idx), dtype=idx.dtype)])


def _run_loop(prog, state, key, idx):
    return jnp.stack([_single(prog, state, key, np.uint32(k)) for k in idx])


def _run_vmap(prog, state, key, idx, chunk):
    full = _pad(idx, chunk)
    out = [_batched(prog, state, key, full[i : i + chunk]) for i in range(0, len(full), chunk)]
    return jnp.concatenate(out)[: len(idx)]


def _run_sharded(prog, state, key, idx, chunk, devices):
    mesh = Mesh(np.asarray(devices), (_AXIS,))
    step = chunk * len(devices)
    full = _pad(idx, step)
    fn = _sharded_fn(prog, mesh)
    replicated = NamedSharding(mesh, P())
    state, key = jax.device_put((state, key), replicated)
    split = NamedSharding(mesh, P(_AXIS))
    out = [
        fn(state, key, jax.device_put(full[i : i + step], split)) for i in range(0, len(full), step)
    ]
    return jnp.asarray(np.concatenate([np.asarray(o) for o in out])[: len(idx)])


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _check_key(key: Any) -> jax.Array:
    if isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key must be a single PRNG key, got a key array of shape {key.shape}")
        return key
    if isinstance(key, (jax.Array, np.ndarray)) and key.dtype == np.uint32 and key.ndim == 1:
        return jax.random.wrap_key_data(jnp.asarray(key))  # a raw jax.random.PRNGKey
    raise TypeError(f"key must be a PRNG key such as jax.random.key(0), got {type(key).__name__}")


def _check_num_draws(k: Any) -> int:
    msg = f"num_draws must be an integer >= 2 (the standard error needs two draws), got {k!r}"
    try:
        k = check_n(k, "num_draws")
    except ValueError:
        raise ValueError(msg) from None
    if k < 2:
        raise ValueError(msg)
    return k


def _check_X(X: Any) -> jax.Array:
    X = check_array(X, "X", ndim=2)
    X = jnp.asarray(X)
    if not jnp.issubdtype(X.dtype, jnp.floating):
        X = X.astype(jnp.result_type(float))
    return X


def rademacher_signs(key: jax.Array, n: int, num_draws: int, *, dtype=None) -> jax.Array:
    r"""The sign vectors $\sigma^{(0)}, \dots, \sigma^{(K-1)}$ that `rademacher` uses for ``key``.

    Draw $k$ uses ``jax.random.rademacher(split(fold_in(key, k))[0], (n,))``; the second half of
    the split is the draw's key for the class (e.g. a network's initialisation).

    Args:
      key: a PRNG key.
      n: the number of points, >= 1.
      num_draws: K >= 1.
      dtype: the dtype of the signs (default: the default float dtype).

    Returns:
      An array of shape (K, n) with entries ±1.

    Examples:
      >>> import jax
      >>> s = rademacher_signs(jax.random.key(0), 5, 3)
      >>> s.shape, bool((abs(s) == 1).all())
      ((3, 5), True)
    """
    key = _check_key(key)
    n = check_n(n, "n")
    num_draws = check_n(num_draws, "num_draws")
    dtype = jnp.result_type(float) if dtype is None else dtype

    def one(k):
        return jax.random.rademacher(_keys(key, k)[0], (n,), dtype=dtype)

    return jax.vmap(one)(jnp.arange(num_draws, dtype=jnp.uint32))


def rademacher(
    hypotheses: HypothesisClass,
    X: jax.typing.ArrayLike,
    *,
    num_draws: int,
    key: jax.Array,
    strategy: str = "auto",
    chunk_size: int | None = None,
    confidence: float = 0.95,
    devices: Sequence[jax.Device] | None = None,
    distributed: bool | None = None,
) -> RademacherEstimate:
    r"""Monte-Carlo estimate of the empirical Rademacher complexity of a class on data X.

    Estimates $\hat{\mathfrak R}_S(H) = \mathbb E_\sigma \sup_{h\in H} (1/n)\sum_{i=1}^n
    \sigma_i h(x_i)$ (docs/rademacher_mc.md) by

    $$\hat R = \frac1K \sum_{k=0}^{K-1} s_k, \qquad s_k = \sup_{h\in H} \frac1n \sum_i
    \sigma^{(k)}_i h(x_i),$$

    with $K$ = ``num_draws`` sign vectors, $\sigma^{(k)}$ a pure function of (``key``, k) (see
    `rademacher_signs`): the same key gives the same draws whatever the strategy, chunking,
    device count or process count.

    **Uncertainty.** With $b_i = \sup_h |h(x_i)|$ (``hypotheses.value_bounds``), the estimate is
    a function of the $nK$ independent signs, and flipping one sign $\sigma^{(k)}_i$ moves
    $s_k$ by at most $2b_i/n$, hence $\hat R$ by at most $c_{ik} = 2b_i/(nK)$. McDiarmid's
    inequality, $P(|\hat R - \mathbb E\hat R| \ge t) \le 2\exp(-2t^2/\sum_{ik} c_{ik}^2)$ with
    $\sum_{ik} c_{ik}^2 = 4\sum_i b_i^2/(n^2 K)$, gives with probability $\ge 1-\delta'$

    $$|\hat R - \hat{\mathfrak R}_S(H)| \le \frac{\sqrt{\sum_i b_i^2}}{n}
    \sqrt{\frac{2\ln(2/\delta')}{K}} \le B_{\max}\sqrt{\frac{2\ln(2/\delta')}{nK}},$$

    where $B_{\max} = \max_i b_i$ (for `LinearBall` ℓ2, $B_{\max} = B\max_i||x_i||_2$; for
    $|h| \le 1$ this is the familiar $\sqrt{2\ln(2/\delta')/(nK)}$). ``interval`` is this
    two-sided interval at $1-\delta'$ = ``confidence``; `RademacherEstimate.upper` gives the
    one-sided limit ($\ln(1/\delta')$ in place of $\ln(2/\delta')$).

    For `NetworkClass` the per-draw value comes from training, so flipping one sign can change
    it by up to its whole range and McDiarmid's $2b_i/n$ does not apply. The draws are i.i.d. in
    $[-B_{\max}, B_{\max}]$ (fresh signs and a fresh initialisation per draw), so Hoeffding's
    inequality gives the half-width $B_{\max}\sqrt{2\ln(2/\delta')/K}$ around the mean of the
    trained values, which is itself only a LOWER estimate of the complexity
    (``lower_estimate=True``).

    **Strategies.** ``"loop"``: a Python loop over a jitted single draw. ``"vmap"``: draws
    batched with `vmap` in chunks of ``chunk_size`` on one device. ``"sharded"``: each batched
    step spreads ``chunk_size`` draws to every device of ``devices`` (a 1-D `Mesh`, `shard_map`).
    ``"auto"``: on CPU, ``"loop"`` for classes that train (``hypotheses.loop_on_cpu``, a loop
    measured faster than vmap there) and ``"sharded"`` (several local devices) or ``"vmap"``
    otherwise; on GPU/TPU ``"sharded"`` or ``"vmap"``. For a given ``chunk_size`` the per-draw
    values are bitwise identical between ``"vmap"`` and ``"sharded"`` and across device and
    process counts; different strategies or chunk sizes change only their floating-point
    rounding (XLA's matrix-product blocking depends on the batch shape).

    **Several processes.** After ``jax.distributed.initialize``, call `rademacher` on every
    process with the same arguments: process $p$ of $P$ computes draws
    $[p\lceil K/P\rceil, (p+1)\lceil K/P\rceil)$ with the chosen strategy on its local devices,
    and the values are gathered on every process (``process_allgather``). Every process returns
    the same estimate.

    Args:
      hypotheses: the class: `LinearBall`, `KernelBall`, `NetworkClass` or a `HypothesisClass`.
      X: the points, shape (n, d), finite. Integer data is cast to the default float dtype; the
        signs and closed-form suprema are computed in X's dtype.
      num_draws: K >= 2 sign vectors.
      key: a PRNG key (``jax.random.key(seed)``; a raw ``jax.random.PRNGKey`` is accepted).
      strategy: ``"auto"``, ``"loop"``, ``"vmap"`` or ``"sharded"``.
      chunk_size: draws per device per batched step (``"vmap"``/``"sharded"``; ignored by
        ``"loop"``). Default: as many as fit in 512 MiB of working memory, at most the draws per
        device. Pass it explicitly for bitwise reproducibility across device/process counts.
      confidence: level $1-\delta'$ of ``interval``, in (0, 1).
      devices: the local devices for ``"sharded"`` (default: all local devices).
      distributed: spread the draws over all processes (default: when
        ``jax.process_count() > 1``). Every process must then make the same call.

    Returns:
      A `RademacherEstimate`.

    Raises:
      TypeError: hypotheses not a hypothesis class, key not a PRNG key.
      ValueError: num_draws < 2, X not a finite 2-D array, unknown strategy, chunk_size < 1,
        confidence outside (0, 1), a class parameter out of range; a draw that is NaN or
        infinite (the class's values overflow X's dtype).

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> X = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
      >>> est = rademacher(LinearBall(1.0, norm="l1"), X, num_draws=2000, key=jax.random.key(0))
      >>> abs(float(est.value) - 0.5) < 4 * float(est.stderr)  # exact value 0.5 (§2.3)
      True
      >>> est.lower_estimate, est.num_draws
      (False, 2000)

    References:
      Bartlett, P. L. and Mendelson, S., "Rademacher and Gaussian complexities: risk bounds and
      structural results", JMLR 3, 2002. McDiarmid, C., "On the method of bounded differences",
      Surveys in Combinatorics, 1989. Zhang, C., Bengio, S., Hardt, M., Recht, B. and Vinyals,
      O., "Understanding deep learning requires rethinking generalization", ICLR 2017,
      arXiv:1611.03530.
    """
    hyp = _check_hypotheses(hypotheses)
    num_draws = _check_num_draws(num_draws)
    key = _check_key(key)
    check_choice(strategy, "strategy", _STRATEGIES)
    if chunk_size is not None:
        chunk_size = check_n(chunk_size, "chunk_size")
    confidence = check_unit_interval(confidence, "confidence", closed=False)
    X = _check_X(X)
    n = int(X.shape[0])

    local = list(jax.local_devices()) if devices is None else list(devices)
    if not local:
        raise ValueError("devices must name at least one device, got an empty sequence")
    if distributed is None:
        distributed = jax.process_count() > 1
    nproc = jax.process_count() if distributed else 1
    pid = jax.process_index() if distributed else 0

    if strategy == "auto":
        many = len(local) > 1
        if local[0].platform == "cpu" and hyp.loop_on_cpu:
            strategy = "loop"
        else:
            strategy = "sharded" if many else "vmap"

    if nproc > 1:
        # A cheap check that every process made the same call: sizes, key, and the bits of two
        # float64 sums of X (a mismatch would otherwise silently mix different problems).
        Xh = np.asarray(X, dtype=np.float64)
        sums = np.asarray([Xh.sum(), np.square(Xh).sum()], dtype=np.float64).view(np.int64)
        signature = np.concatenate(
            [
                np.asarray([num_draws, n, X.shape[1], int(hyp.lower_estimate)], dtype=np.int64),
                np.asarray(jax.random.key_data(key), dtype=np.int64).ravel(),
                sums,
            ]
        )
        # Gathered and compared on every process, so that all of them raise together (a check
        # that raised on some processes only would leave the others waiting in the gather).
        seen = np.asarray(multihost_utils.process_allgather(signature.view(np.uint32)))
        if not np.all(seen == seen[:1]):
            differ = [p for p in range(nproc) if not np.array_equal(seen[p], seen[0])]
            raise ValueError(
                "rademacher: every process must pass the same num_draws, X and key; processes "
                f"{differ} differ from process 0"
            )

    state = hyp.prepare(X)
    per_proc = -(-num_draws // nproc)
    idx = np.arange(pid * per_proc, (pid + 1) * per_proc, dtype=np.uint32)
    ndev = len(local) if strategy == "sharded" else 1
    if strategy != "loop" and chunk_size is None:
        cap = max(1, _MEMORY_BUDGET // max(1, hyp.per_draw_bytes(state)))
        chunk_size = int(min(cap, -(-per_proc // ndev)))
    prog = _Program(hyp)
    if strategy == "loop":
        chunk_size = None
        values = _run_loop(prog, state, key, idx)
    elif strategy == "vmap":
        values = _run_vmap(prog, state, key, idx, chunk_size)
    else:
        values = _run_sharded(prog, state, key, idx, chunk_size, local)

    if nproc > 1:
        gathered = multihost_utils.process_allgather(np.asarray(values))
        values = jnp.asarray(np.asarray(gathered).reshape(-1))
    draws = values[:num_draws]
    bad = int(np.sum(~np.isfinite(np.asarray(draws))))
    if bad:
        big = float(np.max(np.abs(np.asarray(X, np.float64))))
        raise ValueError(
            f"rademacher: {bad} of the {num_draws} draws of sup_h (1/n) sum_i sigma_i h(x_i) are "
            f"NaN or infinite (X of dtype {X.dtype} with |X| up to {big:.4g}): the class's values "
            "overflow that dtype; pass X (and the class) in float64 under jax_enable_x64, or "
            "rescale X")

    value = jnp.mean(draws)
    stderr = jnp.std(draws, ddof=1) / math.sqrt(num_draws)
    b = np.asarray(hyp.value_bounds(np.asarray(X)), dtype=np.float64)
    if hyp.lower_estimate:
        concentration, scale = "hoeffding", float(np.max(b))
    else:
        concentration, scale = "mcdiarmid", float(np.sqrt(np.sum(b * b)) / n)
    half = scale * math.sqrt(2.0 * math.log(2.0 / (1.0 - confidence)) / num_draws)
    return RademacherEstimate(
        value=value,
        stderr=stderr,
        draws=draws,
        interval=(value - half, value + half),
        num_draws=num_draws,
        n=n,
        confidence=confidence,
        lower_estimate=bool(hyp.lower_estimate),
        concentration=concentration,
        deviation_scale=scale,
        strategy=strategy,
        chunk_size=chunk_size,
        num_devices=ndev,
        num_processes=nproc,
        hypotheses=repr(hyp),
    )


__all__ = [
    "KernelBall",
    "LinearBall",
    "NetworkClass",
    "RademacherEstimate",
    "rademacher",
    "rademacher_signs",
]
