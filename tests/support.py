"""
Helpers shared by echokit's tests: run the real C{echokit} command, start a real server.

Everything here talks only to loopback addresses and unix sockets in temporary
directories, and every wait is bounded.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NoReturn

import pytest

#: The echokit command, run as a module of the interpreter running the tests.
ECHOKIT = [sys.executable, "-m", "echokit"]


def unmet(why: str) -> NoReturn:
    """
    Skip a test whose need is not met here (a tool, IPv6 loopback, root, a resource
    limit): C{why} says which. Under CI (C{CI} set) every test must run, so there the
    test fails instead, and CI's machine or C{.ci/run} must provide the need.
    """
    if os.environ.get("CI"):
        pytest.fail(f"{why}, and CI must run this test (.ci/run provides what tests need)")
    pytest.skip(why)


def skip_reason(why: str | None) -> str | None:
    """
    C{why} as a trial C{skip} attribute, or C{None} under CI (C{CI} set), where the
    test runs anyway and fails on the missing need (as L{unmet} would make it).
    """
    return None if os.environ.get("CI") else why


def require_tool(name: str) -> str:
    """
    The path of an external tool the test needs.

    Skips the test where the tool is missing, except under CI (C{CI} set), where
    interop tests must run: there a missing tool fails the test.
    """
    path = shutil.which(name)
    if path is None:
        unmet(f"{name} is not installed")
    return path


def require_ipv6() -> None:
    """Skip (fail under CI) where there is no IPv6 loopback (::1)."""
    from echokit.transports.endpoints import ipv6_unavailable

    missing = ipv6_unavailable()
    if missing is not None:
        unmet(missing)


def sigint_default() -> None:
    """
    For C{preexec_fn}: the child takes SIGINT as a terminal's Ctrl-C does, even when this
    test run inherited SIGINT ignored (a shell's background job does), which Python and
    Twisted would both keep: a test that sends SIGINT then hangs or sees it ignored.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_echokit(
    args: Sequence[str],
    cert_dir: Path | None = None,
    stdin: bytes | None = b"",
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """Run C{echokit ARGS} to completion with C{stdin} piped in; capture both outputs."""
    env = dict(os.environ)
    if cert_dir is not None:
        env["ECHOKIT_CERT_DIR"] = str(cert_dir)
    return subprocess.run(
        [*ECHOKIT, *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@dataclass
class RunningServer:
    """An C{echokit serve} child process and the connect strings it announced."""

    process: subprocess.Popen[bytes]
    connect_strings: list[str]
    announcements: list[str]

    def stop(self) -> str:
        """Stop the server (SIGTERM), wait for it, and return what it logged on stderr."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        assert self.process.stderr is not None
        return self.process.stderr.read().decode(errors="replace")


@contextmanager
def echokit_server(
    descriptions: Sequence[str],
    cert_dir: Path,
    extra: Sequence[str] = (),
    flags: Sequence[str] = (),
) -> Iterator[RunningServer]:
    """
    Run C{echokit EXTRA serve FLAGS DESCRIPTIONS} and wait until every listener is
    announced.

    The connect strings come from the server's own announcements, exactly as a user
    would copy them.
    """
    env = dict(os.environ, ECHOKIT_CERT_DIR=str(cert_dir), PYTHONUNBUFFERED="1")
    process = subprocess.Popen(
        [*ECHOKIT, *extra, "serve", *flags, *descriptions],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert process.stdout is not None
    announcements: list[str] = []
    deadline = time.monotonic() + 30
    while len(announcements) < len(descriptions):
        line = process.stdout.readline().decode()
        if not line:
            assert process.stderr is not None
            raise AssertionError(
                f"echokit serve exited early ({process.wait()}): {process.stderr.read().decode()}"
            )
        if " listening on " in line:
            announcements.append(line.strip())
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("echokit serve did not announce its listeners in 30 s")
    connect_strings = [shlex.split(a.split(" -> echokit connect ", 1)[1])[0] for a in announcements]
    server = RunningServer(process, connect_strings, announcements)
    try:
        yield server
    finally:
        server.stop()


def port_of(connect_string: str) -> int:
    """The port number in a C{...:port=N} connect string."""
    return int(connect_string.rsplit("port=", 1)[1])


class CollectedProcess:
    """
    A child process whose stdout and stderr are collected line by line.

    Reader threads keep both pipes drained (a busy server logs thousands of lines);
    L{wait_for} waits, bounded, for a condition on what was read so far.
    """

    def __init__(self, argv: Sequence[str], stdin: Any = subprocess.DEVNULL, **popen: Any) -> None:
        self.argv = list(argv)
        self.process = subprocess.Popen(
            self.argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **popen,
        )
        self.out: list[str] = []
        self.err: list[str] = []
        self._changed = threading.Condition()
        self._open_streams = 2
        assert self.process.stdout is not None and self.process.stderr is not None
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    def _read(self, stream: IO[bytes], lines: list[str]) -> None:
        for raw in iter(stream.readline, b""):
            with self._changed:
                lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._open_streams -= 1
            self._changed.notify_all()

    def wait_for(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Wait up to C{seconds} for C{condition()}; say whether it held."""
        with self._changed:
            return self._changed.wait_for(condition, timeout=seconds)
