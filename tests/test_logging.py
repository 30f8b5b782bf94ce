"""Tests for echokit's logs: text or JSON, to stderr or a file, and what each line carries."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from tests.support import ECHOKIT, run_echokit


def serve_once(tmp_path: Path, *options: str) -> tuple[str, str]:
    """Run a tcp server with OPTIONS, make one echo, stop it; return its stdout and stderr."""
    env = dict(os.environ, ECHOKIT_CERT_DIR=str(tmp_path / "certs"), PYTHONUNBUFFERED="1")
    server = subprocess.Popen(
        [*ECHOKIT, *options, "serve", "tcp:0:interface=127.0.0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert server.stdout is not None
    line = server.stdout.readline().decode()
    target = line.split(" -> echokit connect ", 1)[1].strip()
    result = run_echokit(["connect", target], stdin=b"log me\n")
    assert result.stdout == b"log me\n"
    time.sleep(0.2)  # let the server log the close
    server.send_signal(signal.SIGTERM)
    out, err = server.communicate(timeout=20)
    return line + out.decode(), err.decode()


class LogFormatTests:
    def test_json_lines_carry_listener_transport_and_peer(self, tmp_path: Path) -> None:
        """--log-format json writes one JSON object per line; connection events name all three."""
        _, err = serve_once(tmp_path, "--log-format", "json")
        events = [json.loads(line) for line in err.splitlines() if line.strip()]
        connection_events = [e for e in events if "peer" in e]
        assert len(connection_events) == 2  # opened and closed
        for event in connection_events:
            assert event["listener"] == "tcp:0:interface=127.0.0.1"
            assert event["transport"] == "tcp"
            assert event["peer"].startswith("127.0.0.1:")
            assert event["log_namespace"] == "echokit.serve"

    def test_text_lines_name_listener_transport_and_peer(self, tmp_path: Path) -> None:
        """Text logs (the default) say the transport, the peer and the listener."""
        _, err = serve_once(tmp_path)
        lines = [line for line in err.splitlines() if "connection from" in line]
        assert len(lines) == 2
        for line in lines:
            assert "tcp connection from 127.0.0.1:" in line
            assert "on tcp:0:interface=127.0.0.1" in line

    def test_log_file(self, tmp_path: Path) -> None:
        """--log-file appends the log to a file and leaves stderr empty."""
        log = tmp_path / "echokit.log"
        _, err = serve_once(tmp_path, "--log-file", str(log))
        assert err == ""
        assert "connection from 127.0.0.1:" in log.read_text()

    def test_quiet_hides_connection_lines(self, tmp_path: Path) -> None:
        """-q logs only warnings and errors: no per-connection lines."""
        _, err = serve_once(tmp_path, "-q")
        assert "connection from" not in err

    def test_unwritable_log_file_is_a_one_line_error(self, tmp_path: Path) -> None:
        """A log file that cannot be opened: exit 2, one line naming it."""
        result = run_echokit(["--log-file", "/nonexistent-dir/x.log", "demo"], cert_dir=tmp_path)
        assert result.returncode == 2
        assert result.stderr.decode().splitlines() == [
            "echokit: error: cannot open log file '/nonexistent-dir/x.log': No such file or directory"
        ]
