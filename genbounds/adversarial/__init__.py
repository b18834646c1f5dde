"""Adversarial examples (seed §5.2): attacks (FGSM, PGD in l2 and l-infinity), certified radii
from the traced network's Lipschitz bound, and robustness curves that show both.
"""

from ._attacks import AttackResult as AttackResult
from ._attacks import fgsm as fgsm
from ._attacks import pgd as pgd
from ._attacks import robust_accuracy as robust_accuracy
from ._certified import CertifiedRadii as CertifiedRadii
from ._certified import certified_accuracy as certified_accuracy
from ._certified import certified_radius as certified_radius
from ._curve import RobustnessCurve as RobustnessCurve
from ._curve import robustness as robustness
