"""Tests for C{echokit demo}: the real command, and the table it prints."""

from __future__ import annotations

from pathlib import Path

from echokit.demo import Row, render
from tests.support import run_echokit


class DemoCommandTests:
    def test_every_transport_verifies(self, tmp_path: Path) -> None:
        """echokit demo serves and reaches all five transports and exits 0."""
        result = run_echokit(["demo"], cert_dir=tmp_path / "certs", timeout=60)
        out = result.stdout.decode()
        assert result.returncode == 0, result.stderr.decode()
        rows = {
            line.split()[0]: line
            for line in out.splitlines()
            if line[:4] in ("tcp ", "tcp6", "unix", "ssl ", "udp ")
        }
        assert set(rows) == {"tcp", "tcp6", "unix", "ssl", "udp"}
        for name, line in rows.items():
            assert ("  yes  " in line) or ("skipped" in line and name == "tcp6"), line
        assert "Traceback" not in result.stderr.decode()
        # Certificates were generated where ECHOKIT_CERT_DIR points, and said so.
        assert (tmp_path / "certs" / "ca.pem").is_file()
        assert f"created a CA and certificates in {tmp_path / 'certs'}" in out

    def test_endpoint_column_holds_working_connect_strings(self, tmp_path: Path) -> None:
        """The endpoint column shows client strings of each transport's kind."""
        out = run_echokit(["demo"], cert_dir=tmp_path).stdout.decode()
        assert "tcp:host=127.0.0.1:port=" in out
        assert "ssl:host=localhost:port=" in out
        assert "udp:host=127.0.0.1:port=" in out
        assert "unix:path=" in out


class RenderTests:
    def test_skipped_transport_shows_reason_not_failure(self) -> None:
        """A skipped transport says 'skipped' and why, and is not marked NO."""
        rows = [
            Row("tcp", "tcp:host=127.0.0.1:port=1", 10, 10, True, "0.10 ms", "0.05 ms"),
            Row("tcp6", "tcp6:0", skipped=True, note="skipped: no IPv6 loopback (::1)"),
            Row("udp", "udp:host=127.0.0.1:port=2", 10, 5, False, note="1 datagram(s) lost"),
        ]
        table = render(rows)
        lines = table.splitlines()
        assert lines[0].split()[:4] == ["transport", "endpoint", "sent/echoed", "bytes"]
        assert "skipped" in lines[3] and "NO" not in lines[3]
        assert "NO" in lines[4] and "10/5" in lines[4]
        assert "tcp6: skipped: no IPv6 loopback (::1)" in table
        assert "udp: 1 datagram(s) lost" in table
