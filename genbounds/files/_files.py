"""Files genbounds writes: atomic writes, checksums, stale temporary files, directory locks.

* `atomic_write` writes to a temporary file in the target's directory (named
  ``.NAME.PID.RANDOM.tmp``, PID the writer's process id), flushes it to disk and moves it into
  place with `os.replace`: a reader sees the old file or the new one, never a partial one.
* `clean_stale_tmp` removes the temporary files of writers that no longer run (killed
  mid-write): their process id is in the name, so the files of a live writer are left alone.
* `write_checked` / `read_checked` frame a payload as ``MAGIC + sha256(payload) + payload``;
  reading verifies the header and the checksum, and raises `CorruptFile` (a `ValueError`) on
  any mismatch. `write_json_checked` / `read_json_checked` do the same for JSON documents,
  whose checksum is stored in the document itself (a ``"sha256"`` entry over the canonical
  JSON of the rest), so the file stays readable by any JSON tool.
* `DirectoryLock` holds an exclusive `fcntl.flock` on ``DIR/.genbounds.lock`` while a command
  writes into DIR; a second run on the same directory is refused with `DirectoryBusy` instead
  of clobbering the first one's results. The lock is released when the process ends, however
  it ends (the kernel drops it with the file descriptor).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

LOCK_NAME = ".genbounds.lock"
_TMP = re.compile(r"^\..+\.(\d+)\.[^.]+\.tmp$")


class CorruptFile(ValueError):
    """A file genbounds wrote was truncated, damaged or is of another format.

    Attributes:
      reason: ``"header"`` (another format, or too short) or ``"checksum"`` (damaged contents).
    """

    def __init__(self, message: str, reason: str = "header"):
        super().__init__(message)
        self.reason = reason


class DirectoryBusy(OSError):
    """Another running process holds the lock on an output directory."""


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale_tmp(directory: str | os.PathLike) -> list[Path]:
    """Removes the temporary files left in `directory` by writers that no longer run.

    Returns the removed paths. Files of a live process (this one included) are kept.
    """
    removed = []
    d = Path(directory)
    if not d.is_dir():
        return removed
    for p in d.iterdir():
        m = _TMP.match(p.name)
        if m and p.is_file() and not _pid_alive(int(m.group(1))):
            try:
                p.unlink()
                removed.append(p)
            except FileNotFoundError:  # removed by a concurrent cleaner
                pass
    return removed


def default_file_mode() -> int:
    """The mode a new file gets from ``open``: 0o666 less the process's umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Writes a file so that it appears whole or not at all (temporary file + os.replace).

    The file gets the mode an ordinary ``open`` would give it (the user's umask), not the
    private 0600 of the temporary file.
    """
    path = Path(path)
    clean_stale_tmp(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), default_file_mode())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        try:  # make the rename itself durable
            dfd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:  # pragma: no cover - directories cannot be fsynced on some systems
            pass
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_figure(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> None:
    """Saves a matplotlib figure as `atomic_write` writes bytes (whole or not at all, the user's
    umask, stale temporary files of dead writers cleaned) and closes it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    clean_stale_tmp(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                               suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, format=path.suffix.lstrip(".") or "png")
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_checked(path: str | os.PathLike, payload: bytes, magic: bytes) -> None:
    """Writes ``magic + sha256(payload) + payload`` atomically."""
    atomic_write(path, magic + hashlib.sha256(payload).digest() + payload)


def read_checked(path: str | os.PathLike, magic: bytes, *, what: str = "file") -> bytes:
    """Reads a file written by `write_checked` and returns its verified payload.

    Raises:
      CorruptFile: another format (no `magic`), a short file, or a checksum mismatch.
      OSError: the file cannot be read.
    """
    path = Path(path)
    data = path.read_bytes()
    header = len(magic) + 32
    if len(data) < header or not data.startswith(magic):
        raise CorruptFile(
            f"{path} is corrupt or not a checksummed genbounds {what} ({len(data)} bytes, header "
            f"{data[: len(magic)]!r} where {magic!r} was expected): it is damaged, or was "
            "written by another program or an older genbounds"
        )
    digest, payload = data[len(magic) : header], data[header:]
    if hashlib.sha256(payload).digest() != digest:
        raise CorruptFile(
            f"{path} is corrupt: its SHA-256 checksum does not match its contents (truncated "
            "or damaged)", reason="checksum"
        )
    return payload


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


def write_json_checked(path: str | os.PathLike, obj: dict[str, Any]) -> None:
    """Writes a JSON object with a ``"sha256"`` entry over the canonical JSON of the rest."""
    if "sha256" in obj:
        raise ValueError("the object must not already hold a 'sha256' entry")
    body = dict(obj)
    body["sha256"] = hashlib.sha256(_canonical(obj)).hexdigest()
    atomic_write(path, json.dumps(body, indent=2).encode())


def read_json_checked(path: str | os.PathLike) -> dict[str, Any]:
    """Reads a JSON object written by `write_json_checked`, verifying its checksum.

    Raises:
      CorruptFile: not JSON, not an object, no checksum, or a checksum mismatch.
      OSError: the file cannot be read.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptFile(f"{path} is corrupt: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("sha256"), str):
        raise CorruptFile(f"{path} has no 'sha256' checksum entry: damaged, or written by "
                          "another program or an older genbounds")
    stored = obj.pop("sha256")
    if hashlib.sha256(_canonical(obj)).hexdigest() != stored:
        raise CorruptFile(f"{path} is corrupt: its checksum does not match its contents")
    return obj


_HELD: set[Path] = set()  # directories whose lock this process holds


def held_here(directory: str | os.PathLike) -> bool:
    """Whether this process holds the `DirectoryLock` of `directory`."""
    return Path(directory).resolve() in _HELD


class DirectoryLock:
    """An exclusive lock on an output directory, held for the lifetime of a command.

    ``with DirectoryLock(out): ...`` takes an `fcntl.flock` on ``out/.genbounds.lock``
    without waiting; if another process (or another open lock in this process) holds it,
    `DirectoryBusy` is raised naming the holder's process id. Stale temporary files of dead
    writers are removed once the lock is held.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DirectoryLock:
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                self._busy(fd, e)
            # The holder unlinks the file before unlocking it (so no lock file is left behind):
            # a lock taken on an unlinked file is no lock, take the one now at the path.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        _HELD.add(self.directory.resolve())
        clean_stale_tmp(self.directory)
        return self

    def _busy(self, fd: int, e: OSError) -> None:
        holder = ""
        try:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
        except OSError:  # pragma: no cover
            pass
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise DirectoryBusy(
                f"the output directory {str(self.directory)!r} is in use by another "
                f"genbounds run (process {holder or 'unknown'}); wait for it to finish or "
                "choose another directory"
            ) from None
        raise e

    def release(self) -> None:
        if self._fd is not None:
            import fcntl

            try:
                os.unlink(self.path)  # while still locked: see `acquire`
            except FileNotFoundError:  # pragma: no cover - removed by hand
                pass
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            _HELD.discard(self.directory.resolve())

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()
