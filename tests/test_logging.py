"""Tests for echokit's logs: text or JSON, to stderr or a file, and what each line carries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.logger import LogEvent, LogLevel, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from echokit.runtime.logs import AcceptTroubleWarnings
from tests.support import ECHOKIT, run_echokit


def stop(server: subprocess.Popen[bytes]) -> None:
    """Kill C{server} if it still runs, and close its pipes (a cleanup)."""
    if server.poll() is None:
        server.kill()
    server.communicate(timeout=20)


class LogFormatTests(SynchronousTestCase):
    def scratch(self) -> Path:
        """A temporary directory, removed after the test (trial's mktemp would leave its
        directories in the working directory under pytest)."""
        path = Path(tempfile.mkdtemp(prefix="echokit-logs-"))
        self.addCleanup(shutil.rmtree, path, True)
        return path

    def serve_once(self, *options: str) -> tuple[str, str]:
        """
        Run a tcp server with OPTIONS, make one echo, stop it; return its stdout and
        stderr. A cleanup kills the server if the test fails before it stops.
        """
        self.tmp_path = self.scratch()
        env = dict(os.environ, ECHOKIT_CERT_DIR=str(self.tmp_path / "certs"), PYTHONUNBUFFERED="1")
        server = subprocess.Popen(
            [*ECHOKIT, *options, "serve", "tcp:0:interface=127.0.0.1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.addCleanup(stop, server)
        assert server.stdout is not None
        line = server.stdout.readline().decode()
        self.assertIn(" -> echokit connect ", line)
        target = line.split(" -> echokit connect ", 1)[1].strip()
        result = run_echokit(["connect", target], stdin=b"log me\n")
        self.assertEqual(result.stdout, b"log me\n", result.stderr)
        time.sleep(0.2)  # let the server log the close
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=20)
        return line + out.decode(), err.decode()

    def test_json_lines_carry_listener_transport_and_peer(self) -> None:
        """--log-format json writes one JSON object per line; connection events name all three."""
        _, err = self.serve_once("--log-format", "json")
        events = [json.loads(line) for line in err.splitlines() if line.strip()]
        connection_events = [e for e in events if "peer" in e]
        self.assertEqual(len(connection_events), 2)  # opened and closed
        for event in connection_events:
            self.assertEqual(event["listener"], "tcp:0:interface=127.0.0.1")
            self.assertEqual(event["transport"], "tcp")
            self.assertTrue(event["peer"].startswith("127.0.0.1:"), event)
            self.assertEqual(event["log_namespace"], "echokit.serve")

    def test_text_lines_name_listener_transport_and_peer(self) -> None:
        """Text logs (the default) say the transport, the peer and the listener."""
        _, err = self.serve_once()
        lines = [line for line in err.splitlines() if "connection from" in line]
        self.assertEqual(len(lines), 2, err)
        for line in lines:
            self.assertIn("tcp connection from 127.0.0.1:", line)
            self.assertIn("on tcp:0:interface=127.0.0.1", line)

    def test_log_file(self) -> None:
        """--log-file appends the log to a file and leaves stderr empty."""
        log = self.scratch() / "echokit.log"
        _, err = self.serve_once("--log-file", str(log))
        self.assertEqual(err, "")
        self.assertIn("connection from 127.0.0.1:", log.read_text())

    def test_quiet_hides_connection_lines(self) -> None:
        """-q logs only warnings and errors: no per-connection lines."""
        _, err = self.serve_once("-q")
        self.assertNotIn("connection from", err)

    def test_unwritable_log_file_is_a_one_line_error(self) -> None:
        """A log file that cannot be opened: exit 2, one line naming it."""
        result = run_echokit(
            ["--log-file", "/nonexistent-dir/x.log", "demo"], cert_dir=self.scratch()
        )
        self.assertEqual(result.returncode, 2)
        self.assertEqual(
            result.stderr.decode().splitlines(),
            [
                "echokit: error: cannot open log file '/nonexistent-dir/x.log': "
                "No such file or directory"
            ],
        )


class AcceptTroubleWarningsTests(SynchronousTestCase):
    """Twisted's per-connection 'could not accept' events become one warning per interval."""

    def test_a_burst_of_accept_failures_is_one_warning(self) -> None:
        """50 EMFILE events within the interval make one warning, naming the limit."""
        seen: list[LogEvent] = []
        warnings = AcceptTroubleWarnings(seen.append, interval=60.0)  # type: ignore[arg-type]
        for _ in range(50):
            warnings({"log_format": "EMFILE encountered; releasing reserved file descriptor."})
        warnings({"log_format": "something else"})
        self.assertEqual(len(seen), 1)
        self.assertEqual(seen[0]["log_level"], LogLevel.warn)
        self.assertIn("out of file descriptors", formatEvent(seen[0]))
