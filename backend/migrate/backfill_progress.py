"""The progress of ``flask migrations backfill run`` on a terminal: one line per migration,
redrawn in place, for a person watching; logs sent to a pipe or a file get the log lines
alone (the runner's every-N-batches line)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TextIO

REDRAW_EVERY = 0.25       # seconds between two redraws of the progress line: 4 a second at most
BAR_WIDTH = 20            # characters of the progress line's bar


def is_terminal(stream: TextIO) -> bool:
    """Whether a progress line belongs on ``stream``: a terminal a person watches. Logs
    collected from a pipe or a file (containers, CI) get the log lines alone."""
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


@contextlib.contextmanager
def progress_on(stream: TextIO) -> Iterator[ProgressLine | None]:
    """A progress line on ``stream`` when it is a terminal (None otherwise), attached to the
    log lines written there for as long as the ``with`` lasts."""
    if not is_terminal(stream):
        yield None
        return
    with ProgressLine(stream) as line:
        yield line


def render_progress(name: str, done: int, total: int | None, rate: float | None, *,
                    exact: bool = True, note: str = "", width: int = 80) -> str:
    """One migration's progress as one line shorter than ``width``: its name, a bar, rows
    done of the estimated total (``~`` when estimated from the planner's statistics), the
    percentage, rows a second and the time left. Shorter than the terminal because a line
    that wraps is no longer rewound by a carriage return: each redraw would add a row. The
    bar goes first when the figures do not fit beside it."""
    bar, figures = "", []
    if total is not None:
        total = max(total, done)  # rows inserted since the estimate
        fraction = done / total if total else 1.0
        filled = int(fraction * BAR_WIDTH)
        bar = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}]"
        figures += [f"{done}/{'' if exact else '~'}{total}", f"{int(fraction * 100)}%"]
    else:
        figures.append(f"{done} rows")
    if rate:
        figures.append(f"{rate:.0f} rows/s")
        if total is not None and note == "" and total > done:
            figures.append(f"ETA {_duration((total - done) / rate)}")
    if note:
        figures.append(note)
    line = "  ".join([name, bar, *figures] if bar else [name, *figures])
    if len(line) >= width:
        line = "  ".join([name, *figures])
    return line[:max(width - 1, 1)].rstrip()


def _duration(seconds: float) -> str:
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class ProgressLine:
    """The migration being run, as one line on a terminal redrawn in place (a carriage
    return, then the line padded over the last one), at most once per REDRAW_EVERY however
    fast the batches go; a final line, kept, when the migration is done.

    The estimate is taken once per migration (``start``); each batch then adds the keys it
    covered, so the table is never counted again. Log lines share the terminal: inside
    ``with`` the line is wiped before each log line and drawn again at the next update.
    """

    def __init__(self, stream: TextIO, clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.clock = stream, clock
        self.name, self.done, self.total, self.exact, self.note = "", 0, None, True, ""
        self._covered, self._began = 0, 0.0
        self._drawn_at: float | None = None
        self._shown = 0  # characters of the line on the terminal now; 0 when wiped
        self._handlers: list[logging.Handler] = []

    def __enter__(self) -> ProgressLine:
        self._handlers = [handler for handler in logging.getLogger().handlers
                          if getattr(handler, "stream", None) is self.stream]
        for handler in self._handlers:
            handler.addFilter(self._before_log)
        return self

    def __exit__(self, *_exc: object) -> None:
        for handler in self._handlers:
            handler.removeFilter(self._before_log)
        self.clear()

    def start(self, name: str, done: int, total: int | None, exact: bool = True) -> None:
        """A migration begins (or resumes with ``done`` rows behind it)."""
        self.name, self.done, self.total, self.exact, self.note = name, done, total, exact, ""
        self._covered, self._began, self._drawn_at = 0, self.clock(), None
        self.update()

    def advance(self, rows: int) -> None:
        """A batch committed, covering ``rows`` more rows."""
        self.done += rows
        self._covered += rows
        self.note = ""
        self.update()

    def update(self, note: str | None = None, force: bool = False) -> None:
        """Redraw, unless the last redraw was less than REDRAW_EVERY ago (and not forced)."""
        if note is not None:
            self.note = note
        now = self.clock()
        if not force and self._drawn_at is not None and now - self._drawn_at < REDRAW_EVERY:
            return
        self._draw(render_progress(self.name, self.done, self.total, self._rate(now),
                                   exact=self.exact, note=self.note, width=self._width()))
        self._drawn_at = now

    def finish(self) -> None:
        """The migration is done: its last line, with the time it took, stays."""
        now = self.clock()
        line = render_progress(self.name, self.done, self.done, self._rate(now),
                               note=f"done in {_duration(now - self._began)}",
                               width=self._width())
        self._draw(line)
        self.stream.write("\n")
        self.stream.flush()
        self._shown = 0

    def clear(self) -> None:
        """Wipe the line, so that what is written next starts on a clean row."""
        if self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self.stream.flush()
            self._shown = 0

    def _before_log(self, _record: logging.LogRecord) -> bool:
        self.clear()
        return True

    def _rate(self, now: float) -> float | None:
        elapsed = now - self._began
        return self._covered / elapsed if self._covered and elapsed > 0 else None

    def _draw(self, line: str) -> None:
        self.stream.write("\r" + line.ljust(self._shown))
        self.stream.flush()
        self._shown = len(line)

    def _width(self) -> int:
        try:
            return os.get_terminal_size(self.stream.fileno()).columns or 80
        except (AttributeError, OSError, ValueError):
            return 80
