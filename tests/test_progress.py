"""
Tests for C{bench}/C{compare}'s progress bar (L{echokit.measure.compare.ProgressBar}):
click's bar on a terminal, nothing elsewhere.
"""

from __future__ import annotations

import io
import re

from echokit.measure.compare import ProgressBar


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def last_frame(text: str) -> str:
    """The last line the bar drew (frames are separated by carriage returns)."""
    frames = [f for f in text.split("\r") if f.strip(" \x1b[?25l")]
    return re.sub(r"\x1b\[\?25[lh]", "", frames[-1]).rstrip()


class ProgressBarTests:
    def test_disabled_writes_nothing(self) -> None:
        """Disabled (stderr not a terminal), the bar writes nothing at all."""
        out = Terminal()
        bar = ProgressBar(False, 2, out)
        bar.start(0, "tcp:host=127.0.0.1:port=1")
        bar(0.5)
        bar.finish()
        assert out.getvalue() == ""

    def test_shows_overall_percent_and_the_endpoint(self) -> None:
        """
        Half of the first of two endpoints is 25% overall; all of the second is 100%;
        each frame names the endpoint being measured.
        """
        out = Terminal()
        bar = ProgressBar(True, 2, out)
        bar.start(0, "tcp:host=127.0.0.1:port=1")
        bar(0.5)
        frame = last_frame(out.getvalue())
        assert " 25%" in frame and frame.endswith("tcp:host=127.0.0.1:port=1"), frame
        bar.start(1, "unix:path=/tmp/echo.sock")
        bar(1.0)
        frame = last_frame(out.getvalue())
        assert "100%" in frame and frame.endswith("unix:path=/tmp/echo.sock"), frame
        assert "#" * 20 in frame

    def test_never_goes_back_and_long_labels_are_cut(self) -> None:
        """A smaller fraction than before draws nothing; a label is cut at 40 characters."""
        out = Terminal()
        bar = ProgressBar(True, 1, out)
        bar.start(0, "x" * 100)
        bar(0.6)
        drawn = out.getvalue()
        bar(0.3)
        assert out.getvalue() == drawn
        assert last_frame(drawn).endswith(" " + "x" * 40)

    def test_finish_erases_the_line_and_shows_the_cursor(self) -> None:
        """The results print on a clean line, and the cursor click hid is shown again."""
        out = Terminal()
        bar = ProgressBar(True, 1, out)
        bar.start(0, "udp:host=127.0.0.1:port=1")
        bar(1.0)
        bar.finish()
        assert out.getvalue().endswith("\r\x1b[K\x1b[?25h")
