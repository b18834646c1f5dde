r"""LayerNorm and RMSNorm read from their primitives, with a global Lipschitz constant.

A normalisation layer divides by a statistic of its own input, so the jaxpr interpreter
(`_trace.py`) cannot read it one primitive at a time. Instead, a reduction of an activation over
per-example axes starts a *symbolic* value (`Sym`): an expression over the one node ``x`` it
reduces, kept as a small tree of primitives (``reduce_sum``, ``div``, ``square``, ``sub``,
``rsqrt``, ``max``, broadcasts, and constants). When a value leaves this symbolic domain (it is
consumed by a linear map, added to another activation, or returned), `lower` reads the tree:

* a sum of ``x`` over some axes, times a constant: a global sum (or mean) pool, a linear map;
* $\gamma \odot (x - \mu(x)) / \sqrt{\sigma^2(x) + \varepsilon} + \beta$: **LayerNorm**, with
  $\mu$ the mean and $\sigma^2$ the variance over the normalised axes, written either as the mean
  of the squared deviations or as $\max(0, \overline{x^2} - \mu^2)$ (Flax's fast variance);
* $\gamma \odot x / \sqrt{\overline{x^2} + \varepsilon}$ (+ $\beta$): **RMSNorm**;

and anything else is refused with the reason (a data-dependent normalisation no rule covers).
The constants $\gamma$, $\beta$ become the scale and shift records after a ``norm`` record; the
re-evaluation of the records against ``apply_fn`` (`Network.trace`) checks the reading.

**Lipschitz constant** (for the $\ell_2$ norm, over the normalised axes of one example; the
layer acts on each token or position independently, so the same constant holds for the whole
example). Let $d$ be the number of normalised entries, $P = I - \frac1d \mathbf 1\mathbf 1^\top$
the centring projection and $u = Px$, so $\sigma^2 = \|u\|^2/d$ and

$$N(x) = \frac{u}{\sqrt{\|u\|^2/d + \varepsilon}} = \sqrt d\, h(u), \qquad
h(u) = \frac{u}{\sqrt{\|u\|^2 + c}},\ c = d\varepsilon .$$

The Jacobian of $h$ is $s^{-1}(I - uu^\top/s^2)$ with $s = \sqrt{\|u\|^2 + c}$: its eigenvalues
are $1/s$ (on $u^\perp$) and $c/s^3$ (along $u$), both at most $1/\sqrt c$, with equality at
$u = 0$. Since $\|P\| = 1$ and the domain is convex, $\mathrm{Lip}(N) \le \sqrt d/\sqrt{d
\varepsilon} = 1/\sqrt\varepsilon$, attained at any input with $u = 0$ (a constant vector),
along a direction orthogonal to $\mathbf 1$ (for $d \ge 2$). RMSNorm is the same with $P = I$:
$x/\sqrt{\|x\|^2/d + \varepsilon}$ has Lipschitz constant exactly $1/\sqrt\varepsilon$ (at
$x = 0$). With the scale $\gamma$ the bound is $\max_i|\gamma_i|/\sqrt\varepsilon$; the shift
$\beta$ changes nothing. **This constant is large** ($10^3$ for Flax's default
$\varepsilon = 10^{-6}$, 316 for $10^{-5}$): it is the slope of the layer at inputs whose
entries are all equal, which a trained network rarely meets, but a bound that holds for every
input must pay it, and each normalisation layer multiplies the network's bound by it.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from genbounds.core._checks import NotBoundable

# Primitives a symbolic value may go through (besides reduce_sum).
SYMBOLIC_PRIMS = {
    "add", "sub", "mul", "div", "square", "integer_pow", "rsqrt", "sqrt", "max", "neg",
    "convert_element_type", "broadcast_in_dim", "reshape", "expand_dims", "squeeze",
    "stop_gradient", "copy", "copy_p", "reduce_sum",
}
_SHAPE_PRIMS = {"convert_element_type", "broadcast_in_dim", "reshape", "expand_dims", "squeeze",
                "stop_gradient", "copy", "copy_p"}


class Sym:
    """A value computed from one node's output ``x`` through a reduction over per-example axes:
    an expression tree ``("x",)``, ``("c", array)`` or ``("p", primitive, params, *args)``."""

    __slots__ = ("src", "expr", "shape", "dtype", "scope", "done")

    def __init__(self, src: int, expr: tuple, shape, dtype, scope: str):
        self.done = None  # the records it was lowered to (`_trace.py`)
        self.src = src
        self.expr = expr
        self.shape = tuple(shape)
        self.dtype = dtype
        self.scope = scope


X = ("x",)


def evaluate(expr: tuple, x: jax.Array) -> jax.Array:
    """The value of `expr` for the source node's value `x` (batch axis first)."""
    if expr[0] == "x":
        return x
    if expr[0] == "c":
        return jnp.asarray(expr[1])
    prim, params = expr[1], expr[2]
    args = [evaluate(a, x) for a in expr[3:]]
    if prim.name == "broadcast_in_dim" and args and args[0].shape[:1] != x.shape[:1]:
        params = dict(params, shape=(x.shape[0],) + tuple(params["shape"][1:]))
    if prim.name == "reshape" and args and args[0].ndim and params.get("new_sizes"):
        params = dict(params, new_sizes=(args[0].shape[0],) + tuple(params["new_sizes"][1:]))
    return prim.bind(*args, **params)


def is_square_fn(g: Any, dtype: Any) -> bool:
    """Whether the scalar function `g` is, as a program, one squaring (``square``,
    ``integer_pow`` with exponent 2 or ``t * t``), up to dtype conversions."""
    try:
        jaxpr = jax.make_jaxpr(g)(jnp.zeros((), dtype)).jaxpr
    except Exception:  # noqa: BLE001 - not a function we can read: not a square
        return False
    eqns = [e for e in jaxpr.eqns if e.primitive.name != "convert_element_type"]
    if len(eqns) != 1:
        return False
    e = eqns[0]
    name = e.primitive.name
    if name == "square":
        return True
    if name == "integer_pow":
        return int(e.params["y"]) == 2
    if name == "mul":
        return e.invars[0] is e.invars[1]
    return False


# ----------------------------------------------------------------------------------------------
# Reading an expression.


def _strip(e: tuple) -> tuple:
    while e[0] == "p" and e[1].name in _SHAPE_PRIMS:
        e = e[3]
    return e


def _const(e: tuple) -> np.ndarray | None:
    e = _strip(e)
    return np.asarray(e[1], np.float64) if e[0] == "c" else None


def _scalar(e: tuple) -> float | None:
    c = _const(e)
    if c is None or np.size(c) == 0 or not np.all(c == c.flat[0]):
        return None
    return float(c.flat[0])


def _same(a: tuple, b: tuple) -> bool:
    a, b = _strip(a), _strip(b)
    if a is b:
        return True
    if a[0] != b[0]:
        return False
    if a[0] == "x":
        return True
    if a[0] == "c":
        return np.shape(a[1]) == np.shape(b[1]) and bool(np.all(np.asarray(a[1]) ==
                                                               np.asarray(b[1])))
    if a[1] is not b[1] or len(a) != len(b) or a[2] != b[2]:
        return False
    return all(_same(p, q) for p, q in zip(a[3:], b[3:], strict=True))


def _op(e: tuple) -> str | None:
    e = _strip(e)
    return e[1].name if e[0] == "p" else None


def _mean(e: tuple, d: int, axes: tuple) -> tuple | None:
    """E if e is the mean of E over `axes` (sum / d or sum * (1/d)), else None."""
    e = _strip(e)
    if _op(e) not in ("div", "mul"):
        return None
    a, b = e[3], e[4]
    s = _scalar(b)
    if s is None:
        a, b = b, a
        s = _scalar(b)
        if s is None or _op(e) == "div":
            return None
    factor = 1.0 / s if _op(e) == "div" else s
    if not math.isclose(factor * d, 1.0, rel_tol=1e-6):
        return None
    a = _strip(a)
    if _op(a) != "reduce_sum" or tuple(a[2]["axes"]) != axes:
        return None
    return a[3]


def _squared(e: tuple) -> tuple | None:
    e = _strip(e)
    name = _op(e)
    if name == "square" or (name == "integer_pow" and int(e[2]["y"]) == 2):
        return e[3]
    if name == "mul" and _same(e[3], e[4]):
        return e[3]
    return None


def _variance(v: tuple, d: int, axes: tuple) -> str | None:
    """``"layer"`` if v is the variance of x over `axes`, ``"rms"`` if it is the mean of x^2."""
    v = _strip(v)
    if _op(v) == "max":  # max(0, var): Flax's fast variance guards rounding below zero
        a, b = v[3], v[4]
        if _scalar(a) == 0.0:
            v = _strip(b)
        elif _scalar(b) == 0.0:
            v = _strip(a)
        else:
            return None
    if _op(v) == "sub":  # mean(x^2) - mean(x)^2
        m2, sq = _mean(v[3], d, axes), _squared(v[4])
        if m2 is not None and sq is not None:
            base, mu = _squared(m2), _mean(sq, d, axes)
            if base is not None and mu is not None and _same(base, X) and _same(mu, X):
                return "layer"
        return None
    inner = _mean(v, d, axes)
    base = None if inner is None else _squared(inner)
    if base is None:
        return None
    if _same(base, X):
        return "rms"
    if _centred(base, d, axes):
        return "layer"
    return None


def _centred(e: tuple, d: int, axes: tuple) -> bool:
    """Whether e is x - mean(x) over `axes`."""
    e = _strip(e)
    if _op(e) != "sub" or not _same(e[3], X):
        return False
    mu = _mean(e[4], d, axes)
    return mu is not None and _same(mu, X)


def _factors(e: tuple, out: list, inverse: bool = False) -> None:
    e = _strip(e)
    name = _op(e)
    if name == "mul":
        _factors(e[3], out, inverse)
        _factors(e[4], out, inverse)
    elif name == "div":
        _factors(e[3], out, inverse)
        _factors(e[4], out, not inverse)
    elif name == "neg":
        out.append((("c", np.asarray(-1.0)), False))
        _factors(e[3], out, inverse)
    else:
        out.append((e, inverse))


def _axes_of(expr: tuple) -> tuple | None:
    """The axes of the (single kind of) reduction in `expr`."""
    found: set = set()

    def walk(e):
        if e[0] == "p":
            if e[1].name == "reduce_sum":
                found.add(tuple(int(a) for a in e[2]["axes"]))
            for a in e[3:]:
                walk(a)

    walk(expr)
    return found.pop() if len(found) == 1 else None


def read_norm(expr: tuple, shape: tuple) -> dict | None:
    """The normalisation `expr` computes from x of shape `shape` (batch first), or None.

    Returns ``{"kind": "layer" | "rms", "axes", "eps", "gamma", "beta"}`` (gamma and beta
    float64 arrays broadcastable to `shape`, or None).
    """
    axes = _axes_of(expr)
    nd = len(shape)
    if axes is None or 0 in axes or axes != tuple(range(nd - len(axes), nd)):
        return None
    d = int(np.prod([shape[a] for a in axes]))
    e = _strip(expr)
    beta = None
    while _op(e) in ("add", "sub"):
        c = _const(e[4])
        if c is None or _op(e[4]) == "reduce_sum":
            if _op(e) == "add" and _const(e[3]) is not None:
                c, e = _const(e[3]), _strip(e[4])
            else:
                break
        else:
            c = c if _op(e) == "add" else -c
            e = _strip(e[3])
        beta = c if beta is None else beta + c
    factors: list = []
    _factors(e, factors)
    gamma = None
    centre = None
    stat = None
    for f, inv in factors:
        c = _const(f)
        if c is not None:
            c = 1.0 / c if inv else c
            gamma = c if gamma is None else gamma * c
            continue
        if not inv and _op(f) == "rsqrt" and stat is None:
            stat = _strip(f)[3]
        elif inv and _op(f) == "sqrt" and stat is None:
            stat = _strip(f)[3]
        elif not inv and centre is None and (_same(f, X) or _centred(f, d, axes)):
            centre = "rms" if _same(f, X) else "layer"
        elif not inv and centre is None and _op(f) == "sub" and _same(_strip(f)[3], X) \
                and _scalar(_strip(f)[4]) == 0.0:
            centre = "rms"  # x - 0 (Flax's RMSNorm subtracts a zero mean)
        else:
            return None
    if centre is None or stat is None:
        return None
    stat = _strip(stat)
    if _op(stat) != "add":
        return None
    eps, v = _scalar(stat[4]), stat[3]
    if eps is None:
        eps, v = _scalar(stat[3]), stat[4]
    if eps is None or not eps > 0.0:
        return None
    kind = _variance(v, d, axes)
    if kind is None or (kind == "layer") != (centre == "layer"):
        return None
    return {"kind": kind, "axes": axes, "eps": float(eps), "gamma": gamma, "beta": beta,
            "d": d}


def read_linear(expr: tuple) -> tuple[tuple, float] | None:
    """``(axes, factor)`` if `expr` is factor * sum(x over axes) (a global sum or mean)."""
    factor = 1.0
    e = _strip(expr)
    while _op(e) in ("mul", "div", "neg"):
        if _op(e) == "neg":
            factor, e = -factor, _strip(e[3])
            continue
        s = _scalar(e[4])
        if s is not None:
            factor = factor / s if _op(e) == "div" else factor * s
            e = _strip(e[3])
        elif _op(e) == "mul" and _scalar(e[3]) is not None:
            factor, e = factor * _scalar(e[3]), _strip(e[4])
        else:
            return None
    if _op(e) != "reduce_sum" or not _same(e[3], X):
        return None
    return tuple(int(a) for a in e[2]["axes"]), factor


def refusal(scope: str) -> NotBoundable:
    where = f"layer {scope!r}" if scope else "the network"
    return NotBoundable(
        f"{where}: a reduction of the activations over their own features that is neither a "
        "sum/mean pool nor a LayerNorm or RMSNorm (x - mean, divided by the root of the "
        "variance or mean square plus a positive epsilon): a data-dependent normalisation "
        "that no Lipschitz rule here covers")


def eval_norm(x: jax.Array, info: dict) -> jax.Array:
    """The normalisation record: (x - mean) / sqrt(var + eps) or x / sqrt(mean(x^2) + eps)."""
    axes = info["axes"]
    eps = jnp.asarray(info["eps"], x.dtype)
    if info["kind"] == "layer":
        mu = jnp.mean(x, axis=axes, keepdims=True)
        u = x - mu
        return u * lax.rsqrt(jnp.mean(u * u, axis=axes, keepdims=True) + eps)
    return x * lax.rsqrt(jnp.mean(x * x, axis=axes, keepdims=True) + eps)


def norm_lipschitz(eps: float) -> float:
    """$1/\\sqrt\\varepsilon$, the Lipschitz constant of LayerNorm / RMSNorm without its scale
    (derivation in the module docstring), rounded up."""
    return float(np.nextafter(1.0 / math.sqrt(eps), np.inf))
