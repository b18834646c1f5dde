"""Reading a network: from `apply_fn` (traced to a jaxpr) or from parameters alone, to one
`Network`, and the norms of its layers.

Owns the trace (the jaxpr interpreter and graph rewriting), the name-based reader of parameter
trees (`read_layers`, `Layer`, `ConvSpec`), the element-wise functions and their Lipschitz
constants, and `spectral_norms`, the per-layer operator norms computed once per network and
options. Every bound receives a `Network` from here and never re-reads the parameter tree.
"""

from ._layers import ConvSpec as ConvSpec
from ._layers import Layer as Layer
from ._layers import augment_biases as augment_biases
from ._layers import read_layers as read_layers
from ._network import Network as Network
from ._network import NotBoundable as NotBoundable
from ._norms import SpectralNorms as SpectralNorms
from ._norms import spectral_norms as spectral_norms
