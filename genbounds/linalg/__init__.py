"""Norm kernels: spectral norms (exact, certified Lanczos, power), convolution operator norms,
Frobenius and (2,1) norms, and Hessian-vector products.

Each kernel takes arrays, never a parameter tree: the network layer (`genbounds.network`) decides
which matrices to measure and caches the results. A `NormResult` says whether the number is exact,
certified with a stated failure probability, or an estimate from below.
"""

from ._conv import conv_operator_norm as conv_operator_norm
from ._conv import reshaped_kernel_norm as reshaped_kernel_norm
from ._hessian import hessian_vector_product as hessian_vector_product
from ._spectral_norm import NormResult as NormResult
from ._spectral_norm import frobenius_norm as frobenius_norm
from ._spectral_norm import log_norm_product as log_norm_product
from ._spectral_norm import norm_21 as norm_21
from ._spectral_norm import spectral_norm as spectral_norm
