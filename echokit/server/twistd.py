"""
C{twistd echokit}: echokit's server as a twistd plugin.

    twistd -n echokit --listen tcp:16000 --listen udp:16000

C{twisted/plugins/echokit_plugin.py} names this module in a L{ServiceMaker}, so twistd
imports it only when C{echokit} is the command. L{Options} takes the same limits as
C{echokit serve} (same names, same defaults: L{ServerPolicy}'s), one C{--listen} per
endpoint, each string checked with the same parser as C{echokit serve}; a bad one is a
usage error carrying echokit's one-line message. L{makeService} builds the very
L{EchoService} C{echokit serve} runs.

What twistd adds, and how echokit fits it:

    - Logging is twistd's: C{--logfile}, C{--syslog}, C{--prefix} and C{--logger} decide
      where connection lines go (with C{-n} and no C{--logfile}: stdout). echokit's own
      C{-q} filter does not apply; C{--verbose} logs every message echoed.
    - Announcements (one line per listener, with its connect string) and the shutdown
      summary go to stdout, exactly as C{echokit serve} prints them, when twistd runs in
      the foreground (C{-n}). A daemon's stdout is /dev/null, so without C{-n} (or with
      no stdout at all) they go to twistd's log instead, as C{echokit.serve} info events.
    - Ports are bound in C{privilegedStartService}, before twistd switches to C{--uid}
      and C{--gid}: C{twistd -u nobody -g nogroup echokit --listen tcp:7} binds port 7 as
      root, then runs as nobody.
    - If an endpoint cannot listen (port taken, no permission), the process exits with
      status 1 after one critical log line C{echokit: error: ...}, instead of running
      without listeners (see L{TwistdEchoService._start_echo}).
    - SIGTERM or SIGINT stops accepting, drains open connections for up to C{--drain}
      seconds and writes the summary, as under C{echokit serve}; twistd then ends the
      process with the signal that stopped it (status 143 for SIGTERM, which systemd
      counts as a clean stop). A second signal during the drain exits at once, with
      status 128 + its number, as under C{echokit serve}.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, TextIO, cast

from twisted.application.service import IService, MultiService, Service
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from echokit.errors import EchokitError
from echokit.runtime.policy import LIMIT_OPTIONS, ServerPolicy
from echokit.server.serve import EchoService
from echokit.transports.certs import CERT_DIR_ENV, CertStore, resolve_cert_dir
from echokit.transports.grammar import EndpointSpec

_log = Logger(namespace="echokit.serve")


def _default(field: str) -> str:
    value = getattr(ServerPolicy, field)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _number(option: str, text: str, kind: type[int] | type[float]) -> int | float:
    what = "a whole number" if kind is int else "a number"
    try:
        value = kind(text)
    except ValueError:
        raise usage.UsageError(f"--{option}: '{text}' is not {what}") from None
    if not value >= 0:  # also refuses nan
        raise usage.UsageError(f"--{option}: {text} is not {what} >= 0")
    return value


class Options(usage.Options):
    """C{twistd echokit}'s options: C{echokit serve}'s, with C{--listen} per endpoint."""

    synopsis = "[options] --listen DESCRIPTION [--listen DESCRIPTION ...]"
    longdesc = (
        "Echo on every endpoint given, in one process, as `echokit serve` does. "
        "DESCRIPTION is an `echokit serve` endpoint string: tcp, tcp6, unix, ssl, udp, "
        "udp6, quic, or a Twisted endpoint plugin's (systemd:, haproxy:, ...). Example: "
        "twistd -n echokit --listen tcp:16000 --listen udp:16000"
    )
    optFlags = [
        [
            "require-client-cert",
            None,
            "TLS listeners demand a client certificate signed by echokit's CA (or --client-ca).",
        ],
        ["verbose", "v", "Log every message echoed, not only connections."],
    ]
    optParameters = [
        [option, None, _default(field), help_text] for option, field, _, help_text in LIMIT_OPTIONS
    ] + [
        [
            "client-ca",
            None,
            None,
            "CA certificate file for --require-client-cert (default: echokit's ca.pem).",
        ],
        [
            "cert-dir",
            None,
            None,
            f"Certificate directory (default: ${CERT_DIR_ENV}, else ~/.local/share/echokit/certs).",
        ],
    ]

    def __init__(self) -> None:
        usage.Options.__init__(self)
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Echo on this endpoint string (repeat for more), e.g. tcp:16000 or udp:16000."""
        from echokit.transports.endpoints import check_kind
        from echokit.transports.grammar import parse_server

        try:
            spec = parse_server(description)
            check_kind(spec, "server")
        except EchokitError as e:
            raise usage.UsageError(str(e)) from None
        self["listen"].append(spec)

    def parseArgs(self, *args: str) -> None:
        if args:
            raise usage.UsageError(
                f"unexpected argument '{args[0]}': give each endpoint with --listen, "
                f"e.g. --listen {args[0]}"
            )

    def postOptions(self) -> None:
        if not self["listen"]:
            raise usage.UsageError(
                "give at least one --listen DESCRIPTION, e.g. --listen tcp:16000"
            )
        limits: dict[str, Any] = {
            field: _number(option, self[option], kind) for option, field, kind, _ in LIMIT_OPTIONS
        }
        client_ca = Path(self["client-ca"]) if self["client-ca"] else None
        require = bool(self["require-client-cert"])
        if client_ca is not None:
            if not require:
                raise usage.UsageError(
                    "--client-ca only applies with --require-client-cert: add it"
                )
            if not client_ca.is_file():
                raise usage.UsageError(f"--client-ca: no such file: '{client_ca}'")
        self["policy"] = ServerPolicy(require_client_cert=require, client_ca=client_ca, **limits)
        try:
            self["certs"] = CertStore(resolve_cert_dir(self["cert-dir"]))
        except EchokitError as e:
            raise usage.UsageError(str(e)) from None

    @property
    def specs(self) -> list[EndpointSpec]:
        return list(self["listen"])

    @property
    def policy(self) -> ServerPolicy:
        policy = self["policy"]
        assert isinstance(policy, ServerPolicy)
        return policy


class LogLines:
    """
    A text stream that sends each line written to it to the log (C{echokit.serve}, info).

    What L{EchoService} announces goes here when twistd has no usable stdout.
    """

    def __init__(self) -> None:
        self._pending = ""

    def write(self, text: str) -> int:
        lines = (self._pending + text).split("\n")
        self._pending = lines.pop()
        for line in lines:
            _log.info("{line}", line=line)
        return len(text)

    def flush(self) -> None:
        if self._pending:
            line, self._pending = self._pending, ""
            _log.info("{line}", line=line)


def announcement_stream(options: usage.Options) -> TextIO:
    """
    Where announcements and the summary go: stdout in the foreground, else the log.

    Called from L{makeService}, before twistd starts its logging and replaces
    C{sys.stdout} with a stream into the log: the object returned is the real stdout.
    """
    twistd = getattr(options, "parent", None)
    foreground = twistd is None or bool(twistd.get("nodaemon"))
    if foreground and sys.stdout is not None:
        return sys.stdout
    return cast(TextIO, LogLines())


class TwistdEchoService(MultiService):
    """
    An L{EchoService} as twistd runs it: listening while still privileged, failing fast.

    twistd calls C{privilegedStartService} before it drops privileges (C{--uid},
    C{--gid}), then C{startService}; the echo service starts (listens, announces) in the
    first. Outside twistd (a C{.tac} file), C{startService} alone starts it.

    @ivar echo: the L{EchoService}, the same one C{echokit serve} runs.
    """

    failed = False

    def __init__(self, echo: EchoService, out: TextIO) -> None:
        MultiService.__init__(self)
        self.echo = echo
        self.out = out
        Service.setServiceParent(echo, self)

    def privilegedStartService(self) -> None:
        Service.privilegedStartService(self)
        self._start_echo()

    def startService(self) -> None:
        Service.startService(self)
        if not self.echo.running:
            self._start_echo()

    def _start_echo(self) -> None:
        """
        Start the echo service; if it cannot listen, exit 1 (2 for bad input).

        When the first endpoint fails, C{startService} knows at once: twistd stops
        starting and exits with that status (a daemon's parent too). When a later one
        fails, the listeners already started are stopped first, which takes a turn of
        the reactor: then twistd is stopped, and the process exits with that status
        once twistd has cleaned up (twistd itself always exits 0 after a stop).
        """
        self.echo.startService()
        outcome: list[object] = []

        def seen(result: object) -> object:
            outcome.append(result)
            return result

        self.echo.ready.addBoth(seen)
        if not outcome:
            self.echo.ready.addErrback(self._failed_later)
        elif isinstance(outcome[0], Failure):
            self.failed = True
            self.echo.ready.addErrback(lambda _: None)
            raise SystemExit(_startup_failed(outcome[0]))

    def _failed_later(self, failure: Failure) -> None:
        self.failed = True
        atexit.register(_exit_with, _startup_failed(failure))
        reactor = self.echo.reactor
        reactor.callWhenRunning(reactor.stop)

    def stopService(self) -> Any:
        if self.failed:  # nothing listens: nothing to drain or summarize
            Service.stopService(self)
            return None
        if self.echo.running:
            _second_signal_exits()
            self.out.write(
                "stopping: stopped accepting; letting open connections finish for up to "
                f"{self.echo.policy.drain:g} s (a second signal exits at once)\n"
            )
            self.out.flush()
        return MultiService.stopService(self)


def _startup_failed(failure: Failure) -> int:
    """Log, in one line, why the service could not start; return the exit status."""
    error = failure.value
    if isinstance(error, EchokitError):
        _log.critical("echokit: error: {message}", message=str(error))
        return error.exit_code
    _log.failure("echokit: internal error while starting", failure)
    return 1


def _second_signal_exits() -> None:
    """
    As under C{echokit serve}: once draining, SIGINT or SIGTERM exits at once (status
    128 + the signal), instead of twistd's logging that the reactor is already stopping.
    """

    def now(signum: int, frame: FrameType | None) -> None:
        _exit_with(128 + signum)

    for each in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):  # only the main thread may; twistd's is
            signal.signal(each, now)


def _exit_with(status: int) -> None:
    """Flush what was written, and exit with C{status} now."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    os._exit(status)


def makeService(options: Options) -> IService:
    """Build C{twistd echokit}'s service: L{EchoService} under L{TwistdEchoService}."""
    # The one place besides echokit.cli that takes the global reactor: twistd has
    # installed and will run it, and a service maker receives no reactor argument.
    from twisted.internet import reactor

    out = announcement_stream(options)
    echo = EchoService(
        reactor, options.specs, options["certs"], out, options.policy, bool(options["verbose"])
    )
    return TwistdEchoService(echo, out)
