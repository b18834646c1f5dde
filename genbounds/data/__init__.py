"""Datasets for generalisation experiments: digits, MNIST-1D, synthetic tasks and MNIST.

Every loader returns a `Dataset` (numpy arrays plus metadata), with the binary variants of
Dziugaite & Roy (2017) and the randomisation tests of Zhang et al. (2017) as options of `load`.
"""

from ._dataset import Dataset as Dataset
from ._load import CORRUPTIONS as CORRUPTIONS
from ._load import DATASETS as DATASETS
from ._load import default_cache_dir as default_cache_dir
from ._load import load as load
from ._mnist import read_idx as read_idx
