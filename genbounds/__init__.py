"""genbounds: generalisation bounds and complexity measures of trained neural networks.

Bounds (each ``.value`` an upper bound on the 0-1 test error with probability >= 1 - delta):
`vc`, `spectral`, `pac_bayes`, `golowich`, `rademacher_bound`, `dziugaite_roy` and
`perez_ortiz` / `risk_certificate` (on the stochastic net); all of them at once: `report`.
Measures (``value=None``): `spectral_complexity`, `norm_measures`, `path_norm`, `rademacher`,
`sharpness`, `pac_bayes_flatness`, `hessian_top_eigenvalues`, `laplace_evidence`, ...
Robustness: attacks (`fgsm`, `pgd`, `robust_accuracy`) beside certified radii
(`certified_radius`, `certified_accuracy`, `robustness`).
Kernels: `spectral_norms`, `spectral_norm`, `conv_operator_norm`, `kl_inverse`, `margins`.
The harness lives apart, in `genbounds.data` and `genbounds.train`.

The public namespace only re-exports; every module behind it is private. Importing genbounds
turns on JAX's persistent compilation cache (opt out with ``GENBOUNDS_JAX_CACHE=0``).
"""

from ._attacks import AttackResult as AttackResult
from ._attacks import fgsm as fgsm
from ._attacks import pgd as pgd
from ._attacks import robust_accuracy as robust_accuracy
from ._bound import Bound as Bound
from ._conv import conv_operator_norm as conv_operator_norm
from ._conv import reshaped_kernel_norm as reshaped_kernel_norm
from ._dziugaite_roy import DiagonalGaussian as DiagonalGaussian
from ._dziugaite_roy import diag_gaussian_kl as diag_gaussian_kl
from ._dziugaite_roy import dziugaite_roy as dziugaite_roy
from ._dziugaite_roy import dziugaite_roy_certificate as dziugaite_roy_certificate
from ._dziugaite_roy import dziugaite_roy_from_terms as dziugaite_roy_from_terms
from ._dziugaite_roy import sample_convergence_bound as sample_convergence_bound
from ._dziugaite_roy import stochastic_error as stochastic_error
from ._evidence import laplace_evidence as laplace_evidence
from ._flatness import hessian_top_eigenvalues as hessian_top_eigenvalues
from ._flatness import hessian_trace as hessian_trace
from ._flatness import magnitude_aware_flatness as magnitude_aware_flatness
from ._flatness import magnitude_aware_sharpness as magnitude_aware_sharpness
from ._flatness import pac_bayes_flatness as pac_bayes_flatness
from ._flatness import sharpness as sharpness
from ._flatness import worst_case_sharpness as worst_case_sharpness
from ._golowich import golowich as golowich
from ._golowich import golowich_frobenius as golowich_frobenius
from ._golowich import golowich_l1inf as golowich_l1inf
from ._golowich import golowich_margin_bound as golowich_margin_bound
from ._hessian import hessian_vector_product as hessian_vector_product
from ._hypotheses import HypothesisClass as HypothesisClass
from ._hypotheses import KernelBall as KernelBall
from ._hypotheses import LinearBall as LinearBall
from ._hypotheses import NetworkClass as NetworkClass
from ._kendall import GranulatedKendall as GranulatedKendall
from ._kendall import granulated_kendall as granulated_kendall
from ._kendall import kendall_tau as kendall_tau
from ._kl import kl_bernoulli as kl_bernoulli
from ._kl import kl_inverse as kl_inverse
from ._kl import mcallester_bound as mcallester_bound
from ._kl import pac_bayes_kl_bound as pac_bayes_kl_bound
from ._layers import ConvSpec as ConvSpec
from ._layers import Layer as Layer
from ._layers import augment_biases as augment_biases
from ._layers import read_layers as read_layers
from ._linalg import NormResult as NormResult
from ._linalg import frobenius_norm as frobenius_norm
from ._linalg import log_norm_product as log_norm_product
from ._linalg import norm_21 as norm_21
from ._linalg import spectral_norm as spectral_norm
from ._lipschitz import lipschitz as lipschitz
from ._margins import SelectedMargin as SelectedMargin
from ._margins import margin_loss as margin_loss
from ._margins import margin_quantile as margin_quantile
from ._margins import margins as margins
from ._margins import ramp_loss as ramp_loss
from ._margins import select_margin as select_margin
from ._measures import distance_from_init as distance_from_init
from ._measures import jiang_normalise as jiang_normalise
from ._measures import norm_measures as norm_measures
from ._measures import path_norm as path_norm
from ._network import Network as Network
from ._network import NotBoundable as NotBoundable
from ._norms import SpectralNorms as SpectralNorms
from ._norms import spectral_norms as spectral_norms
from ._pac_bayes import pac_bayes as pac_bayes
from ._pac_bayes import pac_bayes_margin_bound as pac_bayes_margin_bound
from ._rademacher import margin_rademacher_bound as margin_rademacher_bound
from ._rademacher import rademacher_bound as rademacher_bound
from ._rademacher_mc import RademacherEstimate as RademacherEstimate
from ._rademacher_mc import rademacher as rademacher
from ._rademacher_mc import rademacher_signs as rademacher_signs
from ._report import Report as Report
from ._report import report as report
from ._risk_certificate import DataSplit as DataSplit
from ._risk_certificate import bounded_cross_entropy as bounded_cross_entropy
from ._risk_certificate import learn_prior as learn_prior
from ._risk_certificate import optimal_lambda as optimal_lambda
from ._risk_certificate import pac_bayes_objective as pac_bayes_objective
from ._risk_certificate import perez_ortiz as perez_ortiz
from ._risk_certificate import risk_certificate as risk_certificate
from ._risk_certificate import risk_certificate_from_terms as risk_certificate_from_terms
from ._risk_certificate import split_data as split_data
from ._risk_certificate import train_posterior as train_posterior
from ._robustness import CertifiedRadii as CertifiedRadii
from ._robustness import RobustnessCurve as RobustnessCurve
from ._robustness import certified_accuracy as certified_accuracy
from ._robustness import certified_radius as certified_radius
from ._robustness import robustness as robustness
from ._spectral import spectral as spectral
from ._spectral import spectral_complexity as spectral_complexity
from ._spectral import spectral_margin_bound as spectral_margin_bound
from ._stability import empirical_stability as empirical_stability
from ._stability import hardt_stability_convex as hardt_stability_convex
from ._stability import hardt_stability_nonconvex as hardt_stability_nonconvex
from ._vc import vc as vc
from ._vc import vc_dimension_bound as vc_dimension_bound

__version__ = "0.1.0"

# JAX's persistent compilation cache in ~/.cache/genbounds/jax unless the user set one or opted
# out with GENBOUNDS_JAX_CACHE=0 (docs/benchmarks.md).
from ._jax_cache import enable_persistent_cache as _enable_persistent_cache  # noqa: E402

_enable_persistent_cache()
