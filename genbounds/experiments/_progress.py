"""Progress of the long commands: rich bars on a terminal, timestamped lines otherwise.

On a terminal a command shows a live bar (training epochs) or spinner (a phase such as "computing
the bounds"). When standard output is not a terminal (a pipe, a log file, a CI job) the same
events are printed as plain lines, ``[12:03:04] genbounds report: computing the bounds ...``,
flushed at once, so a log shows where a run is while it runs.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO


class Progress:
    """Phases and bars of one command.

    Args:
      command: the name printed in plain lines, e.g. ``"genbounds report"``.
      stream: where plain lines go (default ``sys.stdout``).
      plain: force plain lines (True) or rich bars (False); default: plain unless ``stream`` is
        a terminal.
      every: seconds between two plain lines of one bar (its first and last are always shown).
    """

    def __init__(self, command: str, *, stream: TextIO | None = None, plain: bool | None = None,
                 every: float = 5.0, console: Any = None):
        self.command = command
        self.stream = sys.stdout if stream is None else stream
        self.plain = (not _isatty(self.stream)) if plain is None else plain
        self.every = every
        self._console = console
        self._rich = None

    def __enter__(self) -> Progress:
        if not self.plain:
            from rich.progress import BarColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._rich = RichProgress(SpinnerColumn(), TextColumn("{task.description}"),
                                      BarColumn(), TextColumn("{task.fields[info]}"),
                                      TimeElapsedColumn(), console=self._console, transient=True)
            self._rich.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._rich is not None:
            self._rich.__exit__(*exc)
            self._rich = None

    def line(self, text: str) -> None:
        """One plain timestamped line (shown above the bars on a terminal)."""
        msg = f"[{time.strftime('%H:%M:%S')}] {self.command}: {text}"
        if self._rich is not None:
            self._rich.console.print(msg, highlight=False, markup=False)
        else:
            print(msg, file=self.stream, flush=True)

    @contextlib.contextmanager
    def phase(self, text: str) -> Iterator[None]:
        """A step of unknown length: a spinner, or a start line and a done line with seconds."""
        start = time.perf_counter()
        task = None
        if self._rich is not None:
            task = self._rich.add_task(text, total=None, info="")
        else:
            self.line(f"{text} ...")
        try:
            yield
        finally:
            if task is not None:
                self._rich.remove_task(task)
            else:
                self.line(f"{text}: done in {time.perf_counter() - start:.1f} s")

    def bar(self, text: str, total: int) -> Bar:
        """A step of ``total`` units; call ``.update(completed, info)`` and ``.close()``."""
        return Bar(self, text, total)


class Bar:
    """A bar of `Progress` (see there)."""

    def __init__(self, progress: Progress, text: str, total: int):
        self._p, self.text, self.total = progress, text, total
        self._last = -float("inf")
        self._start = time.perf_counter()
        self._task = None
        if progress._rich is not None:
            self._task = progress._rich.add_task(text, total=total, info="")
        else:
            progress.line(f"{text} ...")

    def update(self, completed: int, info: str = "", *, description: str | None = None) -> None:
        if description is not None:
            self.text = description
        if self._task is not None:
            kw = {} if description is None else {"description": description}
            self._p._rich.update(self._task, completed=completed, info=info, **kw)
            return
        now = time.perf_counter()
        if now - self._last >= self._p.every or description is not None:
            self._last = now
            self._p.line(f"{self.text}: {completed}/{self.total}" + (f" ({info})" if info else ""))

    def close(self, info: str = "") -> None:
        if self._task is not None:
            self._p._rich.remove_task(self._task)
            self._task = None
        else:
            self._p.line(f"{self.text}: done in {time.perf_counter() - self._start:.1f} s"
                         + (f" ({info})" if info else ""))


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
