"""Complexity measures that are not bounds (`value=None`): norms and path norms, the Lipschitz
constant, sharpness and flatness (Keskar et al. 2017; Jiang et al. 2020), Hessian spectra, the
Laplace evidence, Monte-Carlo Rademacher complexity, and the rank statistics that compare
measures with the generalisation gap (Kendall's tau, Jiang et al.'s granulated tau).
"""

from ._evidence import laplace_evidence as laplace_evidence
from ._flatness import magnitude_aware_flatness as magnitude_aware_flatness
from ._flatness import pac_bayes_flatness as pac_bayes_flatness
from ._hessian_spectrum import hessian_top_eigenvalues as hessian_top_eigenvalues
from ._hessian_spectrum import hessian_trace as hessian_trace
from ._hypotheses import HypothesisClass as HypothesisClass
from ._hypotheses import KernelBall as KernelBall
from ._hypotheses import LinearBall as LinearBall
from ._hypotheses import NetworkClass as NetworkClass
from ._kendall import GranulatedKendall as GranulatedKendall
from ._kendall import granulated_kendall as granulated_kendall
from ._kendall import kendall_tau as kendall_tau
from ._lipschitz import lipschitz as lipschitz
from ._norm_measures import distance_from_init as distance_from_init
from ._norm_measures import jiang_normalise as jiang_normalise
from ._norm_measures import norm_measures as norm_measures
from ._path_norm import path_norm as path_norm
from ._rademacher import RademacherEstimate as RademacherEstimate
from ._rademacher import rademacher as rademacher
from ._rademacher import rademacher_signs as rademacher_signs
from ._sharpness import magnitude_aware_sharpness as magnitude_aware_sharpness
from ._sharpness import sharpness as sharpness
from ._sharpness import worst_case_sharpness as worst_case_sharpness
