"""The CLI's shared progress line and worker watch (control_plane.management.progress)."""

from __future__ import annotations

import io

from django.core.management.base import OutputWrapper

from control_plane.management.progress import CLEAR_LINE, ProgressLine, WorkerWatch, bar


def test_on_a_terminal_each_redraw_clears_the_line_first() -> None:
    out = io.StringIO()
    progress = ProgressLine(OutputWrapper(out), live=True)
    progress.show("[####] 100.0% running 1,000,000 rows 250,000 rows/s")
    progress.show("[####] 100.0% succeeded")
    progress.close()
    text = out.getvalue()
    # What a terminal shows after the second redraw: only the shorter line, nothing of the first.
    last = text.rstrip("\n").split("\r")[-1]
    assert last == "\x1b[2K[####] 100.0% succeeded"
    assert text.count(CLEAR_LINE) == 2
    assert text.endswith("\n")


def test_elsewhere_each_change_is_a_plain_line_and_repeats_are_dropped() -> None:
    out = io.StringIO()
    progress = ProgressLine(OutputWrapper(out))  # a StringIO is not a terminal
    assert progress.show("a")
    assert not progress.show("a")
    assert progress.show("b")
    progress.close()
    assert out.getvalue() == "a\nb\n"


def test_bar_is_bounded() -> None:
    assert bar(0.5, width=4) == "[##..]"
    assert bar(1.7, width=4) == "[####]"
    assert bar(-1, width=4) == "[....]"


def test_the_worker_watch_says_once_that_nobody_consumes_and_when_one_does() -> None:
    err = io.StringIO()
    found: list[list[str]] = [[], [], ["celery@w1"]]
    watch = WorkerWatch(
        "imports", OutputWrapper(err), what="import 7", consumers=lambda _q: found.pop(0),
        quiet_s=0,
    )  # fmt: skip
    watch.check()
    watch.check()
    watch.check()
    assert err.getvalue().splitlines() == [
        "no worker consumes the imports queue: import 7 waits for one"
        " (start `celery -A control_plane worker -Q imports`)",
        "worker celery@w1 consumes imports now",
    ]
