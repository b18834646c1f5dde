"""The result type, the shared argument checks and the union bound over a grid.

Owns `Bound` (the one result type every bound and measure returns), `NotBoundable` (a theorem
whose premises the network does not meet), the boundary checks every public function runs before
any work, and the geometric grid that margin bounds take a union bound over. Imports nothing else
from genbounds.
"""

from ._bound import Bound as Bound
from ._checks import NotBoundable as NotBoundable
