"""What every `--wait` of the CLI shares: a progress line, a watch for absent workers, a deadline.

On a terminal the line is redrawn in place, cleared first, so a shorter line leaves nothing of a
longer one behind; elsewhere (a pipe, CI's log) each change is a plain line of its own. While the
job does not move, the queue is checked for consumers, and the operator told once when none is
there. fanout_migrate, import_tasks and onboard_tenant use it; it never changes a job.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TextIO

from control_plane.worker.queues import queue_consumers

BAR_WIDTH = 30
CLEAR_LINE = "\r\x1b[2K"
WORKER_CHECK_S = 5.0


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """`[#########.....................]` for a fraction between 0 and 1."""
    filled = max(0, min(width, round(fraction * width)))
    return "[" + "#" * filled + "." * (width - filled) + "]"


def is_terminal(stream: Any) -> bool:
    """Whether `stream` (a Django OutputWrapper or a file) is an interactive terminal."""
    isatty = getattr(stream, "isatty", None)
    if isatty is None:
        isatty = getattr(getattr(stream, "_out", None), "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


class ProgressLine:
    """One line of progress on `stream`: redrawn in place on a terminal, else a line per change."""

    def __init__(self, stream: Any, *, live: bool | None = None) -> None:
        self.stream = stream
        self.live = is_terminal(stream) if live is None else live
        self.last = ""

    def show(self, line: str) -> bool:
        """Draw `line`; True when it differs from the last one (the job moved)."""
        changed = line != self.last
        if self.live:
            self.stream.write(CLEAR_LINE + line, ending="")
            self.stream.flush()
        elif changed:
            self.stream.write(line)
        self.last = line
        return changed

    def close(self) -> None:
        """End the redrawn line, so what follows starts on a line of its own."""
        if self.live and self.last:
            self.stream.write("")
            self.last = ""


class WorkerWatch:
    """Says on `stderr`, once, when the job has not moved for a while and no worker consumes
    its queue, and again when one does."""

    def __init__(
        self,
        queue: str,
        stderr: TextIO | Any,
        *,
        what: str,
        consumers: Callable[[str], list[str]] = queue_consumers,
        quiet_s: float = WORKER_CHECK_S,
    ) -> None:
        self.queue, self.stderr, self.what = queue, stderr, what
        self.consumers, self.quiet_s = consumers, quiet_s
        self.moved = self.checked = time.monotonic()
        self.warned = False

    def moving(self) -> None:
        self.moved = time.monotonic()

    def check(self) -> None:
        now = time.monotonic()
        if now - self.moved < self.quiet_s or now - self.checked < self.quiet_s:
            return
        self.checked = now
        found = self.consumers(self.queue)
        if not found and not self.warned:
            self.stderr.write(
                f"no worker consumes the {self.queue} queue: {self.what} waits for one"
                f" (start `celery -A control_plane worker -Q {self.queue}`)"
            )
        elif found and self.warned:
            self.stderr.write(f"worker {found[0]} consumes {self.queue} now")
        self.warned = not found


class Deadline:
    """`--timeout`: None or 0 waits for ever."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds or None
        self.started = time.monotonic()

    def passed(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.started >= self.seconds
