r"""Enclosing the float rounding of bound propagation, so that bounds computed in float32 (or
float64) are bounds of the network's real-arithmetic records.

**Lemma** (Higham 2002, "Accuracy and Stability of Numerical Algorithms", 2nd ed., §3.1,
Lemma 3.1 and eq. 3.5). With unit roundoff $u$ (round to nearest: $2^{-24}$ in float32,
$2^{-53}$ in float64), a sum of $n$ products computed in *any* order, with or without fused
multiply-adds, satisfies $|\mathrm{fl}(\sum_i a_i b_i) - \sum_i a_i b_i| \le \gamma_n
\sum_i |a_i||b_i|$, $\gamma_n = nu/(1 - nu)$. So a linear record $y = Lx$ evaluated in floats,
or transposed ($L^\top \Lambda$), is off by at most $\gamma_n |L||x|$ (resp. $\gamma_n
|L|^\top|\Lambda|$) element-wise, $n$ the most terms any of its sums has.

How each bound uses it (see `_ibp.py`, `_crown.py`, `_ball.py`):

* **intervals** (interval propagation): the computed centre $Lm + b$ and radius $|L|r$ are
  widened by $\gamma_{n}(|L||m| + |b|)$ and $\gamma_n |L| r$, and every endpoint is moved
  outwards by its own rounding (`outward`), so each interval contains the exact one;
* **backward passes** (CROWN, α-CROWN): the computed coefficients $\tilde\Lambda_{in}$ of a
  record differ from $L^\top\Lambda$ by $E$ with $|E| \le \gamma_n |L|^\top|\Lambda|$; the
  chain inequality then holds with $\tilde\Lambda_{in}$ in place of the exact ones less
  $|E|^\top m \le \gamma_n |\Lambda|^\top (|L| m)$, $m$ a bound on $|h|$ over the ball (from the
  record's interval). The same holds for the relaxations' element-wise products and the sums of
  coefficients at residual connections (a few roundings each), and for the constant. These
  deficits are subtracted from the constant; the upper lines of the ReLU relaxation are raised
  by their rounding so that they stay above the function;
* **concretisation**: the centre $\Lambda^\top x_0 + \beta$ is lowered by $\gamma_{d+1}
  (|\Lambda|^\top|x_0| + |\beta|)$ and the dual norm raised by $(1 + \gamma_{d+2})$.

Every $\gamma$ here is inflated by 1% and by two more roundings, which covers the rounding of the
error terms themselves. The lemma assumes no underflow; XLA's CPU backend flushes subnormal
results to zero, so each product and sum may also lose up to the smallest normal number
(`tiny`), charged as an absolute term per product and sum (negligible in value). The lemma
is about sums of products; it covers the CPU backend of XLA (convolutions and matrix products
as sums of products) and matrix products on GPUs at ``precision=HIGHEST``. Convolution algorithms that are not sums of products (Winograd, FFT, which
cuDNN may choose) are not covered by it.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np


def unit(dtype) -> float:
    """The unit roundoff $u$ of ``dtype`` (half its machine epsilon)."""
    return float(np.finfo(np.dtype(dtype)).eps) / 2


def tiny(dtype) -> float:
    """The smallest normal number of ``dtype``: what one product or sum can lose to underflow
    where subnormal results are flushed to zero."""
    return float(np.finfo(np.dtype(dtype)).tiny)


def gamma(n: int, dtype) -> float:
    """$\\gamma_{n+2}$ of ``dtype``, inflated by 1% (a Python float)."""
    nu = (int(n) + 2) * unit(dtype)
    if nu >= 0.01:
        raise ValueError(f"rounding enclosure: sums of {n} terms are too long for "
                         f"{np.dtype(dtype).name} (n u = {nu:.2g}); compute in float64")
    return 1.01 * nu / (1.0 - nu)


def magnitude(interval) -> jnp.ndarray:
    """$\\max(|l|, |u|)$: a bound on $|h|$ over an interval $[l, u]$."""
    lo, hi = interval
    return jnp.maximum(jnp.abs(lo), jnp.abs(hi))


def outward(lo: jnp.ndarray, hi: jnp.ndarray, slack=0.0) -> tuple[jnp.ndarray, jnp.ndarray]:
    """``[lo - slack, hi + slack]`` moved outwards by the rounding of that sum and of this
    step ($4u$ of each endpoint, and the smallest normal number for values flushed to zero), so
    that it contains the exact interval. Differentiable (α-CROWN optimises through it)."""
    u, t = unit(lo.dtype), tiny(lo.dtype)
    lo2, hi2 = lo - slack, hi + slack
    return lo2 - 4 * u * jnp.abs(lo2) - t, hi2 + 4 * u * jnp.abs(hi2) + t


def terms(node, in_size: int, out_size: int) -> int:
    """The most terms of any sum a record's linear part, or its transpose, computes (an upper
    bound, for `gamma`): fan-in and fan-out of a dense or convolution kernel, the window of a
    sum pool (a global pool: its input's size over its output's), 2 for a residual add, 1 for
    element-wise records."""
    op = node.op
    if op == "linear":
        k = node.layer.kernel
        size = int(np.prod(k.shape))
        return max(size // int(k.shape[-1]), size // int(k.shape[-2])) + 1
    if op == "pool":
        if node.info["kind"].startswith("global_"):
            return max(1, in_size // max(1, out_size)) + 1
        return int(np.prod(node.info["params"]["window_dimensions"])) + 1
    if op == "add":
        return 2
    return 1
