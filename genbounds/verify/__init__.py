"""Verification by bound propagation on the traced network: interval bounds (IBP), linear
relaxation (CROWN) and optimised slopes (α-CROWN) over $\\ell_2$ and $\\ell_\\infty$ balls, and
the certified radii they give."""

from ._propagate import Propagator as Propagator
from ._radius import crown_radius as crown_radius
