"""Tests for C{echokit serve --workers N}: processes sharing the listening sockets."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import ECHOKIT, CollectedProcess, run_echokit


def socket_inodes(pid: int) -> set[str]:
    """The socket inodes a process holds open."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:"):
            inodes.add(target)
    return inodes


def listening_inode(port: int) -> str:
    """The inode of the TCP socket listening on 127.0.0.1:PORT (from /proc/net/tcp)."""
    wanted = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
                return f"socket:[{fields[9]}]"
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def serve_quietly(cert_dir: Path, *args: str) -> subprocess.Popen[bytes]:
    """Start C{echokit -q serve ARGS} (certificates in C{cert_dir}), stdout and stderr piped."""
    env = dict(os.environ, ECHOKIT_CERT_DIR=str(cert_dir), PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [*ECHOKIT, "-q", "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )


class WorkersTests:
    def test_workers_share_the_listeners_and_all_echo(self, tmp_path: Path) -> None:
        """
        With --workers 2 a second process holds the very same listening socket; every
        connection gets an exact echo; SIGTERM stops both, each printing its summary.
        """
        server = serve_quietly(tmp_path, "--workers", "2", "tcp:0:interface=127.0.0.1", "udp:0")
        assert server.stdout is not None
        lines = [server.stdout.readline().decode() for _ in range(3)]
        try:
            tcp = re.search(r"tcp:host=127\.0\.0\.1:port=(\d+)", lines[0])
            udp = re.search(r"udp:host=127\.0\.0\.1:port=(\d+)", lines[1])
            pids = re.search(r"pids: this one, (\d+)", lines[2])
            assert tcp and udp and pids, lines
            port, worker = int(tcp.group(1)), int(pids.group(1))
            deadline = time.monotonic() + 20
            while listening_inode(port) not in socket_inodes(worker):
                assert time.monotonic() < deadline, "the worker never held the listening socket"
                time.sleep(0.05)
            for i in range(100):
                payload = os.urandom(1000 + i)
                with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
                    conn.sendall(payload)
                    conn.shutdown(socket.SHUT_WR)
                    echoed = b""
                    while chunk := conn.recv(65536):
                        echoed += chunk
                assert echoed == payload
            result = run_echokit(
                ["connect", f"udp:host=127.0.0.1:port={udp.group(1)}"], stdin=b"a\nb\n"
            )
            assert result.stdout == b"a\nb\n"
        finally:
            server.send_signal(signal.SIGTERM)
            out, err = server.communicate(timeout=30)
        summaries = out.decode()
        assert server.returncode == 0, err.decode()
        assert "summary:" in summaries
        assert f"summary of worker 1 (pid {worker}):" in summaries
        served = [
            int(n)
            for n in re.findall(r"tcp:0:interface=127\.0\.0\.1: (\d+) connections", summaries)
        ]
        assert len(served) == 2 and sum(served) == 100, summaries
        with pytest.raises(ProcessLookupError):
            os.kill(worker, 0)

    def test_workers_keep_the_tls_and_proxy_layers(self, tmp_path: Path) -> None:
        """
        With --workers 2, C{ssl:} and C{haproxy:ssl:} listeners speak TLS in every
        process, the latter after a PROXY header: 40 connections to each get exact
        echoes, wherever the kernel sends them.
        """
        listeners = ["ssl:0:interface=127.0.0.1", "haproxy:ssl:0:interface=127.0.0.1"]
        server = serve_quietly(tmp_path, "--workers", "2", *listeners)
        assert server.stdout is not None
        lines = [server.stdout.readline().decode() for _ in range(4)]  # certificates made
        try:
            ports = [int(p) for p in re.findall(r"listening on 127\.0\.0\.1:(\d+)", "".join(lines))]
            pids = re.search(r"pids: this one, (\d+)", lines[3])
            assert len(ports) == 2 and pids, lines  # announced once the worker serves
            context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))
            proxy_header = b"PROXY TCP4 192.0.2.1 192.0.2.2 5000 443\r\n"
            for port, prefix in zip(ports, [b"", proxy_header], strict=True):
                for i in range(40):
                    payload = os.urandom(1000 + i)
                    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
                        raw.sendall(prefix)
                        with context.wrap_socket(raw, server_hostname="localhost") as conn:
                            conn.sendall(payload)
                            echoed = b""
                            while len(echoed) < len(payload) and (chunk := conn.recv(65536)):
                                echoed += chunk
                    assert echoed == payload, (port, i)
        finally:
            server.send_signal(signal.SIGTERM)
            out, err = server.communicate(timeout=30)
        summaries = out.decode()
        assert server.returncode == 0, err.decode()
        for listener in listeners:
            served = [int(n) for n in re.findall(rf"\n  {listener}: (\d+) connections", summaries)]
            assert len(served) == 2 and sum(served) == 40, summaries
            assert min(served) > 0, summaries  # both processes served some (both accept)

    def test_workers_are_announced_once_they_serve(self, tmp_path: Path) -> None:
        """
        The line announcing the workers comes once each serves, signal handlers in place:
        a SIGTERM sent the moment it appears still gets every process's summary.
        """
        server = serve_quietly(tmp_path, "--workers", "3", "ssl:0:interface=127.0.0.1")
        assert server.stdout is not None
        for _ in range(5):
            line = server.stdout.readline().decode()
            if "worker processes share" in line or not line:
                break
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
        assert line.startswith("3 worker processes share these listeners"), line
        assert server.returncode == 0, err.decode()
        assert "summary of worker 1" in out.decode() and "summary of worker 2" in out.decode()

    def test_worker_that_cannot_start_is_named_and_the_rest_serve(self, tmp_path: Path) -> None:
        """
        A worker that cannot start (here: an encrypted key, whose passphrase only the
        first process can ask) says why in one line; the first process names it, serves
        alone, and stops cleanly.
        """
        from cryptography.hazmat.primitives import serialization

        from echokit.transports.certs import CertStore

        store = CertStore(tmp_path / "certs")
        store.ensure()
        key = serialization.load_pem_private_key(store.server_key.read_bytes(), None)
        encrypted = tmp_path / "encrypted.key"
        encrypted.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"open sesame"),
            )
        )
        listener = f"ssl:0:interface=127.0.0.1:privateKey={encrypted}:certKey={store.server_cert}"
        env = dict(os.environ, ECHOKIT_CERT_DIR=str(store.directory), PYTHONUNBUFFERED="1")
        server = CollectedProcess(
            [*ECHOKIT, "serve", "--workers", "2", listener], stdin=subprocess.PIPE, env=env
        )
        stdin = server.process.stdin
        assert stdin is not None
        stdin.write(b"open sesame\n")  # no terminal: getpass reads stdin
        stdin.flush()
        try:
            assert server.wait_for(lambda: any("did not start" in line for line in server.err), 30)
            announced = [line for line in server.out if " listening on " in line]
            port = int(re.findall(r"127\.0\.0\.1:(\d+)", announced[0])[0])
            context = ssl.create_default_context(cafile=str(store.ca_cert))
            with (
                socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as conn,
            ):
                conn.sendall(b"still served")
                assert conn.recv(100) == b"still served"
        finally:
            server.process.send_signal(signal.SIGTERM)
            server.process.wait(timeout=30)
        server.wait_for(lambda: server._open_streams == 0, 10)
        text = "\n".join(server.err)
        assert server.process.returncode == 0, text
        assert (
            f"echokit: error: private key '{encrypted}' is encrypted and this process cannot "
            "ask for its passphrase (--workers)" in text
        ), text
        assert re.search(r"echokit: worker 1 \(pid \d+\) did not start serving", text), text
        assert "Traceback" not in text
        assert not any("worker processes share" in line for line in server.out)

    def test_bad_worker_count_is_a_usage_error(self, tmp_path: Path) -> None:
        """--workers must be a number from 1 to 256 or auto: exit 2, one line."""
        result = run_echokit(["serve", "--workers", "many", "tcp:0"], cert_dir=tmp_path)
        assert result.returncode == 2
        assert result.stderr.decode().splitlines() == [
            "echokit: error: --workers 'many': give a number from 1 to 256, or auto"
        ]
