r"""Sound enclosures of an element-wise program's values and derivative: interval arithmetic.

An element-wise function $g: \mathbb{R} \to \mathbb{R}$ read from a network's jaxpr
(`_elementwise.py` in this package) is a small expression over one variable $t$. This module
bounds $\sup_t |g'(t)|$ from above by rules per operation, never by sampling:

* **forward-mode interval arithmetic.** For an interval $I$ of $t$, every sub-expression $e$
  gets an interval holding $\{e(t) : t \in I\}$ and one holding its derivative
  $\{e'(t) : t \in I\}$ (at kinks of ``max``/``min``/``abs``/``select``, the hull of the one-sided
  derivatives: Clarke's generalised derivative). The rules are the sum, product and chain rules
  with the exact ranges of each primitive's derivative on an interval (monotone or even
  functions are evaluated at the interval's end points or at $\min|u|$, $\max|u|$). Every
  computed end point is rounded outwards by $2^{-46}$ relative plus one ulp, far more than the
  error of float64 arithmetic and of the libm/scipy functions used, except where the result is
  exact: sums and products whose rounding error is 0 (TwoSum, Dekker's TwoProduct), and
  $e^0 = 1$, $\tanh 0 = 0$, $\sigma(0) = 1/2$, $\operatorname{sech}^2 0 = 1$, $\sigma'(0) = 1/4$,
  ... (so ELU gets exactly $\max(1, \alpha)$ and tanh exactly 1);
* **branch and bound on $[-M, M]$.** The derivative bound over each piece of a partition is
  refined by bisection where it exceeds the largest derivative enclosed at a point; the result is
  the largest bound over all pieces (an upper bound whatever the refinement);
* **the two tails $|t| \ge M$** ($M$ beyond every threshold of the program), where interval
  arithmetic alone cannot see that $t\,\varphi(t) \to 0$: each sub-expression also gets affine
  bounds $a + b\tau \le e \le a' + b'\tau$ in $\tau = |t|$ and *envelopes*
  $|e| \le C (\tau/M)^k e^{-r(\tau - M)}$ for itself and its derivative, propagated by
  $|uv| \le |u||v|$, $|u + v| \le |u| + |v|$, tangent lines of convex and concave functions,
  and the decay of the saturating derivatives: $\operatorname{sech}^2 u \le 4e^{-2|u|}$,
  $\sigma'(u) \le e^{-|u|}$, $e^{-u^2} \le e^{-m^2 - 2m b(\tau - M)}$ when $|u| \ge m + b(\tau - M)$.

A function is Lipschitz with constant $\sup|g'|$ when it is continuous and piecewise $C^1$
(absolutely continuous); continuity of ``select`` is proved separately (`_elementwise.py`), and
division by a value that can vanish, logarithms of values that can be $\le 0$ and square roots of
values that can be 0 are refused (`Unbounded`), as is a derivative bound that is infinite.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import special

_REL = 2.0 ** -46


class Unbounded(Exception):  # noqa: N818 - a reason, raised to the reader of the program
    """The program's derivative cannot be bounded (or the program is undefined somewhere)."""


def _dn(x):
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.nextafter(x - np.abs(x) * _REL, -np.inf)
    return np.where(np.isfinite(x), y, x)


def _up(x):
    x = np.asarray(x, np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        y = np.nextafter(x + np.abs(x) * _REL, np.inf)
    return np.where(np.isfinite(x), y, x)


def _exact_sum(a, b, s):
    """Whether the float sum s = a + b is exact (Knuth's TwoSum error is 0)."""
    with np.errstate(invalid="ignore", over="ignore"):
        bb = s - a
        err = (a - (s - bb)) + (b - bb)
    return (err == 0) & np.isfinite(s)


def _add(alo, ahi, blo, bhi):
    with np.errstate(invalid="ignore"):
        lo, hi = alo + blo, ahi + bhi
    return (np.where(_exact_sum(alo, blo, lo), lo, _dn(lo)),
            np.where(_exact_sum(ahi, bhi, hi), hi, _up(hi)))


def _exact_prod(a, b, p):
    """Whether the float product p = a * b is exact (Dekker's TwoProduct error is 0)."""
    with np.errstate(invalid="ignore", over="ignore"):
        ca, cb = 134217729.0 * a, 134217729.0 * b
        ah, bh = ca - (ca - a), cb - (cb - b)
        al, bl = a - ah, b - bh
        err = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return (err == 0) & np.isfinite(p) & (np.abs(p) < 1e300)


def _mul(alo, ahi, blo, bhi):
    los, his = [], []
    for a, b in ((alo, blo), (alo, bhi), (ahi, blo), (ahi, bhi)):
        with np.errstate(invalid="ignore", over="ignore"):
            p = a * b
        p = np.where(np.isnan(p), 0.0, p)  # 0 * inf: an exact 0 times a finite value
        ok = _exact_prod(a, b, p) | (a == 0) | (b == 0)
        los.append(np.where(ok, p, _dn(p)))
        his.append(np.where(ok, p, _up(p)))
    return np.minimum.reduce(np.broadcast_arrays(*los)), np.maximum.reduce(
        np.broadcast_arrays(*his))


def _recip(lo, hi):
    if np.any((lo <= 0) & (hi >= 0)):
        raise Unbounded("a division by a value that can be 0")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        rlo, rhi = 1.0 / hi, 1.0 / lo
        ok_lo = _exact_prod(rlo, hi, rlo * hi) & (rlo * hi == 1.0)  # 1/x exact (x = 2^k)
        ok_hi = _exact_prod(rhi, lo, rhi * lo) & (rhi * lo == 1.0)
    return np.where(ok_lo, rlo, _dn(rlo)), np.where(ok_hi, rhi, _up(rhi))


def _hull(a, b):
    return np.minimum(a[0], b[0]), np.maximum(a[1], b[1])


def _absrange(lo, hi):
    amin = np.where(lo > 0, lo, np.where(hi < 0, -hi, 0.0))
    return amin, np.maximum(np.abs(lo), np.abs(hi))


def _even_dec(f, lo, hi, f0=None):
    """Range of an even function decreasing in |u| over [lo, hi] (``f0``: its exact value at 0,
    where it has one)."""
    amin, amax = _absrange(lo, hi)
    with np.errstate(over="ignore", under="ignore"):
        top = _up(f(amin))
        if f0 is not None:
            top = np.where(amin == 0, f0, top)
        return _dn(f(amax)), top


def _ipow(lo, hi, n):
    if n == 0:
        return np.ones_like(lo), np.ones_like(hi)
    if n < 0:
        plo, phi = _ipow(lo, hi, -n)
        return _recip(plo, phi)
    with np.errstate(over="ignore"):
        if n % 2:
            return _dn(lo ** n), _up(hi ** n)
        amin, amax = _absrange(lo, hi)
        return _dn(amin ** n), _up(amax ** n)


def _sin(lo, hi):
    with np.errstate(invalid="ignore"):
        flo, fhi = np.sin(lo), np.sin(hi)
    vlo, vhi = np.minimum(flo, fhi), np.maximum(flo, fhi)
    tau, eps = 2 * np.pi, 1e-9 * (1 + np.abs(lo) + np.abs(hi))
    with np.errstate(invalid="ignore"):
        kmax = np.ceil((lo - eps - np.pi / 2) / tau)
        kmin = np.ceil((lo - eps + np.pi / 2) / tau)
        has_max = np.pi / 2 + tau * kmax <= hi + eps
        has_min = -np.pi / 2 + tau * kmin <= hi + eps
    wide = ~np.isfinite(lo) | ~np.isfinite(hi) | (hi - lo >= tau)
    vhi = np.where(has_max | wide, 1.0, _up(vhi))
    vlo = np.where(has_min | wide, -1.0, _dn(vlo))
    return np.maximum(vlo, -1.0), np.minimum(vhi, 1.0)


def _cos(lo, hi):
    return _sin(_dn(lo + np.pi / 2), _up(hi + np.pi / 2))


def _phi0(x):
    return 2.0 / math.sqrt(math.pi) * np.exp(-x * x)


# name -> (value range on [lo, hi], derivative range on [lo, hi], domain check)
def _mono(f, inc=True, exact=None):
    """Range of a monotone function; ``exact``: (x, f(x)) where f(x) is an exact float."""
    def rng(lo, hi):
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            a, b = f(lo), f(hi)
        a, b = (_dn(a), _up(b)) if inc else (_dn(b), _up(a))
        if exact is not None:
            x, y = exact
            lo_at, hi_at = (lo, hi) if inc else (hi, lo)
            a, b = np.where(lo_at == x, y, a), np.where(hi_at == x, y, b)
        return a, b
    return rng


def _dec_pos(f):  # decreasing on the (positive) domain
    return _mono(f, inc=False)


UNARY = {
    "exp": (_mono(np.exp, exact=(0.0, 1.0)), _mono(np.exp, exact=(0.0, 1.0)), None),
    "expm1": (_mono(np.expm1, exact=(0.0, 0.0)), _mono(np.exp, exact=(0.0, 1.0)), None),
    "log": (_mono(np.log, exact=(1.0, 0.0)), _dec_pos(lambda x: 1.0 / x),
            (0.0, "log of a value that can be <= 0")),
    "log1p": (_mono(np.log1p, exact=(0.0, 0.0)), _dec_pos(lambda x: 1.0 / (1.0 + x)),
              (-1.0, "log1p of a value that can be <= -1")),
    "tanh": (_mono(np.tanh, exact=(0.0, 0.0)),
             lambda lo, hi: _even_dec(lambda x: 1.0 / np.cosh(x) ** 2, lo, hi, 1.0), None),
    "logistic": (_mono(special.expit, exact=(0.0, 0.5)),
                 lambda lo, hi: _even_dec(lambda x: special.expit(x) * special.expit(-x), lo, hi,
                                          0.25),
                 None),
    "erf": (_mono(special.erf, exact=(0.0, 0.0)), lambda lo, hi: _even_dec(_phi0, lo, hi), None),
    "erfc": (_mono(special.erfc, inc=False, exact=(0.0, 1.0)),
             lambda lo, hi: tuple(-v for v in reversed(_even_dec(_phi0, lo, hi))), None),
    "atan": (_mono(np.arctan, exact=(0.0, 0.0)),
             lambda lo, hi: _even_dec(lambda x: 1.0 / (1.0 + x * x), lo, hi, 1.0), None),
    "sin": (_sin, _cos, None),
    "cos": (_cos, lambda lo, hi: tuple(-v for v in reversed(_sin(lo, hi))), None),
    "sqrt": (_mono(np.sqrt), _dec_pos(lambda x: 0.5 / np.sqrt(x)),
             (0.0, "sqrt of a value that can be 0 (its derivative is unbounded there)")),
    "rsqrt": (_dec_pos(lambda x: 1.0 / np.sqrt(x)),
              lambda lo, hi: (_dn(-0.5 * lo ** -1.5), _up(-0.5 * hi ** -1.5)),
              (0.0, "rsqrt of a value that can be <= 0")),
}


def _erfinv_deriv(lo, hi):
    amin, amax = _absrange(lo, hi)
    f = lambda x: 0.5 * math.sqrt(math.pi) * np.exp(special.erfinv(x) ** 2)  # noqa: E731
    return _dn(f(amin)), _up(f(amax))


UNARY["erf_inv"] = (_mono(special.erfinv), _erfinv_deriv, None)


def check_domain(name, lo, hi):
    if name == "erf_inv":
        if np.any(lo <= -1.0) or np.any(hi >= 1.0):
            raise Unbounded("erf_inv of a value that can reach +-1 (it is infinite there)")
        return
    dom = UNARY[name][2]
    if dom is not None and np.any(lo <= dom[0]):
        raise Unbounded(dom[1])


# ----------------------------------------------------------------------------------------------
# Enclosures over an array of pieces [tlo, thi].


class Box:
    """Value and derivative enclosures of one sub-expression over each piece."""

    __slots__ = ("lo", "hi", "dlo", "dhi")

    def __init__(self, lo, hi, dlo, dhi):
        self.lo, self.hi, self.dlo, self.dhi = lo, hi, dlo, dhi


def _neg(b):
    return Box(-b.hi, -b.lo, -b.dhi, -b.dlo)


def _select(can_false, can_true, b0, b1):
    both = can_false & can_true
    out = []
    for f in ("lo", "dlo"):
        v0, v1 = getattr(b0, f), getattr(b1, f)
        out.append(np.where(both, np.minimum(v0, v1), np.where(can_true, v1, v0)))
    for f in ("hi", "dhi"):
        v0, v1 = getattr(b0, f), getattr(b1, f)
        out.append(np.where(both, np.maximum(v0, v1), np.where(can_true, v1, v0)))
    return Box(out[0], out[2], out[1], out[3])


def predicate(e, tlo, thi, memo) -> tuple[np.ndarray, np.ndarray]:
    """(can be false, can be true) of a comparison over each piece.

    A select is analysed only once proved continuous where its predicate switches
    (`_exact.py`), so on a closed piece where the compared values are ordered except at an end
    point it equals one branch: strict and non-strict comparisons read alike.
    """
    if e.op == "const":
        v = np.asarray(e.const, bool)
        return (np.broadcast_to(~v.all(), tlo.shape) if v.size else tlo < tlo,
                np.broadcast_to(v.any(), tlo.shape))
    if e.op != "cmp":  # pragma: no cover - the reader builds only these
        raise Unbounded(f"a predicate computed by {e.op!r}")
    a, b = box(e.args[0], tlo, thi, memo), box(e.args[1], tlo, thi, memo)
    kind = e.info["kind"]
    if kind not in ("eq", "ne"):  # compared directly: the sign of a - b has no rounding
        below, above = a.lo < b.hi, a.hi > b.lo
        return (below, above) if kind in ("gt", "ge") else (above, below)
    lo, hi = _add(a.lo, a.hi, -b.hi, -b.lo)
    if kind == "eq":
        return (lo < 0) | (hi > 0), (lo <= 0) & (hi >= 0)
    return (lo <= 0) & (hi >= 0), (lo < 0) | (hi > 0)  # ne


def box(e, tlo, thi, memo) -> Box:
    """Enclosures of sub-expression ``e`` over the pieces [tlo, thi] (memoised by identity)."""
    key = id(e)
    if key in memo:
        return memo[key]
    out = _box(e, tlo, thi, memo)
    memo[key] = out
    return out


def _box(e, tlo, thi, memo) -> Box:
    op = e.op
    one = np.ones_like(tlo)
    if op == "var":
        return Box(tlo, thi, one, one)
    if op == "const":
        c = np.asarray(e.const, np.float64)
        return Box(one * c.min(), one * c.max(), 0 * one, 0 * one)
    if op == "refuse":
        raise Unbounded(e.info["reason"])
    args = None if op == "select" else [box(a, tlo, thi, memo) for a in e.args]
    if op == "id":
        return args[0]
    if op == "neg":
        return _neg(args[0])
    if op in ("add", "sub"):
        a, b = args[0], args[1] if op == "add" else _neg(args[1])
        return Box(*_add(a.lo, a.hi, b.lo, b.hi), *_add(a.dlo, a.dhi, b.dlo, b.dhi))
    if op in ("mul", "div"):
        a, b = args
        if op == "div":
            rlo, rhi = _recip(b.lo, b.hi)
            q2 = _mul(rlo, rhi, rlo, rhi)
            b = Box(rlo, rhi, *_mul(-b.dhi, -b.dlo, *q2))
        v = _mul(a.lo, a.hi, b.lo, b.hi)
        d = _add(*_mul(a.dlo, a.dhi, b.lo, b.hi), *_mul(a.lo, a.hi, b.dlo, b.dhi))
        return Box(*v, *d)
    if op in ("max", "min"):
        a, b = args if op == "max" else (_neg(args[0]), _neg(args[1]))
        only_a, only_b = a.lo >= b.hi, b.lo >= a.hi  # max = a on the piece (kinks at ends)
        d = _hull((a.dlo, a.dhi), (b.dlo, b.dhi))
        out = Box(np.maximum(a.lo, b.lo), np.maximum(a.hi, b.hi),
                  np.where(only_a, a.dlo, np.where(only_b, b.dlo, d[0])),
                  np.where(only_a, a.dhi, np.where(only_b, b.dhi, d[1])))
        return out if op == "max" else _neg(out)
    if op == "abs":
        a = args[0]
        amin, amax = _absrange(a.lo, a.hi)
        pos, neg = a.lo >= 0, a.hi <= 0
        dl, dh = _hull((a.dlo, a.dhi), (-a.dhi, -a.dlo))
        return Box(amin, amax, np.where(pos, a.dlo, np.where(neg, -a.dhi, dl)),
                   np.where(pos, a.dhi, np.where(neg, -a.dlo, dh)))
    if op == "select":
        cf, ct = predicate(e.args[0], tlo, thi, memo)
        return _select(cf, ct, box(e.args[1], tlo, thi, memo), box(e.args[2], tlo, thi, memo))
    if op == "ipow":
        a, n = args[0], e.info["n"]
        v = _ipow(a.lo, a.hi, n)
        p = _ipow(a.lo, a.hi, n - 1)
        d = _mul(*_mul(p[0], p[1], float(n), float(n)), a.dlo, a.dhi)
        return Box(*v, *d)
    if op == "unary":
        a, name = args[0], e.info["fn"]
        check_domain(name, a.lo, a.hi)
        vr, dr, _ = UNARY[name]
        return Box(*vr(a.lo, a.hi), *_mul(*dr(a.lo, a.hi), a.dlo, a.dhi))
    raise Unbounded(f"no rule for {op!r}")  # pragma: no cover
