"""genbounds: generalisation bounds and complexity measures of trained neural networks.

The public namespace only re-exports; every module behind it is private.
"""

from ._bound import Bound as Bound
from ._kl import kl_bernoulli as kl_bernoulli
from ._kl import kl_inverse as kl_inverse
from ._kl import mcallester_bound as mcallester_bound
from ._kl import pac_bayes_kl_bound as pac_bayes_kl_bound
from ._layers import ConvSpec as ConvSpec
from ._layers import Layer as Layer
from ._layers import read_layers as read_layers
from ._margins import SelectedMargin as SelectedMargin
from ._margins import margin_loss as margin_loss
from ._margins import margin_quantile as margin_quantile
from ._margins import margins as margins
from ._margins import ramp_loss as ramp_loss
from ._margins import select_margin as select_margin
from ._rademacher import margin_rademacher_bound as margin_rademacher_bound
from ._rademacher import rademacher_bound as rademacher_bound
from ._vc import vc as vc
from ._vc import vc_dimension_bound as vc_dimension_bound

__version__ = "0.1.0"
