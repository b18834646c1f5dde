"""How a spectral norm is computed, as one value: `NormMethod`.

A method name and its options travel together, frozen and hashable, from the public boundary
(`spectral_norm`, `conv_operator_norm`, `genbounds.spectral_norms` and the bounds built on them)
down to the kernels, and into the cache key of a network's norms. The string forms
(``method="lanczos", tol=1e-8``) keep working: `as_norm_method` turns them into a `NormMethod`
once, and refuses an option it does not know by its name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from genbounds.core._checks import check_choice, check_n, check_positive, check_unit_interval

METHODS = ("certified", "exact", "lanczos", "power", "gram")
# The option names a method accepts (every method accepts all of them; each reads its own).
OPTIONS = ("failure_probability", "rtol", "tol", "max_iter", "gram_iters")


@dataclasses.dataclass(frozen=True)
class NormMethod:
    r"""A spectral-norm method and its options.

    Attributes:
      name: ``"certified"`` (default; an upper bound, except with probability at most
        ``failure_probability`` over the random start), ``"exact"`` (SVD), ``"lanczos"`` and
        ``"power"`` (estimates from below), ``"gram"`` (Gram iteration, a deterministic upper
        bound). See `spectral_norm`.
      failure_probability: $\eta \in (0, 1)$ of ``"certified"``, per matrix.
      rtol: target relative slack (> 0) of the certified bound over the Ritz value.
      tol: convergence tolerance (> 0) of ``"lanczos"`` and ``"power"``.
      max_iter: iteration cap (>= 1) of ``"lanczos"`` and ``"power"``; None for the method's
        default (300 for dense Lanczos, 1000 for power iteration and for convolutions).
      gram_iters: number of Gram squarings (>= 1) of ``"gram"``.

    Each method reads its own options and ignores the others. Convolutions map ``"lanczos"``
    to their restarted-Lanczos ``"power"`` and ``"gram"`` to ``"certified"``
    (`conv_operator_norm`).

    Raises:
      ValueError: an unknown name, or an option outside its range.
      TypeError: ``max_iter`` or ``gram_iters`` not an integer.

    Examples:
      >>> import numpy as np
      >>> from genbounds.linalg import NormMethod, spectral_norm
      >>> m = NormMethod("lanczos", tol=1e-10)
      >>> round(spectral_norm(np.diag([3.0, 1.0]), method=m).value, 6)
      3.0
    """

    name: str = "certified"
    failure_probability: float = 1e-6
    rtol: float = 1e-3
    tol: float = 1e-6
    max_iter: int | None = None
    gram_iters: int = 10

    def __post_init__(self) -> None:
        check_choice(self.name, "method", METHODS)
        put = object.__setattr__
        put(self, "tol", check_positive(self.tol, "tol"))
        put(self, "rtol", check_positive(self.rtol, "rtol"))
        put(self, "failure_probability", check_unit_interval(
            self.failure_probability, "failure_probability", closed=False))
        put(self, "gram_iters", check_n(self.gram_iters, "gram_iters"))
        if self.max_iter is not None:
            put(self, "max_iter", check_n(self.max_iter, "max_iter"))

    @property
    def uses_key(self) -> bool:
        """Whether the value can depend on the random start (every method but exact and gram)."""
        return self.name not in ("exact", "gram")


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(NormMethod) if f.name in OPTIONS}


def as_norm_method(method: Any, options: Mapping[str, Any], *, caller: str) -> NormMethod:
    """`method` (a name or a `NormMethod`) and keyword `options` as one `NormMethod`.

    With a name, the options fill the `NormMethod`. With a `NormMethod`, an option given beside
    it must be left at its default or agree with it (the method's own value is used).

    Raises:
      TypeError: an option name that no method knows (named in the message).
      ValueError: an unknown method name; an option out of range; an option beside a
        `NormMethod` that disagrees with it.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise TypeError(
            f"{caller} got unknown norm option(s) {', '.join(map(repr, unknown))}; the options "
            f"of the norm methods are {', '.join(OPTIONS)}"
        )
    if isinstance(method, NormMethod):
        clash = sorted(k for k, v in options.items()
                       if v != _DEFAULTS[k] and v != getattr(method, k))
        if clash:
            raise ValueError(
                f"{caller}: {', '.join(f'{k}={options[k]!r}' for k in clash)} given beside "
                f"method={method!r}; set options inside the NormMethod"
            )
        return method
    check_choice(method, "method", METHODS)
    return NormMethod(method, **options)
