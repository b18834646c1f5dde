"""genbounds: generalisation bounds and complexity measures of trained neural networks.

The public namespace only re-exports; every module behind it is private.
"""

from ._bound import Bound as Bound

__version__ = "0.1.0"
