"""Files the harness writes and reads: atomic writes, SHA-256 checksums, directory locks.

Used by checkpoints (`genbounds.train`) and by the command line; the bound code never writes a
file. `CorruptFile` names the file and what is wrong with it; `DirectoryLock` refuses a second
run on an output directory with `DirectoryBusy`.
"""

from ._files import CorruptFile as CorruptFile
from ._files import DirectoryBusy as DirectoryBusy
from ._files import DirectoryLock as DirectoryLock
from ._files import atomic_write as atomic_write
from ._files import clean_stale_tmp as clean_stale_tmp
from ._files import default_file_mode as default_file_mode
from ._files import held_here as held_here
from ._files import read_checked as read_checked
from ._files import read_json_checked as read_json_checked
from ._files import save_figure as save_figure
from ._files import write_checked as write_checked
from ._files import write_json_checked as write_json_checked
