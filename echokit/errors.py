"""
The errors whose messages reach the user.

Every error echokit expects to happen is an L{EchokitError}: its message is one line that
says what was wrong and how to fix it, and its C{exit_code} decides the process's exit
status. The CLI turns them into output in one place (L{echokit.cli.run}); nothing else
prints errors or calls C{sys.exit} (but L{echokit.__main__}, for a Ctrl-C while the command
line loads).

Exit codes:
    - 2: bad input (an endpoint string, a flag, a missing file); nothing was attempted.
    - 1: a runtime failure (refused, timed out, certificate rejected, echo differs).
    - 130 (L{INTERRUPTED}): ended by Ctrl-C (SIGINT), the shell's convention (128 + 2).
"""

#: The exit status of a command ended by Ctrl-C (SIGINT): 128 + 2, as shells report it.
INTERRUPTED = 130


class EchokitError(Exception):
    """
    An error with a one-line message for the user.

    @cvar exit_code: the exit status the CLI uses for this error.
    """

    exit_code = 1

    def __init__(self, message: str) -> None:
        # One line, always: control characters from user input are shown escaped.
        message = "".join(
            c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message
        )
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InputError(EchokitError):
    """Bad input: an endpoint string, a flag or a file the user named. Exit status 2."""

    exit_code = 2


class EndpointError(InputError):
    """An endpoint string that echokit cannot use, with what to write instead."""


class RuntimeFailure(EchokitError):
    """Something went wrong while running: listen or connect failed, timed out. Exit status 1."""


class ConnectFailed(RuntimeFailure):
    """A client could not reach its server (refused, timed out, TLS rejected)."""


class EchoMismatch(RuntimeFailure):
    """What came back is not what was sent."""


class DatagramsLost(RuntimeFailure):
    """Some UDP datagrams got no echo before their timeout."""
