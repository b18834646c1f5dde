r"""The record of an element-wise function of a network, as the bounds read it.

An element-wise function $g$ found in a network's jaxpr is *analysed* as a program
(`_elementwise.py` in this package; docs/networks.md lists the rule per primitive), never
identified by its values. Its record carries

* ``lipschitz``: an upper bound on $\sup_t |g'(t)|$, its Lipschitz constant for the $\ell_2$
  norm when applied element-wise (exact for piecewise-linear programs);
* ``zero_at_zero``: whether $g(0) = 0$ (proved exactly; False when it cannot be proved), which
  Bartlett et al. (2017)'s covering argument needs ($\|\sigma(z)\|_2 \le \rho\|z\|_2$);
* ``homogeneous``: whether $g(at) = a\,g(t)$ for $a \ge 0$ (proved exactly for
  piecewise-linear programs: every breakpoint at 0, every intercept 0), which the Neyshabur
  et al. (2018) and Golowich et al. (2018) bounds need;
* ``pieces``: the number of linear pieces of a piecewise-linear program (the VC-dimension
  bound counts them), None otherwise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax


@dataclasses.dataclass(frozen=True)
class Activation:
    r"""An element-wise function of a network and what the analysis of its program proved.

    Attributes:
      name: the name of the function that applied it (``"relu"``, ``"elu"``) or its formula.
      lipschitz: upper bound on its Lipschitz constant $\sup_t |g'(t)|$.
      zero_at_zero: whether it maps 0 to 0.
      homogeneous: whether it is positively homogeneous (ReLU-like).
      fn: the program (used to re-evaluate the network from its records).
      pieces: number of linear pieces when piecewise linear, else None.
      formula: the program as a formula in ``t``.
      method: how ``lipschitz`` was obtained.
      slope_range: ``(lo, hi)`` with every slope of a piecewise-linear program in it (exact,
        from its pieces); None for other programs (their slopes lie in
        ``[-lipschitz, lipschitz]``).
    """

    name: str
    lipschitz: float
    zero_at_zero: bool
    homogeneous: bool
    fn: Callable[[jax.Array], jax.Array] = dataclasses.field(compare=False, repr=False)
    pieces: int | None = None
    formula: str = ""
    method: str = ""
    slope_range: tuple[float, float] | None = None
