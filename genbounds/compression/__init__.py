"""Compression (Occam) bounds on the deterministic quantised network (Lotfi et al. 2022).

A network trained in a random subspace $\\theta_0 + P z$ (`make_projector`),
quantised (`kmeans_1d`, error-compensating rounding `compensate`, and a straight-through fine-tune), written with a prefix-free code whose
length is counted part by part (`code_length`), and bounded by the Occam bound in its kl and
Catoni forms (`occam_bound`, `occam_kl_bound`, `catoni_bound`). `compression_bound` runs all of
it, data-independent or with an origin learnt on a held-out part.
"""

from ._bound import catoni_bound as catoni_bound
from ._bound import occam_bound as occam_bound
from ._bound import occam_kl_bound as occam_kl_bound
from ._code import CodeLength as CodeLength
from ._code import code_length as code_length
from ._code import elias_delta_bits as elias_delta_bits
from ._compression import CompressionTraining as CompressionTraining
from ._compression import compression_bound as compression_bound
from ._quantise import compensate as compensate
from ._quantise import kmeans_1d as kmeans_1d
from ._subspace import Projector as Projector
from ._subspace import make_projector as make_projector
