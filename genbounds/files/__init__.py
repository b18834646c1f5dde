"""Files the harness writes and reads: atomic writes, SHA-256 checksums, directory locks.

Used by checkpoints (`genbounds.train`) and by the command line; the bound code never writes a
file. `CorruptFile` names the file and what is wrong with it.
"""

from ._files import CorruptFile as CorruptFile
from ._files import DirectoryBusy as DirectoryBusy
from ._files import atomic_write as atomic_write
