"""Bounds on the test error from the network's norms and the data: VC, spectral (Bartlett et
al. 2017), size-independent (Golowich et al. 2018), path-norm for DAG ReLU networks (Gonon et
al. 2024), Rademacher, uniform stability.

Each bound is a formula of numbers the network layer computed once (`genbounds.network`) plus a
thin wrapper that checks its arguments and returns a `Bound`. The PAC-Bayes bounds live in
`genbounds.pacbayes`.
"""

from ._golowich import golowich as golowich
from ._golowich import golowich_frobenius as golowich_frobenius
from ._golowich import golowich_l1inf as golowich_l1inf
from ._golowich import golowich_margin_bound as golowich_margin_bound
from ._gonon import gonon as gonon
from ._gonon import gonon_log_term as gonon_log_term
from ._gonon import gonon_margin_bound as gonon_margin_bound
from ._gonon import gonon_rademacher as gonon_rademacher
from ._rademacher import margin_rademacher_bound as margin_rademacher_bound
from ._rademacher import rademacher_bound as rademacher_bound
from ._spectral import SpectralOptions as SpectralOptions
from ._spectral import spectral as spectral
from ._spectral import spectral_complexity as spectral_complexity
from ._spectral import spectral_margin_bound as spectral_margin_bound
from ._stability import empirical_stability as empirical_stability
from ._stability import hardt_stability_convex as hardt_stability_convex
from ._stability import hardt_stability_nonconvex as hardt_stability_nonconvex
from ._vc import vc as vc
from ._vc import vc_dimension_bound as vc_dimension_bound
