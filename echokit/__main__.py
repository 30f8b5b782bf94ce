"""
The C{echokit} command's first frame: C{python -m echokit} and the installed script.

Importing the command line (click, and Twisted once a command runs) takes a noticeable
fraction of a second, and a Ctrl-C in that time would otherwise end in a
C{KeyboardInterrupt} traceback. L{main} imports it under a guard, so Ctrl-C at any point
before the reactor takes over signals exits quietly with the shell's status for SIGINT
(130), as Ctrl-C does once a command runs.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from echokit.errors import INTERRUPTED


def main() -> NoReturn:
    """Run L{echokit.cli.entry}; a Ctrl-C while it loads or parses exits 130, quietly."""
    try:
        from echokit.cli import entry

        entry()
    except KeyboardInterrupt:
        sys.stderr.write("\n")  # the shell's prompt on a fresh line, after the echoed ^C
        sys.exit(INTERRUPTED)


if __name__ == "__main__":
    main()
