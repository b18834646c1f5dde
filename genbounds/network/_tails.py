r"""$\sup_t |g'(t)|$ of an element-wise program: branch and bound on $[-M, M]$, envelopes beyond.

On the tails $t = s\tau$, $\tau \ge M$ ($s = \pm 1$), each sub-expression $e$ gets, besides the
interval enclosures of `_intervals.py` on the piece $\{s\tau : \tau \ge M\}$:

* affine bounds ``L = (a, b)``, ``U = (a, b)``: $a + b\tau \le e$, $e \le a + b\tau$;
* envelopes ``E`` of $|e|$ and ``DE`` of $|de/dt|$, triples $(C, k, r)$ meaning
  $|\cdot| \le C (\tau/M)^k e^{-r(\tau - M)}$ for all $\tau \ge M$ ($r \ge 0$).

Sums add envelopes ($k = \max$, $r = \min$, $C = C_1 + C_2$, valid since $(\tau/M)^{k_i}$ and
$e^{-r_i(\tau - M)}$ only shrink when $k_i$ grows less or $r_i$ more); products multiply them.
$\sup_{\tau \ge M} C(\tau/M)^k e^{-r(\tau-M)}$ is $C$ when $k \le 0$ or $k/r \le M$, and
$C (k/(rM))^k e^{-(k - rM)}$ otherwise. The bound on a tail is the smaller of the interval bound
and the envelope bound of the derivative.
"""

from __future__ import annotations

import math

import numpy as np

from ._intervals import UNARY, Box, Unbounded, _dn, _up, box, check_domain, predicate


def _term_sup(c, k, r, m):
    if c == 0:
        return 0.0
    if k <= 0:
        return c
    if r <= 0:
        return math.inf
    ts = k / r
    if ts <= m:
        return c
    return c * (ts / m) ** k * math.exp(-(k - r * m))


def env_sup(env, m: float) -> float:
    """sup over tau >= m of a sum of terms C (tau/m)^k e^{-r (tau - m)} (the sum of the sups)."""
    if env is None:
        return math.inf
    return math.fsum(_term_sup(c, k, r, m) for c, k, r in env)


def _tidy(terms):
    merged: dict = {}
    for c, k, r in terms:
        merged[(k, r)] = merged.get((k, r), 0.0) + c
    out = tuple((c, k, r) for (k, r), c in merged.items() if c != 0)
    if len(out) > 64:  # one term: k = max, r = min, C = sum (each term only grows)
        out = ((math.fsum(t[0] for t in out), max(t[1] for t in out), min(t[2] for t in out)),)
    return out or ((0.0, 0.0, 0.0),)


def _eadd(a, b):
    if a is None or b is None:
        return None
    return _tidy(a + b)


def _emul(a, b):
    if a is None or b is None:
        return None
    return _tidy(tuple((c1 * c2, k1 + k2, r1 + r2) for c1, k1, r1 in a for c2, k2, r2 in b))


def _one(c, k=0.0, r=0.0):
    return ((float(c), float(k), float(r)),)


def _decays(env):
    return env is not None and all(k < 0 or r > 0 or c == 0 for c, k, r in env)


class _T:
    __slots__ = ("b", "L", "U", "E", "DE")

    def __init__(self, b, L=None, U=None, E=None, DE=None):  # noqa: N803
        self.b, self.L, self.U, self.E, self.DE = b, L, U, E, DE


def _at(aff, m):
    return aff[0] + aff[1] * m


class _Tail:
    def __init__(self, s: int, m: float):
        self.s, self.m = s, m
        lo, hi = (np.array([m]), np.array([np.inf])) if s > 0 else \
            (np.array([-np.inf]), np.array([-m]))
        self.tlo, self.thi = lo, hi
        self.bmemo: dict = {}
        self.memo: dict = {}

    def env(self, t: _T):
        """An envelope of |value|."""
        lo, hi = float(t.b.lo[0]), float(t.b.hi[0])
        boxed = _one(max(abs(lo), abs(hi))) if math.isfinite(lo) and math.isfinite(hi) \
            else None
        if t.E is not None and (_decays(t.E) or boxed is None):
            return t.E
        if boxed is not None:
            return boxed
        if t.L is not None and t.U is not None:
            m = self.m
            c = max(abs(_at(t.L, m)) + abs(t.L[1]) * m, abs(_at(t.U, m)) + abs(t.U[1]) * m)
            return _one(c, 1.0)
        return None

    def denv(self, t: _T):
        """An envelope of |derivative|: DE where it decays, else the interval bound (a decaying
        envelope keeps products with growing factors bounded)."""
        d = max(abs(float(t.b.dlo[0])), abs(float(t.b.dhi[0])))
        if math.isfinite(d) and not _decays(t.DE):
            return _one(d)
        return t.DE

    def run(self, e) -> _T:
        key = id(e)
        if key not in self.memo:
            self.memo[key] = self._run(e)
        return self.memo[key]

    def _neg(self, t: _T) -> _T:
        b = Box(-t.b.hi, -t.b.lo, -t.b.dhi, -t.b.dlo)
        neg = (lambda a: None if a is None else (-a[0], -a[1]))  # noqa: E731
        return _T(b, neg(t.U), neg(t.L), t.E, t.DE)

    def _from_box(self, b: Box) -> _T:
        lo, hi = float(b.lo[0]), float(b.hi[0])
        return _T(b, (lo, 0.0) if math.isfinite(lo) else None,
                  (hi, 0.0) if math.isfinite(hi) else None)

    def _max_aff(self, f, g):
        """An affine bound above max(f, g) for tau >= M."""
        if f is None or g is None:
            return None
        slope = max(f[1], g[1])
        return (max(_at(f, self.m), _at(g, self.m)) - slope * self.m, slope)

    def _run(self, e) -> _T:
        b = box(e, self.tlo, self.thi, self.bmemo)
        op, m, s = e.op, self.m, self.s
        if op == "var":
            return _T(b, (0.0, float(s)), (0.0, float(s)), _one(m, 1.0), _one(1.0))
        if op == "const":
            c = np.asarray(e.const, np.float64)
            return _T(b, (float(c.min()), 0.0), (float(c.max()), 0.0),
                      _one(np.abs(c).max()), _one(0.0))
        if op == "id":
            return self.run(e.args[0])
        if op == "neg":
            return self._neg(self.run(e.args[0]))
        if op in ("add", "sub"):
            u = self.run(e.args[0])
            v = self.run(e.args[1])
            v = v if op == "add" else self._neg(v)
            add = (lambda f, g: None if f is None or g is None  # noqa: E731
                   else (f[0] + g[0], f[1] + g[1]))
            return _T(b, add(u.L, v.L), add(u.U, v.U), _eadd(self.env(u), self.env(v)),
                      _eadd(self.denv(u), self.denv(v)))
        if op == "mul":
            u, v = self.run(e.args[0]), self.run(e.args[1])
            lu, uu = self._mul_aff(u, v)
            return _T(b, lu, uu, _emul(self.env(u), self.env(v)),
                      _eadd(_emul(self.denv(u), self.env(v)), _emul(self.env(u), self.denv(v))))
        if op == "div":
            u, v = self.run(e.args[0]), self.run(e.args[1])
            r = self._recip(v)
            lu, uu = self._mul_aff(u, r)
            return _T(b, lu, uu, _emul(self.env(u), self.env(r)),
                      _eadd(_emul(self.denv(u), self.env(r)), _emul(self.env(u), self.denv(r))))
        if op in ("max", "min"):
            u, v = self.run(e.args[0]), self.run(e.args[1])
            if op == "min":
                u, v = self._neg(u), self._neg(v)
            if float(u.b.lo[0]) > float(v.b.hi[0]):
                out = u
            elif float(v.b.lo[0]) > float(u.b.hi[0]):
                out = v
            else:
                low = max((x for x in (u.L, v.L) if x is not None),
                          key=lambda a: (a[1], a[0]), default=None)
                out = _T(Box(np.maximum(u.b.lo, v.b.lo), np.maximum(u.b.hi, v.b.hi),
                             np.minimum(u.b.dlo, v.b.dlo), np.maximum(u.b.dhi, v.b.dhi)),
                         low, self._max_aff(u.U, v.U), _eadd(self.env(u), self.env(v)),
                         _eadd(self.denv(u), self.denv(v)))
            return out if op == "max" else self._neg(out)
        if op == "abs":
            u = self.run(e.args[0])
            if float(u.b.lo[0]) >= 0:
                return u
            if float(u.b.hi[0]) <= 0:
                return self._neg(u)
            nu = self._neg(u)
            return _T(b, (0.0, 0.0), self._max_aff(u.U, nu.U), self.env(u), self.denv(u))
        if op == "select":
            cf, ct = predicate(e.args[0], self.tlo, self.thi, self.bmemo)
            if not cf[0]:
                return self.run(e.args[2])
            if not ct[0]:
                return self.run(e.args[1])
            u, v = self.run(e.args[1]), self.run(e.args[2])
            neg = (lambda a: None if a is None else (-a[0], -a[1]))  # noqa: E731
            low = neg(self._max_aff(neg(u.L), neg(v.L)))  # min(f, g) = -max(-f, -g)
            return _T(b, low, self._max_aff(u.U, v.U),
                      _eadd(self.env(u), self.env(v)), _eadd(self.denv(u), self.denv(v)))
        if op == "ipow":
            return self._ipow(e, b)
        if op == "unary":
            return self._unary(e, b)
        raise Unbounded(f"no rule for {op!r}")  # pragma: no cover

    def _mul_aff(self, u: _T, v: _T):
        for x, y in ((u, v), (v, u)):
            ylo, yhi = float(y.b.lo[0]), float(y.b.hi[0])
            xlo, xhi = float(x.b.lo[0]), float(x.b.hi[0])
            if not (math.isfinite(ylo) and math.isfinite(yhi)):
                continue

            def scale(c, lower, x=x):  # an affine bound on x * c
                src = (x.L if c >= 0 else x.U) if lower else (x.U if c >= 0 else x.L)
                return None if src is None else (src[0] * c, src[1] * c)
            if xlo >= 0:
                return scale(ylo, True), scale(yhi, False)
            if xhi <= 0:
                return scale(yhi, True), scale(ylo, False)
        return None, None

    def _recip(self, v: _T) -> _T:
        lo, hi = float(v.b.lo[0]), float(v.b.hi[0])
        if lo <= 0 <= hi:
            raise Unbounded("a division by a value that can be 0")
        amin = min(abs(lo), abs(hi))
        env = _one(1.0 / amin)
        low = v.L if lo > 0 else (None if v.U is None else (-v.U[0], -v.U[1]))
        if low is not None and low[1] > 0 and _at(low, self.m) > 0:
            c = min(_at(low, self.m), low[1] * self.m) if low[0] >= 0 else _at(low, self.m)
            env = _one(min(1.0 / c, 1.0 / amin), -1.0)
        with np.errstate(divide="ignore"):
            rb = Box(_dn(1.0 / v.b.hi), _up(1.0 / v.b.lo), np.array([-np.inf]),
                     np.array([np.inf]))
        de = _emul(self.denv(v), _emul(env, env))
        return _T(rb, None, None, env, de)

    def _ipow(self, e, b) -> _T:
        u, n = self.run(e.args[0]), e.info["n"]
        m = self.m
        if n <= 0:
            return _T(b, None, None, None, self._from_box_d(b))
        env = self.env(u)
        E = env  # noqa: N806
        for _ in range(n - 1):
            E = _emul(E, env)  # noqa: N806
        if n == 1:
            de = self.denv(u)
        else:
            pe = env
            for _ in range(n - 2):
                pe = _emul(pe, env)
            de = _emul(_emul(pe, self.denv(u)), _one(n))
        L = U = None  # noqa: N806
        lo, hi = float(u.b.lo[0]), float(u.b.hi[0])
        pos = u.L if lo >= 0 else (None if u.U is None or hi > 0 else (-u.U[0], -u.U[1]))
        if pos is not None and pos[1] >= 0 and _at(pos, m) >= 0:
            p0 = _at(pos, m)  # x**n is convex on x >= 0: above its tangent at M
            slope = n * p0 ** (n - 1) * pos[1]
            tangent = (p0 ** n - slope * m, slope)
            if lo >= 0 or n % 2 == 0:
                L = tangent  # noqa: N806
            else:
                U = (-tangent[0], -tangent[1])  # noqa: N806
        return _T(b, L, U, E, de)

    def _from_box_d(self, b):
        d = max(abs(float(b.dlo[0])), abs(float(b.dhi[0])))
        return _one(d) if math.isfinite(d) else None

    def _unary(self, e, b) -> _T:
        u, name = self.run(e.args[0]), e.info["fn"]
        m = self.m
        check_domain(name, u.b.lo, u.b.hi)
        flo, fhi = UNARY[name][1](u.b.lo, u.b.hi)
        fmax = max(abs(float(flo[0])), abs(float(fhi[0])))
        fenv = _one(fmax) if math.isfinite(fmax) else None
        out = self._from_box(b)
        lo, hi = float(u.b.lo[0]), float(u.b.hi[0])
        # |u| >= m0 + slope (tau - M) with slope > 0, m0 >= 0
        grow = u.L if lo >= 0 else ((-u.U[0], -u.U[1]) if u.U is not None and hi <= 0 else None)
        grow = grow if grow is not None and grow[1] > 0 and _at(grow, m) >= 0 else None
        if name in ("exp", "expm1") and u.U is not None and u.U[1] <= 0:
            dec = _one(math.exp(min(_at(u.U, m), 700.0)), 0.0, -u.U[1])
            fenv = dec if fenv is None or _decays(dec) or dec[0][0] <= fenv[0][0] else fenv
            if name == "exp":
                out.E = dec
        elif grow is not None and name in ("tanh", "logistic", "erf", "erfc"):
            m0, sl = _at(grow, m), grow[1]
            fenv = _one(*{"tanh": (4.0 * math.exp(-2.0 * m0), 0.0, 2.0 * sl),
                          "logistic": (math.exp(-m0), 0.0, sl),
                          "erf": (2.0 / math.sqrt(math.pi) * math.exp(-m0 * m0), 0.0,
                                  2.0 * m0 * sl),
                          "erfc": (2.0 / math.sqrt(math.pi) * math.exp(-m0 * m0), 0.0,
                                   2.0 * m0 * sl)}[name])
        elif name in ("log", "log1p", "sqrt") and u.U is not None:
            shift = 1.0 if name == "log1p" else 0.0
            um = _at(u.U, m) + shift
            if um > 0 and u.U[1] >= 0:  # concave: below the tangent at M
                if name == "sqrt":
                    slope = u.U[1] / (2.0 * math.sqrt(um))
                    out.U = (math.sqrt(um) - slope * m, slope)
                else:
                    slope = u.U[1] / um
                    out.U = (math.log(um) - slope * m, slope)
        return _T(b, out.L, out.U, out.E, _emul(fenv, self.denv(u)))


def tail_bound(expr, m: float) -> float:
    """An upper bound on |g'(t)| over |t| >= m."""
    best = 0.0
    for s in (1, -1):
        t = _Tail(s, m)
        r = t.run(expr)
        d = max(abs(float(r.b.dlo[0])), abs(float(r.b.dhi[0])))
        d = min(d if math.isfinite(d) else math.inf, env_sup(t.denv(r), m))
        best = max(best, d)
    return best


def sup_abs_derivative(expr, m: float, breaks=(), *, rtol: float = 1e-7,
                       rounds: int = 48, max_pieces: int = 40_000) -> tuple[float, float]:
    """(upper, lower): an upper bound on sup_t |g'(t)| and the largest |g'| enclosed at a point.

    Raises:
      Unbounded: the bound is infinite, or the program is undefined somewhere.
    """
    g = np.geomspace(2.0 ** -8, m, 64)
    edges = np.unique(np.concatenate([[-m, 0.0, m], g, -g, np.linspace(-8.0, 8.0, 513),
                                      np.asarray([b for b in breaks if -m < b < m], float)]))
    lo, hi = edges[:-1], edges[1:]
    settled = tail_bound(expr, m)
    lower = 0.0
    for i in range(rounds + 1):
        bx = box(expr, lo, hi, {})
        ub = np.maximum(np.abs(bx.dlo), np.abs(bx.dhi))
        ub = np.where(np.isnan(ub), np.inf, ub)
        mid = 0.5 * (lo + hi)
        p = box(expr, mid, mid, {})
        pl = np.where(p.dlo * p.dhi > 0, np.minimum(np.abs(p.dlo), np.abs(p.dhi)), 0.0)
        lower = max(lower, float(np.nan_to_num(pl, nan=0.0).max()))
        target = max(lower, settled) * (1.0 + rtol)
        open_ = ub > target
        if not open_.any() or i == rounds:
            settled = max(settled, float(ub.max()))
            break
        settled = max(settled, float(ub[~open_].max(initial=0.0)))
        lo, hi = lo[open_], hi[open_]
        if lo.size * 2 > max_pieces:
            order = np.argsort(-ub[open_])
            keep = order[: max_pieces // 2]
            rest = order[max_pieces // 2:]
            settled = max(settled, float(ub[open_][rest].max(initial=0.0)))
            lo, hi = lo[keep], hi[keep]
        mid = 0.5 * (lo + hi)
        lo, hi = np.concatenate([lo, mid]), np.concatenate([mid, hi])
    if not math.isfinite(settled):
        raise Unbounded("its derivative is unbounded")
    return float(settled), lower
