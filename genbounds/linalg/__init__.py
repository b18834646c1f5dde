"""Norm kernels: spectral norms (exact, certified Lanczos, power, Gram), convolution operator
norms, Frobenius and (2,1) norms, and Hessian-vector products.

Each kernel takes arrays, never a parameter tree: the network layer (`genbounds.network`) decides
which matrices to measure and caches the results. A `NormMethod` names how a spectral norm is
computed, with its options; a `NormResult` says whether the number is exact, certified with a
stated failure probability, or an estimate from below.

Files: ``_method`` (`NormMethod`), ``_spectral_norm`` (`spectral_norm`), ``_krylov`` (jitted
Lanczos, power and Gram kernels, shape bucketing), ``_certificate`` (the failure probability of
the certified bound), ``_host`` (float64 LAPACK on the host for small matrices), ``_arrays``
(argument checks), ``_matrix_norms`` (Frobenius, (2,1), log of a product), ``_conv`` with
``_conv_geometry`` and ``_conv_kernels`` (convolution operators), ``_hessian`` (curvature).
"""

from ._conv import conv_operator_norm as conv_operator_norm
from ._conv import reshaped_kernel_norm as reshaped_kernel_norm
from ._hessian import hessian_vector_product as hessian_vector_product
from ._matrix_norms import frobenius_norm as frobenius_norm
from ._matrix_norms import log_norm_product as log_norm_product
from ._matrix_norms import norm_21 as norm_21
from ._method import NormMethod as NormMethod
from ._spectral_norm import NormResult as NormResult
from ._spectral_norm import spectral_norm as spectral_norm
