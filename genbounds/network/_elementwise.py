r"""Element-wise functions read from a network's jaxpr as programs, and analysed by rules.

The jaxpr interpreter (`_trace.py`) collects the element-wise operations applied to one
record's output into an expression `Expr` over one variable $t$ (the pre-activation) and
constants (scalars or per-channel arrays such as a learnt PReLU slope). `analyse` turns it into
the records the bounds read: an affine part before it (a per-channel scale and shift: a bias or
BatchNorm, folded into the linear map before it), the non-linear core as an `Activation`, and
an affine part after it (``2 * relu``, SELU's scale, BatchNorm after the activation). Nothing is
identified by its values; every number is a theorem about the program:

* **piecewise-linear programs** (``max``/``min``/``abs`` with constants, ``select`` on
  comparisons of piecewise-linear values, sums and constant multiples: ReLU in every spelling,
  leaky ReLU, PReLU, hard tanh, ReLU6, ``x * (x > 0)``) are evaluated exactly in rational
  arithmetic (`fractions.Fraction`; float constants are exact rationals): the breakpoints, the
  slope and intercept of every piece, per distinct value of the per-channel constants. The
  Lipschitz constant is the largest |slope|, exactly (rounded up to a float); $g(0)$, positive
  homogeneity (every breakpoint at 0, every intercept 0) and the number of linear pieces are
  read off;
* **other programs** get $\sup_t|g'(t)|$ from interval arithmetic with derivative enclosures,
  branch and bound on $[-M, M]$ and envelopes on the tails (`_intervals.py`, `_tails.py`);
* **continuity.** A ``select`` (``jnp.where``; a product with a comparison cast to a number,
  ``x * (x > 0)``, is read as one) is accepted only where its branches are proved equal, in exact
  arithmetic, at every point where its predicate can switch (the zeros of the difference of
  the compared piecewise-linear values); otherwise it is refused as discontinuous (a
  thresholded ReLU ``h * (h > 0.05)``, a hard shrink). Operations with no rule (``round``,
  ``floor``, ``ceil``, ``sign``, a comparison used as a number, integer casts, random bits, ...)
  are refused by name.

The program's float rounding is not modelled: the constant is that of the function the program
computes in real arithmetic (its float version is a step function at the scale of one ulp).
"""

from __future__ import annotations

import math
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction
from typing import Any

import jax.numpy as jnp
import numpy as np

from genbounds.core._checks import NotBoundable

from ._activations import Activation
from ._exact import (
    Discontinuous,
    Inexact,
    NotPWL,
    const_rows,
    exact,
    float_down,
    float_up,
    pwl,
    select_thresholds,
)
from ._intervals import Unbounded
from ._tails import sup_abs_derivative

_UNARY = {"exp", "expm1", "log", "log1p", "tanh", "logistic", "erf", "erfc", "erf_inv", "sin",
          "cos", "sqrt", "rsqrt", "atan"}
_IDENTITY = {"copy", "copy_p"}
_STEP = {"round", "floor", "ceil", "sign", "is_finite", "nextafter", "rem", "reduce_precision",
         "and", "or", "xor", "population_count", "clz", "shift_left", "shift_right_logical",
         "shift_right_arithmetic"}
_FLIP = {"gt": "le", "le": "gt", "ge": "lt", "lt": "ge", "eq": "ne", "ne": "eq"}
_MAX_ROWS = 20_000


class Expr:
    """One node of an element-wise program.

    ``op`` is the operation the analysis reads (``var``, ``const``, ``add``, ``sub``, ``mul``,
    ``div``, ``neg``, ``abs``, ``max``, ``min``, ``select``, ``cmp``, ``ind``, ``unary``,
    ``ipow``, ``id``, ``refuse``) with ``args`` and ``info``; ``ev`` is how the program computes
    it (``("var",)``, ``("const", array)`` or ``("prim", primitive, params, args)``), used to
    re-evaluate the records exactly as the program does.
    """

    __slots__ = ("op", "args", "info", "const", "ev", "label")

    def __init__(self, op, args=(), info=None, const=None, ev=None, label=None):
        self.op, self.args, self.info = op, tuple(args), info or {}
        self.const, self.ev, self.label = const, ev, label


VAR = Expr("var", ev=("var",))


def constant(val: Any, act_shape: tuple) -> Expr:
    """A constant operand of an element-wise operation on activations of shape ``act_shape``
    (batch axis first): a scalar, or an array whose rows along the batch axis agree."""
    arr = np.asarray(val)
    if arr.ndim and arr.ndim == len(act_shape):
        if arr.shape[0] != 1 and not np.all(arr == arr[:1]):
            raise NotBoundable("a constant that differs between the examples of the batch is "
                               "combined with the activations")
        arr = arr[0]
    if arr.size and np.all(arr == arr.reshape(-1)[0]):
        arr = arr.reshape(-1)[0]
    sem = arr.astype(bool) if arr.dtype == bool else np.asarray(arr, np.float64)
    return Expr("const", const=np.asarray(sem), ev=("const", np.asarray(arr)))


def _c(v) -> Expr:  # an analysis-only constant
    return Expr("const", const=np.asarray(v, np.float64))


def apply(prim: Any, params: dict, args: list[Expr], dtype: Any, label: str | None) -> Expr:
    """The expression of primitive ``prim`` applied to ``args`` (at least one non-constant)."""
    name = prim.name
    ev = ("prim", prim, params, tuple(args))

    def mk(op, sargs=(), **info):
        return Expr(op, sargs, info, ev=ev, label=label)

    a = args
    if name in ("add", "sub", "div", "max", "min"):
        return mk(name, a)
    if name == "mul":
        ind = [i for i, x in enumerate(a) if x.op == "ind"]
        if len(ind) == 1:  # u * (pred as a number) = where(pred, u, 0)
            return mk("select", (a[ind[0]].args[0], _c(0.0), a[1 - ind[0]]))
        return mk("mul", a)
    if name in ("neg", "abs"):
        return mk(name, a)
    if name in _UNARY:
        return mk("unary", a, fn=name)
    if name == "exp2":
        return mk("unary", (Expr("mul", (_c(math.log(2.0)), a[0])),), fn="exp")
    if name in ("integer_pow", "square"):
        return mk("ipow", a, n=int(params.get("y", 2)))
    if name == "pow" and a[1].op == "const" and a[0].op != "const":
        c = np.asarray(a[1].const, np.float64)
        if c.size and np.all(c == np.round(c)) and np.all(c == c.reshape(-1)[0]) \
                and abs(c.reshape(-1)[0]) <= 64:
            return mk("ipow", a[:1], n=int(c.reshape(-1)[0]))
        return mk("unary", (Expr("mul", (a[1], Expr("unary", a[:1], {"fn": "log"}))),), fn="exp")
    if name == "clamp":
        return mk("min", (Expr("max", (a[1], a[0])), a[2]))
    if name == "select_n":
        if len(a) != 3 or a[0].op not in ("cmp", "const"):
            return mk("refuse", reason="a select_n whose predicate is not one comparison")
        if a[0].op == "const":
            v = np.asarray(a[0].const)
            if v.size and np.all(v == v.reshape(-1)[0]):
                return mk("id", (a[1 + int(bool(v.reshape(-1)[0]))],))
            return mk("refuse", reason="a select_n on a predicate that varies per element")
        return mk("select", a)
    if name in _FLIP:
        if a[0] is a[1]:  # x == x, x != x (jax's NaN checks): constant for real numbers
            return Expr("const", const=np.asarray(name in ("eq", "ge", "le")), ev=ev)
        return mk("cmp", a, kind=name)
    if name == "not" and a[0].op == "cmp":
        return mk("cmp", a[0].args, kind=_FLIP[a[0].info["kind"]])
    if name == "convert_element_type":
        src = a[0]
        new = np.dtype(params["new_dtype"])
        if src.op in ("cmp",) or (src.op == "const" and src.const.dtype == bool):
            if new == np.dtype(bool):
                return mk("id", a)
            return mk("ind", a)
        if np.issubdtype(new, np.floating) or new == np.dtype(jnp.bfloat16):
            return mk("id", a)
        return mk("refuse", a, reason=f"convert_element_type to {new.name} rounds to integers "
                                      "(a step function)")
    if name in _IDENTITY:
        return mk("id", a)
    why = "a step function (discontinuous)" if name in _STEP else \
        "no rule bounds its derivative"
    return mk("refuse", a, reason=f"the element-wise operation {name!r}: {why}")


# ----------------------------------------------------------------------------------------------
# Evaluation (the records re-evaluate the program exactly as it was written).


def evaluate(e: Expr, x: Any) -> Any:
    memo: dict = {}

    def ev(n):
        k = id(n)
        if k in memo:
            return memo[k]
        kind = n.ev[0]
        if kind == "var":
            r = x
        elif kind == "const":
            r = jnp.broadcast_to(jnp.asarray(n.ev[1]), x.shape)
        else:
            _, prim, params, args = n.ev
            vals = [ev(a) for a in args]
            # constants take the float dtype of the values they meet (the records may be
            # evaluated in another float dtype than the one traced)
            dts = [v.dtype for a, v in zip(args, vals, strict=True)
                   if a.ev[0] != "const" and jnp.issubdtype(v.dtype, jnp.floating)]
            if dts:
                vals = [v.astype(dts[0]) if a.ev[0] == "const"
                        and jnp.issubdtype(v.dtype, jnp.floating) else v
                        for a, v in zip(args, vals, strict=True)]
            r = prim.bind(*vals, **params)
        memo[k] = r
        return r

    return ev(e)


# ----------------------------------------------------------------------------------------------
# Affine parts and the decomposition into records.


def _affine(e: Expr, memo: dict):
    """(alpha, c) float64 arrays if e = alpha * t + c, else None."""
    k = id(e)
    if k in memo:
        return memo[k]
    op, r = e.op, None
    if op == "var":
        r = (np.float64(1.0), np.float64(0.0))
    elif op == "const" and e.const.dtype != bool:
        r = (np.float64(0.0), np.asarray(e.const, np.float64))
    elif op in ("neg", "add", "sub", "mul", "div") or (op == "id" and _same_dtype(e)):
        fs = [_affine(a, memo) for a in e.args]
        if all(f is not None for f in fs):
            if op == "id":
                r = fs[0]
            elif op == "neg":
                r = (-fs[0][0], -fs[0][1])
            elif op in ("add", "sub"):
                s = 1.0 if op == "add" else -1.0
                r = (fs[0][0] + s * fs[1][0], fs[0][1] + s * fs[1][1])
            elif op == "mul":
                if e.args[0].op == "const":
                    r = (fs[1][0] * fs[0][1], fs[1][1] * fs[0][1])
                elif e.args[1].op == "const":
                    r = (fs[0][0] * fs[1][1], fs[0][1] * fs[1][1])
            elif e.args[1].op == "const" and np.all(fs[1][1] != 0):
                r = (fs[0][0] / fs[1][1], fs[0][1] / fs[1][1])
    memo[k] = r
    return r


def _same_dtype(e: Expr) -> bool:
    ev = e.ev
    if ev is None or ev[0] != "prim":
        return True
    new, src = ev[2].get("new_dtype"), None
    src_ev = ev[3][0].ev
    if src_ev is not None and src_ev[0] == "const":
        src = src_ev[1].dtype
    return new is None or src is None or np.dtype(new) == np.dtype(src)


def _subst(e: Expr, old: Expr, memo: dict) -> Expr:
    if e is old:
        return VAR
    k = id(e)
    if k in memo:
        return memo[k]
    if not e.args and (e.ev is None or e.ev[0] != "prim"):
        out = e
    else:
        ev = e.ev
        if ev is not None and ev[0] == "prim":
            ev = ev[:3] + (tuple(_subst(a, old, memo) for a in ev[3]),)
        out = Expr(e.op, [_subst(a, old, memo) for a in e.args], e.info, e.const, ev, e.label)
    memo[k] = out
    return out


def _children(e: Expr) -> list[Expr]:
    out = list(e.args)
    if e.ev is not None and e.ev[0] == "prim":
        out.extend(e.ev[3])
    return out


def _all_nodes(e: Expr) -> list[Expr]:
    seen: dict = {}
    stack = [e]
    while stack:
        n = stack.pop()
        if id(n) not in seen:
            seen[id(n)] = n
            stack.extend(_children(n))
    return list(seen.values())


def _reaches(e: Expr, target: Expr, blocked: Expr | None) -> bool:
    seen: set = set()
    stack = [e]
    while stack:
        n = stack.pop()
        if n is blocked or id(n) in seen:
            continue
        if n is target:
            return True
        seen.add(id(n))
        stack.extend(_children(n))
    return False


def _affine_dominator(core: Expr, aff: dict) -> Expr | None:
    """The affine sub-expression closest to the output through which every use of the input
    passes (the bias or BatchNorm before an activation), or None."""
    doms = [n for n in _all_nodes(core) if n is not VAR and n.op != "const"
            and _affine(n, aff) is not None and not _reaches(core, VAR, n)]
    for d in doms:
        if all(o is d or _reaches(d, o, None) for o in doms):
            return d
    return None


def _outer(e: Expr, aff: dict):
    """(core, alpha, c) with e = alpha * core + c, peeling constant affine operations."""
    alpha, c = np.float64(1.0), np.float64(0.0)
    while True:
        op = e.op
        if op in ("add", "sub", "mul", "div") and sum(a.op == "const" for a in e.args) == 1:
            i = 0 if e.args[0].op == "const" else 1
            k, inner = np.asarray(e.args[i].const, np.float64), e.args[1 - i]
            if op == "add":
                c = c + alpha * k
            elif op == "sub":
                c, alpha = (c - alpha * k, alpha) if i == 1 else (c + alpha * k, -alpha)
            elif op == "mul":
                alpha = alpha * k
            elif i == 1 and np.all(k != 0):
                alpha = alpha / k
            else:
                return e, alpha, c
            e = inner
        elif op == "neg":
            alpha, e = -alpha, e.args[0]
        else:
            return e, alpha, c


def decompose(e: Expr, shape: tuple) -> list[tuple[str, Any]]:
    """The records of an element-wise program: ``[("scale", a), ("shift", c),
    ("activation", Activation), ("scale", a'), ("shift", c')]`` (each only where needed), with
    the constants broadcast to ``shape`` (one example)."""
    aff: dict = {}
    whole = _affine(e, aff)
    if whole is not None:
        return _affine_records(*whole, shape)
    core, alpha, c = _outer(e, aff)
    pre: list = []
    f = _affine_dominator(core, aff)
    if f is not None:
        pre = _affine_records(*_affine(f, aff), shape)
        core = _subst(core, f, {})
    act = analyse(core)
    return pre + [("activation", act)] + _affine_records(alpha, c, shape)


def _affine_records(alpha, c, shape) -> list:
    out = []
    alpha = np.broadcast_to(np.asarray(alpha, np.float64), shape) if np.ndim(alpha) else alpha
    c = np.broadcast_to(np.asarray(c, np.float64), shape) if np.ndim(c) else c
    if np.any(np.asarray(alpha) != 1.0):
        out.append(("scale", np.asarray(alpha, np.float64)))
    if np.any(np.asarray(c) != 0.0):
        out.append(("shift", np.asarray(c, np.float64)))
    return out


# ----------------------------------------------------------------------------------------------
# The analysis of the non-linear core.


def formula(e: Expr, depth: int = 0) -> str:
    """A readable form of the program (``t`` the input)."""
    if depth > 6:
        return "..."
    op = e.op
    if op == "var":
        return "t"
    if op == "const":
        c = np.asarray(e.const)
        return f"{c.reshape(-1)[0]:.6g}" if c.size == 1 else f"c{tuple(c.shape)}"
    a = [formula(x, depth + 1) for x in e.args]
    sym = {"add": "+", "sub": "-", "mul": "*", "div": "/"}
    if op in sym:
        return f"({a[0]} {sym[op]} {a[1]})"
    if op == "cmp":
        return f"{a[0]} {e.info['kind']} {a[1]}"
    if op == "select":
        return f"where({a[0]}, {a[2]}, {a[1]})"
    if op == "unary":
        return f"{e.info['fn']}({a[0]})"
    if op == "ipow":
        return f"{a[0]}**{e.info['n']}"
    if op == "id":
        return a[0]
    if op == "refuse":
        return f"{e.ev[1].name if e.ev else '?'}({', '.join(a)})"
    return f"{op}({', '.join(a)})"


def analyse(core: Expr) -> Activation:
    """The `Activation` of a non-linear element-wise program, or `NotBoundable` naming what
    cannot be bounded."""
    text = formula(core)
    try:
        rows = const_rows(core)
        try:
            fs = [pwl(core, row, {}) for row in rows]
        except NotPWL:
            fs = None
        if fs is not None:
            lip = max(abs(a) for f in fs for a, _ in f.pieces)
            zero = all(f.at(Fraction(0)) == 0 for f in fs)
            homog = all(not any(f.breaks) and all(c == 0 for _, c in f.pieces) for f in fs)
            return Activation(core.label or text, float_up(lip), zero, homog,
                              lambda x, e=core: evaluate(e, x), pieces=max(len(f.pieces)
                                                                           for f in fs),
                              formula=text, method="exact (piecewise linear)",
                              slope_range=(float_down(min(a for f in fs for a, _ in f.pieces)),
                                           float_up(max(a for f in fs for a, _ in f.pieces))))
        zs = select_thresholds(core, rows)
        m = max(16.0, 2.0 * max((abs(z) for z in zs), default=0.0) + 1.0)
        upper, lower = sup_abs_derivative(core, m, zs)
        upper = _round_up(upper)
        try:
            zero = all(exact(core, Fraction(0), row, {}) == 0 for row in rows)
        except Inexact:
            zero = False
        return Activation(core.label or text, upper, zero, False,
                          lambda x, e=core: evaluate(e, x), pieces=None, formula=text,
                          method=f"interval bound (largest |g'| found at a point: {lower:.7g})")
    except Discontinuous as err:
        raise NotBoundable(f"the element-wise function g(t) = {text} is discontinuous at "
                           f"t = {float(err.z):.6g} (the branches of its select differ there): "
                           "it has no Lipschitz constant") from None
    except Unbounded as err:
        raise NotBoundable(f"the element-wise function g(t) = {text} cannot be bounded: "
                           f"{err}") from None


def _round_up(x: float, digits: int = 7) -> float:
    """x rounded up to ``digits`` significant digits (so that every spelling of a function,
    whose bounds differ in the last bits, gets the same constant); exact floats of fewer digits
    (1.0, 0.25) are kept."""
    if x == 0 or not math.isfinite(x):
        return x
    d = Decimal(x)
    q = Decimal(1).scaleb(d.adjusted() - digits + 1)
    r = float(d.quantize(q, rounding=ROUND_CEILING))
    while r < x:
        r = float(np.nextafter(r, math.inf))
    return r


def relu() -> Activation:
    """ReLU, as the analysis of ``max(t, 0)`` (the activation a chain read from parameter names
    assumes)."""
    from jax import lax

    e = Expr("max", (VAR, _c(0.0)), ev=("prim", lax.max_p, {}, (VAR, Expr(
        "const", const=np.asarray(0.0), ev=("const", np.asarray(0.0, np.float32))))),
        label="relu")
    return analyse(e)
