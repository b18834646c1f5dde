r"""Exact rational analysis of element-wise programs (`_elementwise.py` in this package).

* `pwl`: a program made of sums, constant multiples, ``max``/``min``/``abs`` and ``select`` on
  comparisons of such values is a continuous piecewise-linear function (or is refused as
  discontinuous); it is computed exactly, as sorted breakpoints and the slope and intercept of
  each piece, in `fractions.Fraction` (every float constant is an exact rational).
* `select_thresholds`: for any other program, every ``select`` is proved continuous: its
  predicate compares piecewise-linear values, whose difference has finitely many zeros (the
  points where the predicate can switch), and both branches are evaluated exactly there
  (`exact`: rational arithmetic, and the values of $e^t$, $\tanh$, $\sigma$, $\operatorname{erf}$,
  ... at the points where they are rational, such as $e^0 = 1$); they must be equal.

The per-channel constants of a program (a PReLU slope per channel) give one function per
distinct combination of their values; each is analysed.
"""

from __future__ import annotations

import bisect
import math
from fractions import Fraction

import numpy as np

from ._intervals import Unbounded


class NotPWL(Exception):  # noqa: N818 - a signal, not an error
    """The program is not piecewise linear."""


class Inexact(Exception):  # noqa: N818
    """A value that is not an exact rational known here."""


class Discontinuous(Exception):  # noqa: N818
    def __init__(self, z):
        super().__init__(z)
        self.z = z


_SPECIAL = {"exp": {0: 1}, "expm1": {0: 0}, "log": {1: 0}, "log1p": {0: 0}, "tanh": {0: 0},
            "logistic": {0: Fraction(1, 2)}, "erf": {0: 0}, "erfc": {0: 1}, "erf_inv": {0: 0},
            "sin": {0: 0}, "cos": {0: 1}, "sqrt": {0: 0, 1: 1}, "rsqrt": {1: 1}, "atan": {0: 0}}


def nodes(e, seen=None):
    """Every node of the expression (analysis arguments), once."""
    seen = {} if seen is None else seen
    stack = [e]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen[id(n)] = n
        stack.extend(n.args)
    return list(seen.values())


def const_rows(e) -> list[dict]:
    """One mapping id(const) -> value per distinct combination of the per-element constants."""
    arrays = [n for n in nodes(e) if n.op == "const" and np.size(n.const) > 1]
    if not arrays:
        return [{}]
    shape = np.broadcast_shapes(*[np.shape(n.const) for n in arrays])
    mat = np.stack([np.broadcast_to(n.const, shape).reshape(-1).astype(np.float64)
                    for n in arrays])
    cols = np.unique(mat, axis=1)
    if cols.shape[1] > 20_000:
        raise Unbounded(f"{cols.shape[1]} distinct element-wise functions (per-element "
                        "constants); at most 20000 are analysed")
    return [{id(n): cols[i, j] for i, n in enumerate(arrays)} for j in range(cols.shape[1])]


def _val(n, row):
    v = row.get(id(n))
    if v is None:
        v = np.asarray(n.const).reshape(-1)[0]
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if not np.isfinite(v):  # e.g. the -inf that starts a max: not an exact rational piece
        raise NotPWL
    return Fraction(float(v))


def _cmp(kind, d):
    return {"gt": d > 0, "ge": d >= 0, "lt": d < 0, "le": d <= 0, "eq": d == 0,
            "ne": d != 0}[kind]


# ----------------------------------------------------------------------------------------------
# Continuous piecewise-linear functions.


class PWL:
    """breaks b_1 < ... < b_k and pieces (slope, intercept) on (-inf, b_1], ..., [b_k, inf)."""

    __slots__ = ("breaks", "pieces")

    def __init__(self, breaks, pieces):
        bs, ps = [], [pieces[0]]
        for b, p in zip(breaks, pieces[1:], strict=True):
            if p != ps[-1]:
                bs.append(b)
                ps.append(p)
        self.breaks, self.pieces = bs, ps

    def at(self, t):
        a, c = self.pieces[bisect.bisect_left(self.breaks, t)]
        return a * t + c

    def piece(self, t):
        return self.pieces[bisect.bisect_left(self.breaks, t)]


def _reps(breaks):
    if not breaks:
        return [Fraction(0)]
    out = [breaks[0] - 1]
    out += [(a + b) / 2 for a, b in zip(breaks, breaks[1:], strict=False)]
    return out + [breaks[-1] + 1]


def _combine(fs, fn, extra=()):
    bs = sorted(set().union(*[f.breaks for f in fs], extra))
    return PWL(bs, [fn(*[f.piece(p) for f in fs], p) for p in _reps(bs)])


def _zeros(d: PWL):
    """Points where d vanishes at an isolated point or where a region d == 0 starts or ends."""
    out = set()
    edges = [None] + d.breaks + [None]
    for i, (a, c) in enumerate(d.pieces):
        lo, hi = edges[i], edges[i + 1]
        if a != 0:
            z = -c / a
            if (lo is None or z >= lo) and (hi is None or z <= hi):
                out.add(z)
        elif c == 0:
            out.update(x for x in (lo, hi) if x is not None)
    return sorted(out)


def _max(f, g):
    bs = sorted(set(f.breaks) | set(g.breaks))
    cross = []
    for p in _reps(bs):
        (a1, c1), (a2, c2) = f.piece(p), g.piece(p)
        if a1 != a2:
            cross.append((c2 - c1) / (a1 - a2))
    return _combine((f, g), lambda u, v, p: u if u[0] * p + u[1] >= v[0] * p + v[1] else v,
                    cross)


def pwl(e, row, memo) -> PWL:
    k = id(e)
    if k in memo:
        return memo[k]
    op = e.op
    if op == "var":
        r = PWL([], [(Fraction(1), Fraction(0))])
    elif op == "const":
        v = _val(e, row)
        if isinstance(v, bool):
            raise NotPWL
        r = PWL([], [(Fraction(0), v)])
    elif op == "id":
        r = pwl(e.args[0], row, memo)
    elif op == "neg":
        f = pwl(e.args[0], row, memo)
        r = PWL(f.breaks, [(-a, -c) for a, c in f.pieces])
    elif op in ("add", "sub"):
        s = 1 if op == "add" else -1
        f, g = pwl(e.args[0], row, memo), pwl(e.args[1], row, memo)
        r = _combine((f, g), lambda u, v, p: (u[0] + s * v[0], u[1] + s * v[1]))
    elif op in ("mul", "div"):
        f, g = pwl(e.args[0], row, memo), pwl(e.args[1], row, memo)
        if op == "mul" and len(f.pieces) == 1 and f.pieces[0][0] == 0:
            f, g = g, f
        if len(g.pieces) != 1 or g.pieces[0][0] != 0 or (op == "div" and g.pieces[0][1] == 0):
            raise NotPWL
        k_ = g.pieces[0][1] if op == "mul" else 1 / g.pieces[0][1]
        r = PWL(f.breaks, [(a * k_, c * k_) for a, c in f.pieces])
    elif op in ("max", "min"):
        f, g = pwl(e.args[0], row, memo), pwl(e.args[1], row, memo)
        if op == "min":
            neg = lambda h: PWL(h.breaks, [(-a, -c) for a, c in h.pieces])  # noqa: E731
            m = _max(neg(f), neg(g))
            r = neg(m)
        else:
            r = _max(f, g)
    elif op == "abs":
        f = pwl(e.args[0], row, memo)
        r = _max(f, PWL(f.breaks, [(-a, -c) for a, c in f.pieces]))
    elif op == "select":
        kind, d = _predicate(e.args[0], row, memo)
        f0, f1 = pwl(e.args[1], row, memo), pwl(e.args[2], row, memo)
        zs = _zeros(d) if d is not None else []
        for z in zs:
            if f0.at(z) != f1.at(z):
                raise Discontinuous(z)
        if d is None:
            r = f1 if kind else f0
        else:
            r = _combine((f0, f1, d), lambda u, v, w, p: v if _cmp(kind, w[0] * p + w[1]) else u,
                         zs)
    elif op == "refuse":
        raise Unbounded(e.info["reason"])
    else:
        raise NotPWL
    memo[k] = r
    return r


def _predicate(p, row, memo):
    """(kind, d) with the predicate cmp(d, 0); or (value, None) for a constant predicate."""
    if p.op == "const":
        return _val(p, row), None
    try:
        d = _combine((pwl(p.args[0], row, memo), pwl(p.args[1], row, memo)),
                     lambda u, v, _: (u[0] - v[0], u[1] - v[1]))
    except NotPWL:
        raise Unbounded("a select whose predicate compares values that are not piecewise "
                        "linear in the input (its switching points are not known)") from None
    return p.info["kind"], d


# ----------------------------------------------------------------------------------------------
# Exact values at a point, and the continuity of selects in any program.


def exact(e, t, row, memo):
    k = id(e)
    if k in memo:
        return memo[k]
    op = e.op
    if op == "var":
        r = t
    elif op == "const":
        try:
            r = _val(e, row)
        except NotPWL:  # an infinite constant: no exact rational value
            raise Inexact from None
    elif op == "refuse":
        raise Unbounded(e.info["reason"])
    elif op == "select":
        r = exact(e.args[2] if exact(e.args[0], t, row, memo) else e.args[1], t, row, memo)
    elif op == "mul" and any(_is_zero(x, t, row, memo) for x in e.args):
        r = Fraction(0)  # 0 * anything (finite): exact even when the other factor is not
    else:
        a = [exact(x, t, row, memo) for x in e.args]
        if op in ("id", "ind"):
            r = Fraction(int(a[0])) if op == "ind" else a[0]
        elif op == "cmp":
            r = _cmp(e.info["kind"], a[0] - a[1])
        elif op == "neg":
            r = -a[0]
        elif op == "abs":
            r = abs(a[0])
        elif op in ("add", "sub", "mul"):
            r = a[0] + a[1] if op == "add" else a[0] - a[1] if op == "sub" else a[0] * a[1]
        elif op == "div":
            if a[1] == 0:
                raise Inexact
            r = a[0] / a[1]
        elif op in ("max", "min"):
            r = max(a) if op == "max" else min(a)
        elif op == "ipow":
            if e.info["n"] < 0 and a[0] == 0:
                raise Inexact
            r = a[0] ** e.info["n"]
        elif op == "unary" and a[0] in _SPECIAL.get(e.info["fn"], {}):
            r = Fraction(_SPECIAL[e.info["fn"]][a[0]])
        else:
            raise Inexact
    memo[k] = r
    return r


def _is_zero(e, t, row, memo) -> bool:
    try:
        return exact(e, t, row, memo) == 0
    except Inexact:
        return False


def select_thresholds(e, rows) -> list[float]:
    """Proves every select of ``e`` continuous; returns the points where predicates switch.

    Raises:
      Discontinuous: the branches differ where the predicate switches.
      Unbounded: the predicate is not a comparison of piecewise-linear values, or the branches
        cannot be compared exactly there.
    """
    out = set()
    for n in nodes(e):
        if n.op != "select":
            continue
        for row in rows:
            kind, d = _predicate(n.args[0], row, {})
            if d is None:
                continue
            for z in _zeros(d):
                try:
                    same = exact(n.args[1], z, row, {}) == exact(n.args[2], z, row, {})
                except Inexact:
                    raise Unbounded(f"a select whose branches cannot be proved equal where its "
                                    f"predicate switches (t = {float(z):.6g})") from None
                if not same:
                    raise Discontinuous(z)
                out.add(float(z))
    return sorted(out)


def float_up(q: Fraction) -> float:
    f = float(q)
    return f if Fraction(f) >= q else float(np.nextafter(f, math.inf))


def float_down(q: Fraction) -> float:
    f = float(q)
    return f if Fraction(f) <= q else float(np.nextafter(f, -math.inf))
