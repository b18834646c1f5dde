"""The prefix-free code of a quantised subspace network and its length in bits, part by part.

A network $\\theta_0 + P\\,c_s$ (origin $\\theta_0$, projector P and the architecture fixed
before the data are seen, P regenerated from its seed) is described by, in order:

1. the dimension d, in Elias's delta code: $\\lfloor\\log_2 d\\rfloor + 2\\lfloor\\log_2
   (\\lfloor\\log_2 d\\rfloor + 1)\\rfloor + 1$ bits (self-delimiting; Elias 1975);
2. the number of levels L, in the same code;
3. the codebook: L centroids of `codebook_bits` bits each (float16 or float32);
4. the symbol counts $(n_1, \\dots, n_L)$, $\\sum_k n_k = d$: one of
   $\\binom{d + L - 1}{L - 1}$ compositions, written as its index,
   $\\lceil\\log_2 \\binom{d+L-1}{L-1}\\rceil$ bits;
5. the symbols $s \\in \\{1..L\\}^d$: given the counts, one of the $M = d!/\\prod_k n_k!$ sequences
   with those counts, written as its index in lexicographic order (enumerative coding, Cover
   1973): $\\lceil\\log_2 M\\rceil$ bits. Since $M \\le 2^{d H(n/d)}$ this is never longer than
   the ideal arithmetic code $d H + 2$ of the symbols under their empirical frequencies, which is
   reported beside it (``arithmetic_symbols``) for comparison;
6. the choice among K candidate settings searched (dimensions, levels, learning rates...):
   $\\log_2 K$ bits, the union bound written as a uniform prior over the K codes.

Each part is prefix-free given the parts before it, so the concatenation is prefix-free and the
prior $\\pi(h) = 2^{-\\text{bits}(h)}$ (with the 1/K mixture) satisfies Kraft's inequality. The
lengths are computed exactly with Python integers (no floating point) except the $\\log_2 K$
term.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from genbounds.core._checks import check_int, check_n


class CodeLength(NamedTuple):
    """The code length of a quantised subspace network, in bits, by part.

    Attributes:
      dimension: Elias delta code of d.
      levels: Elias delta code of L.
      codebook: L times the bits of one centroid.
      counts: index of the symbol counts among the compositions of d into L parts.
      symbols: enumerative code of the symbols given their counts.
      hyperparameters: $\\log_2 K$ for K candidate settings.
      total: the sum of the above.
      arithmetic_symbols: $d H + 2$, the ideal arithmetic code of the symbols (not in `total`;
        `symbols` is never larger).
    """

    dimension: int
    levels: int
    codebook: int
    counts: int
    symbols: int
    hyperparameters: float
    total: float
    arithmetic_symbols: float

    def to_dict(self) -> dict[str, float]:
        """The parts as a plain dict."""
        return {k: float(v) for k, v in self._asdict().items()}


def elias_delta_bits(n: int) -> int:
    """Length of Elias's delta code of the integer n >= 1 (a self-delimiting code of the
    positive integers; Elias 1975).

    Examples:
      >>> [elias_delta_bits(n) for n in (1, 2, 3, 4, 16, 1000)]
      [1, 4, 4, 5, 9, 16]
    """
    n = check_n(n, "n")
    lg = n.bit_length() - 1  # floor(log2 n)
    return lg + 2 * ((lg + 1).bit_length() - 1) + 1


def ceil_log2(m: int) -> int:
    """$\\lceil\\log_2 m\\rceil$ for an integer m >= 1, exactly: the bits of an index among m."""
    return (int(m) - 1).bit_length()


def multinomial(counts: Any) -> int:
    """$(\\sum_k n_k)! / \\prod_k n_k!$ as an exact Python integer."""
    total, out = 0, 1
    for c in counts:
        total += int(c)
        out *= math.comb(total, int(c))
    return out


def empirical_entropy_bits(counts: Any) -> float:
    """$d H(n/d) = -\\sum_k n_k \\log_2(n_k/d)$ in float64."""
    c = np.asarray(counts, np.float64)
    c = c[c > 0]
    d = c.sum()
    return float(-(c * np.log2(c / d)).sum())


def code_length(symbols: Any, levels: int, *, codebook_bits: int = 16,
                num_candidates: int = 1) -> CodeLength:
    """The length of the code described in the module docstring, part by part.

    Args:
      symbols: the d >= 1 symbols, integers in [0, levels).
      levels: L >= 1, the alphabet size coded (1 when every coordinate shares one centroid).
      codebook_bits: bits per centroid (16 or 32).
      num_candidates: K >= 1 settings searched, paid as $\\log_2 K$ bits.

    Returns:
      A `CodeLength`.

    Raises:
      ValueError: a symbol outside [0, levels), no symbols, levels < 1, codebook_bits not 16/32.

    Examples:
      >>> c = code_length([0, 1, 1, 2, 1, 0], 3)
      >>> c.symbols, c.counts, c.codebook, c.total
      (6, 5, 48, 68.0)
    """
    L = check_int(levels, "levels", minimum=1)
    if codebook_bits not in (16, 32):
        raise ValueError(f"codebook_bits must be 16 or 32, got {codebook_bits!r}")
    K = check_n(num_candidates, "num_candidates")
    s = np.asarray(symbols)
    if s.ndim != 1 or s.size == 0 or not np.issubdtype(s.dtype, np.integer):
        raise ValueError(f"symbols must be a non-empty 1-D integer array, got dtype {s.dtype} "
                         f"and shape {s.shape}")
    if s.min() < 0 or s.max() >= L:
        raise ValueError(f"symbols must lie in [0, levels) = [0, {L}), got values in "
                         f"[{s.min()}, {s.max()}]")
    d = int(s.size)
    counts = np.bincount(s, minlength=L)
    parts = dict(
        dimension=elias_delta_bits(d),
        levels=elias_delta_bits(L),
        codebook=L * int(codebook_bits),
        counts=ceil_log2(math.comb(d + L - 1, L - 1)),
        symbols=ceil_log2(multinomial(counts)),
        hyperparameters=math.log2(K),
    )
    return CodeLength(**parts, total=float(sum(parts.values())),
                      arithmetic_symbols=empirical_entropy_bits(counts) + 2.0)
