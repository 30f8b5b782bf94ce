"""Tests for C{echokit demo}: the real command, and the table it prints."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor, utils
from twisted.trial.unittest import TestCase

from echokit import demo as demo_module
from echokit.demo import Row, render
from echokit.transports.endpoints import ipv6_unavailable
from tests.realnet import cert_store, deferred_test
from tests.support import run_echokit

Check = Callable[[Any, Any, Any, Row], Awaitable[None]]


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


class DemoConnectStringTests(TestCase):
    """The endpoint column is what a user copies: it must reach the demo's servers."""

    @deferred_test
    async def test_endpoint_column_holds_working_connect_strings(self) -> None:
        """
        While the demo serves, C{echokit connect STRING --message ...} (a separate
        process, as a user would run it) is echoed through each endpoint string the
        table then shows, one per transport.
        """
        reached: dict[str, tuple[str, int, bytes]] = {}
        env = dict(os.environ, ECHOKIT_CERT_DIR=str(cert_store().directory))

        def also_connect(check: Check) -> Check:
            async def checked(clock: Any, listener: Any, options: Any, row: Row) -> None:
                await check(clock, listener, options, row)
                out, err, code = await utils.getProcessOutputAndValue(
                    sys.executable,
                    ["-m", "echokit", "connect", row.endpoint, "--message", "copied"],
                    env=env,
                )
                reached[row.transport] = (row.endpoint, code, out + err)

            return checked

        self.patch(demo_module, "_check_stream", also_connect(demo_module._check_stream))
        self.patch(demo_module, "_check_datagrams", also_connect(demo_module._check_datagrams))
        out = io.StringIO()
        await demo_module.demo(reactor, cert_store(), out)
        table = out.getvalue().splitlines()
        expected = {"tcp", "unix", "ssl", "udp", "quic", "quic-dgram", "ws", "wss"} | (
            set() if ipv6_unavailable() else {"tcp6"}
        )
        self.assertEqual(set(reached), expected)
        for transport, (endpoint, code, output) in reached.items():
            self.assertEqual(code, 0, output)
            self.assertTrue(output.startswith(b"copied  ("), output)
            [row] = [line for line in table if line.split()[:1] == [transport]]
            self.assertEqual(row.split()[1], endpoint)


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
