"""Reading a network: from `apply_fn` (traced to a jaxpr) or from parameters alone, to one
`Network`, and the norms of its layers.

Owns, from the bottom up (each file imports only the ones above it):

- ``_activations``: the record of an element-wise function (`Activation`);
- ``_intervals``, ``_tails``, ``_exact``: the analysis of element-wise programs (interval
  arithmetic with derivative enclosures, tail envelopes, exact rational arithmetic);
- ``_elementwise``: element-wise programs read from the jaxpr, split into affine records and an
  analysed `Activation`;
- ``_layers``: the name-based reader of parameter trees (`read_layers`, `Layer`, `ConvSpec`);
- ``_graph``: the records of a network (`Node`), their evaluation and rewriting (folding a bias
  or BatchNorm into the linear map before it);
- ``_trace``: the jaxpr interpreter that turns ``apply_fn`` into records;
- ``_chain``: a network as a chain of layers (`Chain`), checked against given logits;
- ``_lipschitz``: the Lipschitz constant of a network by composition over its graph;
- ``_network``: the `Network` type and `as_network`, the one front door every bound goes through;
- ``_norms``: `spectral_norms`, the per-layer operator norms computed once per network and
  options;
- ``_path_lifting``: path norms of the network's DAG by one forward pass, and the depth, pooling
  kinds and window sizes of its path lifting (Gonon et al. 2024);
- ``_bound_inputs``: what a bound with data reads (a verified chain, the reference matrices).

Every bound receives a `Network` from here and never re-reads the parameter tree.
"""

from genbounds.core._checks import NotBoundable as NotBoundable

from ._layers import ConvSpec as ConvSpec
from ._layers import Layer as Layer
from ._layers import augment_biases as augment_biases
from ._layers import read_layers as read_layers
from ._network import Network as Network
from ._norms import SpectralNorms as SpectralNorms
from ._norms import spectral_norms as spectral_norms
