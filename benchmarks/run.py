"""
echokit's benchmarks: honest latency numbers, echokit serve against asyncio, and extras.

    .venv/bin/python benchmarks/run.py [--quick]
        [--only honest|servers|workers|reactors|extras]...
        [--rounds N] [--seconds S] [--no-pin] [--json FILE]

Run it through C{make bench}, which first compiles the native programs into
C{benchmarks/native/build/} (this script builds nothing). Five sections:

    honest   the native echo server, measured by the native pingpong client and by
             C{echokit bench} (64-byte messages, one in flight), over tcp, unix and udp:
             is echokit bench's own client overhead small (p50 within 1.5x of native)?
    servers  C{echokit serve} (default flags), asyncio's echo server (and on uvloop, if
             importable) and the native echo server, all driven by the same native
             loadgen (10 connections, 1 KiB, 64 KiB, 1 MiB, tcp and unix; udp at 1 KiB),
             TLS (loadgen --tls, OpenSSL) at 1 KiB and 100 KiB, and
             latency with one message in flight (pingpong, 64 B, tcp and unix)
    workers  C{echokit serve} with one process and with C{--workers 2}, tcp and TLS, driven
             by loadgen with 20 connections: what a second process adds on this machine
    reactors C{echokit serve --reactor} lean, epoll, asyncio (and uvloop, if importable),
             tcp, unix and TLS at 1 KiB: the measurement behind the default (lean)
    extras   server memory per idle TCP connection, and C{echokit --help} start-up time

Measurements are interleaved: every round visits every server (in a rotated order) before
the next round starts, and each table shows the median over rounds. Every loop is
bounded in count and time; every server started here is stopped in a C{finally} block.
Everything talks to 127.0.0.1 or unix sockets in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.util
import json
import os
import platform
import resource
import select
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BUILD = HERE / "native" / "build"
ECHO_SERVER = BUILD / "echo_server"
PINGPONG = BUILD / "pingpong"
LOADGEN = BUILD / "loadgen"
ASYNCIO_SERVER = HERE / "servers" / "asyncio_echo.py"
PYTHON = sys.executable

KIB = 1024
MIB = 1024 * 1024
STREAM_SIZES = (1 * KIB, 64 * KIB, 1 * MIB)
TLS_SIZES = (1 * KIB, 100 * KIB)
HONEST_TARGET = 1.5


def echokit_command() -> str:
    """The echokit next to this interpreter (the venv's), else the one on the PATH."""
    beside = Path(sys.executable).parent / "echokit"
    if beside.exists():
        return str(beside)
    import shutil

    found = shutil.which("echokit")
    if found is None:
        raise SystemExit("run.py: no echokit command: run it with the venv's python")
    return found


ECHOKIT = echokit_command()


class BenchError(Exception):
    """One measurement failed; the run goes on and reports it at the end."""


@dataclass
class Settings:
    """How long and how often to measure (see --quick)."""

    rounds: int = 5
    honest_seconds: float = 2.0
    load_seconds: float = 1.5
    load_warmup: float = 0.25
    latency_seconds: float = 1.0
    connections: int = 10
    pin: bool = True
    idle_connections: int = 10_000
    startup_runs: int = 10
    #: A throughput run during which other processes took more than this much CPU (% of
    #: one core) is repeated, keeping the least disturbed run, within retry_seconds.
    disturbed_cpu: float = 50.0
    retry_seconds: float = 45.0

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            rounds=1,
            honest_seconds=1.0,
            load_seconds=0.5,
            load_warmup=0.1,
            latency_seconds=0.5,
            idle_connections=1_000,
            startup_runs=5,
            retry_seconds=10.0,
        )


@dataclass
class Report:
    """Everything measured, for --json."""

    environment: dict[str, Any]
    settings: dict[str, Any]
    sections: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


# --- output ----------------------------------------------------------------------------


def say(text: str = "") -> None:
    print(text, flush=True)


def render(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A plain text table: the first C{left} columns left-aligned, the rest right."""
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        out = [
            str(c).ljust(w) if i < left else str(c).rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def size_name(size: int) -> str:
    if size % MIB == 0:
        return f"{size // MIB} MiB"
    if size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} B"


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.2f}x"


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def command_text(argv: Sequence[str]) -> str:
    def short(arg: str) -> str:
        for prefix, name in ((str(BUILD) + "/", "benchmarks/native/build/"), (PYTHON, "python")):
            if arg.startswith(prefix):
                return name + arg[len(prefix) :]
        if arg == ECHOKIT:
            return "echokit"
        if arg.startswith(str(HERE) + "/"):
            return "benchmarks/" + arg[len(str(HERE)) + 1 :]
        return arg

    return " ".join(shlex.quote(short(a)) for a in argv)


# --- the machine -----------------------------------------------------------------------


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def environment() -> dict[str, Any]:
    from importlib import metadata

    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command_text([PYTHON, *sys.argv]),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "twisted": version("twisted"),
        "echokit": version("echokit"),
        "uvloop": version("uvloop") if uvloop_available() else None,
    }


# --- processes -------------------------------------------------------------------------


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> tuple[float, float]:
    """
    CPU seconds the whole machine has spent (all CPUs, from /proc/stat): in processes
    (user, nice, system, and steal: time the hypervisor took), and in interrupts and
    softirqs, where the kernel runs loopback TCP and UDP for everyone, our own traffic
    included (that time is not charged to any process).
    """
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    ticks = [int(f) for f in fields] + [0] * 8
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    processes = ticks[0] + ticks[1] + ticks[2] + ticks[7]
    interrupts = ticks[5] + ticks[6]
    return processes / CLOCK_TICKS, interrupts / CLOCK_TICKS


class CPUWatch:
    """CPU used during a measurement: by the server, by the client, and by anything else."""

    def __init__(self, server: Server | None) -> None:
        self.server = server
        self.t0 = time.monotonic()
        self.machine0 = machine_cpu_seconds()
        self.server0 = server.cpu_seconds() if server is not None else 0.0

    def stop(self, client_cpu: float) -> dict[str, float]:
        """Each as % of one core over the measurement's wall time."""
        wall = max(time.monotonic() - self.t0, 1e-9)
        now = machine_cpu_seconds()
        processes, interrupts = now[0] - self.machine0[0], now[1] - self.machine0[1]
        server = self.server.cpu_seconds() - self.server0 if self.server is not None else 0.0
        return {
            "server_cpu": server / wall * 100,
            "client_cpu": client_cpu / wall * 100,
            "softirq_cpu": interrupts / wall * 100,
            "other_cpu": max(0.0, processes - server - client_cpu) / wall * 100,
        }


class Server:
    """
    One echo server process: started, its listeners read from its stdout, stopped.

    Servers announce their listeners on stdout: the native and asyncio servers as
    C{tcp HOST PORT}, C{unix PATH}, C{udp HOST PORT}, C{tls HOST PORT}; C{echokit serve}
    as C{... -> echokit connect STRING}. L{addresses} maps tcp, unix, udp and tls to
    C{HOST:PORT} (or the unix path).
    """

    def __init__(self, name: str, argv: Sequence[str], listeners: int, workdir: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.listeners = listeners
        self.workdir = workdir
        self.addresses: dict[str, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self._stderr_path = workdir / f"{name.replace(' ', '_')}.stderr"

    def start(self, timeout: float = 30.0) -> Server:
        stderr = self._stderr_path.open("wb")
        try:
            self.process = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr
            )
        finally:
            stderr.close()
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        buffer = b""
        deadline = time.monotonic() + timeout
        while len(self.addresses) < self.listeners:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"{self.name}: no listeners announced within {timeout:g} s")
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise BenchError(f"{self.name} exited early: {self.stderr_tail()}")
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self._announced(line.decode(errors="replace").strip())
        return self

    def _announced(self, line: str) -> None:
        if " -> echokit connect " in line:
            string = shlex.split(line.split(" -> echokit connect ", 1)[1])[0]
            kind, _, rest = string.partition(":")
            fields = dict(item.split("=", 1) for item in rest.split(":") if "=" in item)
            if kind == "unix":
                self.addresses["unix"] = fields["path"]
            else:
                key = "tls" if kind == "ssl" else kind
                self.addresses[key] = f"127.0.0.1:{fields['port']}"
            return
        parts = line.split()
        if len(parts) == 2 and parts[0] == "unix":
            self.addresses["unix"] = parts[1]
        elif len(parts) == 3 and parts[0] in ("tcp", "udp", "tls"):
            self.addresses[parts[0]] = f"{parts[1]}:{parts[2]}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} is not running: {self.stderr_tail()}")

    def cpu_seconds(self) -> float:
        """User plus system CPU time the server (and its workers, if any) used so far."""
        total = 0.0
        for pid in (self.pid, *child_pids(self.pid)):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
        return total

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise BenchError(f"{self.name}: no VmRSS")

    def set_affinity(self, cpus: set[int]) -> None:
        """Run every thread of the server on C{cpus} (nothing if it has just exited)."""
        with contextlib.suppress(OSError):
            for tid in os.listdir(f"/proc/{self.pid}/task"):
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(int(tid), cpus)

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def stderr_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self._stderr_path.read_text(errors="replace").strip().splitlines()
            if lines:
                return lines[-1]
        return "no message on stderr"

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()


def child_pids(pid: int) -> list[int]:
    """The processes whose parent is C{pid} (echokit serve --workers' workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append(int(entry))
    return found


@contextlib.contextmanager
def running(servers: Sequence[Server]) -> Iterator[list[Server]]:
    """Start every server; stop all of them however the block ends."""
    try:
        for server in servers:
            server.start()
        yield list(servers)
    finally:
        for server in servers:
            server.stop()


ALL_CPUS = set(os.sched_getaffinity(0))
PIN_CPU = max(ALL_CPUS)


@contextlib.contextmanager
def pinned(servers: Sequence[Server], enabled: bool) -> Iterator[set[int] | None]:
    """
    Put the servers on one CPU for the block; yield that CPU set for the client, or
    None when pinning is off.

    One message in flight leaves CPUs idle between round trips, and on a virtual machine
    waking an idle CPU can cost more than the round trip itself (tens of microseconds,
    and bimodal). With client and server on one CPU the round trip is their own work.
    """
    if not enabled:
        yield None
        return
    cpus = {PIN_CPU}
    try:
        for server in servers:
            server.set_affinity(cpus)
        yield cpus
    finally:
        for server in servers:
            if server.alive():
                server.set_affinity(ALL_CPUS)


def run_json(
    argv: Sequence[str], timeout: float, cpus: set[int] | None = None
) -> tuple[dict[str, Any], float]:
    """
    Run a client that prints JSON; return (its last JSON line, its CPU seconds).

    @param cpus: if given, the client runs on these CPUs only.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            preexec_fn=pin,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:g} s: {command_text(argv)}") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise BenchError(f"{command_text(argv)}: {why}")
    return json.loads(lines[-1]), cpu


def target_args(transport: str, address: str) -> list[str]:
    return [f"--{transport}", address]


def loadgen_argv(
    transport: str,
    address: str,
    size: int,
    connections: int,
    seconds: float,
    warmup: float,
    ca: Path | None = None,
) -> list[str]:
    """The native loadgen's command line; over TLS it verifies the server against C{ca}."""
    argv = [str(LOADGEN), *target_args(transport, address)]
    argv += ["--connections", str(connections), "--size", str(size)]
    argv += ["--duration", f"{seconds:g}", "--warmup", f"{warmup:g}"]
    if transport == "tls":
        if ca is None:
            raise BenchError("loadgen --tls needs the CA that signed the server's certificate")
        argv += ["--ca", str(ca), "--hostname", "localhost"]
    return argv


def pingpong_argv(transport: str, address: str, seconds: float) -> list[str]:
    """The native pingpong's command line: 64-byte messages, one in flight."""
    argv = [str(PINGPONG), *target_args(transport, address)]
    return [*argv, "--size", "64", "--duration", f"{seconds:g}"]


def client_string(transport: str, address: str) -> str:
    """echokit's client endpoint string for a listener address."""
    if transport == "unix":
        return f"unix:path={address}"
    host, port = address.rsplit(":", 1)
    return f"{transport}:host={host}:port={port}"


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    by %= len(items)
    return [*items[by:], *items[:by]]


# --- a) honest numbers -----------------------------------------------------------------


SERVER_CPU = min(ALL_CPUS)


@contextlib.contextmanager
def split_cpus(server: Server, enabled: bool) -> Iterator[set[int] | None]:
    """
    For a throughput run: the server on one CPU, the client on the others; yield the
    client's CPU set (None when off, or on a 1-CPU machine).

    Unpinned, the scheduler moves client, server and the kernel's loopback work between
    the two CPUs, and a run's rate depends on where they happen to land: single 1 MiB
    runs varied by up to 40%. Split, each has its own CPU in every run.
    """
    others = ALL_CPUS - {SERVER_CPU}
    if not enabled or not others:
        yield None
        return
    try:
        server.set_affinity({SERVER_CPU})
        yield others
    finally:
        if server.alive():
            server.set_affinity(ALL_CPUS)


def split_note(settings: Settings) -> str:
    if settings.pin and ALL_CPUS - {SERVER_CPU}:
        others = ",".join(str(c) for c in sorted(ALL_CPUS - {SERVER_CPU}))
        return (
            f"Throughput runs: the server on CPU {SERVER_CPU}, the client on CPU {others} "
            "(--no-pin: wherever the scheduler puts them)."
        )
    return "Throughput runs: not pinned (--no-pin): the scheduler places client and server."


def pin_note(settings: Settings) -> str:
    if settings.pin:
        return (
            f"Pinned: client and server both on CPU {PIN_CPU}, so a round trip never waits for "
            "an idle CPU to wake up\n(on a VM that alone can add ~70 us; --no-pin measures "
            "unpinned)."
        )
    return (
        "Not pinned (--no-pin): the scheduler places client and server; on a VM a round "
        "trip may include waking an idle CPU."
    )


def honest(settings: Settings, report: Report, workdir: Path) -> None:
    """The native server, measured by pingpong and by echokit bench."""
    seconds = settings.honest_seconds
    say("== a) honest numbers: is echokit bench's client overhead small? ==")
    say(
        f"The native echo_server, measured in turn by the native pingpong client and by "
        f"`echokit bench`\n(64-byte messages, one in flight, {seconds:g} s each, "
        f"{settings.rounds} interleaved round(s), medians). Target: echokit p50 <= "
        f"{HONEST_TARGET}x native p50."
    )
    say(pin_note(settings))
    server = Server(
        "native echo_server",
        [
            str(ECHO_SERVER),
            "--tcp",
            "127.0.0.1:0",
            "--unix",
            str(workdir / "honest.sock"),
            "--udp",
            "127.0.0.1:0",
        ],
        3,
        workdir,
    )
    transports = ("tcp", "unix", "udp")
    raw: dict[str, dict[str, list[dict[str, Any]]]] = {
        t: {"native": [], "echokit": []} for t in transports
    }
    shown: list[str] = []
    with running([server]), pinned([server], settings.pin) as cpus:
        for round_ in range(settings.rounds):
            for transport in transports:
                address = server.addresses[transport]
                native_argv = pingpong_argv(transport, address, seconds)
                bench_argv = [
                    ECHOKIT,
                    "bench",
                    client_string(transport, address),
                    "--json",
                    "--size",
                    "64",
                    "--duration",
                    f"{seconds:g}",
                    "--warmup",
                    "0",
                ]
                if round_ == 0:
                    shown += [command_text(native_argv), command_text(bench_argv)]
                runs = [("native", native_argv), ("echokit", bench_argv)]
                for client, argv in rotated(runs, round_):
                    try:
                        server.check()
                        watch = CPUWatch(server)
                        data, client_cpu = run_json(argv, 4 * seconds + 60, cpus)
                        cpu = watch.stop(client_cpu)
                    except BenchError as e:
                        report.problems.append(f"honest {transport} {client}: {e}")
                        continue
                    if client == "native":
                        sample = {
                            "p50_us": data["p50_us"],
                            "p99_us": data["p99_us"],
                            "count": data["count"],
                            "lost": data["lost"],
                            **cpu,
                        }
                    else:
                        latency = data.get("latency_us") or {}
                        if data.get("error") or "p50" not in latency:
                            report.problems.append(
                                f"honest {transport} echokit bench: {data.get('error')}"
                            )
                            continue
                        sample = {
                            "p50_us": latency["p50"],
                            "p99_us": latency["p99"],
                            "count": data["latency_samples"],
                            "lost": data["lost"],
                            **cpu,
                        }
                    raw[transport][client].append(sample)
    rows = []
    summary = []
    for transport in transports:
        native, echokit = raw[transport]["native"], raw[transport]["echokit"]
        n50 = median([s["p50_us"] for s in native])
        e50 = median([s["p50_us"] for s in echokit])
        n99 = median([s["p99_us"] for s in native])
        e99 = median([s["p99_us"] for s in echokit])
        value = e50 / n50 if (e50 is not None and n50) else None
        verdict = "-" if value is None else ("ok" if value <= HONEST_TARGET else "OVER")
        rows.append(
            [
                transport,
                number(n50, 1),
                number(e50, 1),
                ratio(e50, n50),
                verdict,
                number(n99, 1),
                number(e99, 1),
                number(median([s["count"] for s in native])),
                number(median([s["count"] for s in echokit])),
                percent(median([s["other_cpu"] for s in native + echokit])),
            ]
        )
        summary.append(
            {
                "transport": transport,
                "native_p50_us": n50,
                "echokit_p50_us": e50,
                "ratio": value,
                "native_p99_us": n99,
                "echokit_p99_us": e99,
            }
        )
    say()
    say(
        render(
            [
                "transport",
                "native p50 us",
                "echokit bench p50 us",
                "ratio",
                f"<= {HONEST_TARGET}x",
                "native p99 us",
                "echokit p99 us",
                "native msgs",
                "echokit msgs",
                "other CPU",
            ],
            rows,
        )
    )
    say("\ncommands (first round):")
    for line in shown:
        say(f"  {line}")
    report.sections["honest"] = {"raw": raw, "summary": summary}


# --- b) server comparison --------------------------------------------------------------


def make_servers(workdir: Path, certs: Path, with_uvloop: bool) -> list[Server]:
    """echokit serve, asyncio (and uvloop), native: each on tcp, unix and udp (+TLS)."""
    key, cert = str(certs / "server.key"), str(certs / "server.pem")

    def asyncio_argv(unix_name: str, *extra: str) -> list[str]:
        """The reference asyncio server on every transport (uvloop's with --uvloop)."""
        return [
            PYTHON,
            str(ASYNCIO_SERVER),
            *extra,
            "--tcp",
            "127.0.0.1:0",
            "--unix",
            str(workdir / unix_name),
            "--udp",
            "127.0.0.1:0",
            "--tls",
            "127.0.0.1:0",
            "--cert",
            cert,
            "--key",
            key,
        ]

    servers = [
        Server(
            "echokit serve",
            [
                ECHOKIT,
                "-q",
                "serve",
                "--cert-dir",
                str(certs),
                "tcp:0:interface=127.0.0.1",
                f"unix:{workdir / 'echokit.sock'}",
                "udp:0",
                "ssl:0:interface=127.0.0.1",
            ],
            4,
            workdir,
        ),
        Server("asyncio", asyncio_argv("asyncio.sock"), 4, workdir),
    ]
    if with_uvloop:
        servers.append(
            Server("asyncio+uvloop", asyncio_argv("uvloop.sock", "--uvloop"), 4, workdir)
        )
    servers.append(
        Server(
            "native echo_server",
            [
                str(ECHO_SERVER),
                "--tcp",
                "127.0.0.1:0",
                "--unix",
                str(workdir / "native.sock"),
                "--udp",
                "127.0.0.1:0",
            ],
            3,
            workdir,
        )
    )
    return servers


def make_certs(workdir: Path) -> Path:
    certs = workdir / "certs"
    done = subprocess.run(
        [ECHOKIT, "certs", "--dir", str(certs)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"echokit certs failed: {done.stderr.strip()}")
    return certs


@dataclass
class Load:
    """One throughput measurement of one server."""

    server: str
    messages_per_s: float
    mb_per_s: float
    errors: int
    lost: int
    server_cpu: float
    client_cpu: float
    softirq_cpu: float
    other_cpu: float
    extra: dict[str, Any] = field(default_factory=dict)


def measure_load(server: Server, argv: Sequence[str], timeout: float, split: bool = False) -> Load:
    """
    Run a load client against C{server}, with both sides' CPU use over the run.

    @param split: server on one CPU, client on the others (see L{split_cpus}).
    """
    server.check()
    with split_cpus(server, split) as client_cpus:
        watch = CPUWatch(server)
        data, client_cpu = run_json(argv, timeout, client_cpus)
        cpu = watch.stop(client_cpu)
    keys = ("tls_version", "tls_cipher", "least_per_connection", "most_per_connection")
    return Load(
        server.name,
        float(data["messages_per_s"]),
        float(data["mb_per_s"]),
        int(data["errors"]),
        int(data.get("lost", 0)),
        cpu["server_cpu"],
        cpu["client_cpu"],
        cpu["softirq_cpu"],
        cpu["other_cpu"],
        {k: data[k] for k in keys if k in data},
    )


def load_table(
    groups: Sequence[tuple[str, str]],
    results: dict[tuple[str, str], dict[str, list[Load]]],
    names: Sequence[str],
    lost_column: bool = False,
) -> tuple[str, list[dict[str, Any]]]:
    """Median msg/s, MB/s, ratio to asyncio, CPU use: one row per group and server."""
    rows: list[list[str]] = []
    summary: list[dict[str, Any]] = []
    for group in groups:
        runs = results.get(group, {})
        reference = median([r.messages_per_s for r in runs.get("asyncio", [])])
        for name in names:
            loads = runs.get(name, [])
            rate = median([r.messages_per_s for r in loads])
            rates = [r.messages_per_s for r in loads]
            spread = (max(rates) - min(rates)) / rate * 100 if len(rates) > 1 and rate else None
            row = [
                group[0],
                group[1],
                name,
                number(rate),
                number(median([r.mb_per_s for r in loads]), 1),
                ratio(rate, reference),
                "-" if spread is None else f"{spread:.0f}%",
                percent(median([r.server_cpu for r in loads])),
                percent(median([r.client_cpu for r in loads])),
                percent(median([r.softirq_cpu for r in loads])),
                percent(median([r.other_cpu for r in loads])),
                str(sum(r.errors for r in loads)) if loads else "-",
            ]
            if lost_column:
                row.append(str(sum(r.lost for r in loads)) if loads else "-")
            rows.append(row)
            summary.append(
                {
                    "transport": group[0],
                    "size": group[1],
                    "server": name,
                    "messages_per_s": rate,
                    "mb_per_s": median([r.mb_per_s for r in loads]),
                    "ratio_to_asyncio": rate / reference if rate and reference else None,
                    "runs": [asdict(r) for r in loads],
                }
            )
        rows.append([""] * len(rows[-1]))
    headers = [
        "transport",
        "size",
        "server",
        "msg/s",
        "MB/s",
        "vs asyncio",
        "spread",
        "server CPU",
        "client CPU",
        "softirq",
        "other CPU",
        "errors",
    ]
    if lost_column:
        headers.append("lost")
    return render(headers, rows[:-1], left=3), summary


def warm_up(servers: Sequence[Server], report: Report) -> None:
    """
    A short unmeasured load on every server and transport before the rounds start.

    Besides the usual (first buffers, first code paths), this matters for asyncio: it
    reads with 256 KiB buffers, which glibc serves with mmap/mremap/munmap on every read
    until a freed 256 KiB buffer (the first connection's end) raises its mmap threshold;
    until then asyncio runs at about a third of its speed.
    """
    for server in servers:
        for transport in ("tcp", "unix", "udp"):
            if transport not in server.addresses:
                continue
            argv = loadgen_argv(transport, server.addresses[transport], 4 * KIB, 4, 0.2, 0)
            try:
                run_json(argv, 30)
            except BenchError as e:
                report.problems.append(f"warm-up {server.name} {transport}: {e}")


def servers_section(settings: Settings, report: Report, workdir: Path) -> None:
    say("== b) servers: echokit serve against asyncio's own echo server ==")
    with_uvloop = uvloop_available()
    certs = make_certs(workdir)
    servers = make_servers(workdir, certs, with_uvloop)
    names = [s.name for s in servers]
    say(
        f"servers: {', '.join(names)}"
        + ("" if with_uvloop else "  (asyncio+uvloop skipped: uvloop is not importable)")
    )
    for server in servers:
        say(f"  {server.name}: {command_text(server.argv)}")
    say("every server first gets 0.2 s of unmeasured load per transport (see warm_up()).")
    seconds, warmup, conns = settings.load_seconds, settings.load_warmup, settings.connections
    timeout = seconds + warmup + 60
    stream: dict[tuple[str, str], dict[str, list[Load]]] = {}
    udp: dict[tuple[str, str], dict[str, list[Load]]] = {}
    tls: dict[tuple[str, str], dict[str, list[Load]]] = {}
    latency: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}

    def loadgen(transport: str, address: str, size: int) -> list[str]:
        return loadgen_argv(transport, address, size, conns, seconds, warmup, certs / "ca.pem")

    retries = {"runs": 0, "seconds": 0.0}

    def record(
        table: dict[tuple[str, str], dict[str, list[Load]]],
        group: tuple[str, str],
        server: Server,
        argv: list[str],
    ) -> None:
        """Measure; repeat (at most twice, within the budget) a run disturbed by others."""
        best: Load | None = None
        for attempt in range(3):
            t0 = time.monotonic()
            try:
                load = measure_load(server, argv, timeout, settings.pin)
            except BenchError as e:
                report.problems.append(f"servers {group[0]} {group[1]} {server.name}: {e}")
                break
            if attempt:
                retries["runs"] += 1
                retries["seconds"] += time.monotonic() - t0
            if best is None or load.other_cpu < best.other_cpu:
                best = load
            if (
                load.other_cpu <= settings.disturbed_cpu
                or retries["seconds"] + seconds + warmup > settings.retry_seconds
            ):
                break
        if best is not None:
            table.setdefault(group, {}).setdefault(server.name, []).append(best)

    started = time.monotonic()
    with running(servers):
        warm_up(servers, report)
        for round_ in range(settings.rounds):
            order = rotated(servers, round_)
            say(f"  round {round_ + 1}/{settings.rounds}: stream throughput ...")
            for transport in ("tcp", "unix"):
                for size in STREAM_SIZES:
                    for server in order:
                        argv = loadgen(transport, server.addresses[transport], size)
                        record(stream, (transport, size_name(size)), server, argv)
            say(f"  round {round_ + 1}/{settings.rounds}: udp, tls, latency ...")
            for server in order:
                argv = [*loadgen("udp", server.addresses["udp"], 1 * KIB), "--timeout", "200"]
                record(udp, ("udp", size_name(1 * KIB)), server, argv)
            for size in TLS_SIZES:
                for server in order:
                    if "tls" in server.addresses:
                        argv = loadgen("tls", server.addresses["tls"], size)
                        record(tls, ("tls", size_name(size)), server, argv)
            for transport in ("tcp", "unix"):
                for server in order:
                    address = server.addresses[transport]
                    argv = pingpong_argv(transport, address, settings.latency_seconds)
                    try:
                        server.check()
                        with pinned([server], settings.pin) as cpus:
                            watch = CPUWatch(server)
                            data, client_cpu = run_json(argv, settings.latency_seconds + 60, cpus)
                            data.update(watch.stop(client_cpu))
                    except BenchError as e:
                        report.problems.append(f"servers latency {transport} {server.name}: {e}")
                        continue
                    group = (transport, "64 B")
                    latency.setdefault(group, {}).setdefault(server.name, []).append(data)
        example = {
            "stream": command_text(loadgen("tcp", "127.0.0.1:PORT", 1 * KIB)),
            "udp": command_text([*loadgen("udp", "127.0.0.1:PORT", 1 * KIB), "--timeout", "200"]),
            "tls": command_text(loadgen("tls", "127.0.0.1:PORT", 1 * KIB)),
            "latency": command_text(
                pingpong_argv("tcp", "127.0.0.1:PORT", settings.latency_seconds)
            ),
        }
    say(f"  ({time.monotonic() - started:.0f} s)")
    if retries["runs"]:
        say(
            f"  {retries['runs']} throughput run(s) repeated because other processes took more "
            f"than {settings.disturbed_cpu:g}% CPU\n  (the least disturbed run is kept; "
            f"{retries['seconds']:.0f} s of a {settings.retry_seconds:g} s budget)"
        )

    groups = [(t, size_name(s)) for t in ("tcp", "unix") for s in STREAM_SIZES]
    text, stream_summary = load_table(groups, stream, names)
    say(
        f"\nStream throughput: native loadgen, {conns} connections, one message in flight each, "
        f"{seconds:g} s after {warmup:g} s warm-up;\nmedian of {settings.rounds} round(s). "
        "MB/s counts echoed bytes, one direction.\nspread: (max - min) / median over "
        "the rounds. CPU: % of one core over the run: the server, the client, the kernel's\n"
        "softirqs (loopback TCP/UDP processing, not charged to any process) and every other "
        "process\n(other CPU: background load that skews the numbers; high: run again)."
    )
    say(split_note(settings))
    say(f"client: {example['stream']}\n")
    say(text)

    text, udp_summary = load_table([("udp", size_name(1 * KIB))], udp, names, True)
    say(
        f"\nUDP: native loadgen, {conns} connected sockets, one datagram in flight each "
        "(lost after 200 ms)."
    )
    say(f"client: {example['udp']}\n")
    say(text)

    tls_names = [s.name for s in servers if "tls" in s.addresses]
    text, tls_summary = load_table(
        [("tls", size_name(s)) for s in TLS_SIZES], tls, tls_names, False
    )
    versions = sorted(
        {
            f"{load.server}: {load.extra.get('tls_version')} {load.extra.get('tls_cipher')}"
            for runs in tls.values()
            for loads in runs.values()
            for load in loads
        }
    )
    say(
        f"\nTLS: native loadgen --tls (OpenSSL, verifies the server), {conns} connections, one "
        "message in flight each; same certificate (echokit certs) for every server."
    )
    say(f"client: {example['tls']}")
    for line in versions:
        say(f"  negotiated, {line}")
    say()
    say(text)

    rows = []
    latency_summary = []
    for group in [("tcp", "64 B"), ("unix", "64 B")]:
        runs = latency.get(group, {})
        for name in names:
            samples = runs.get(name, [])
            p50 = median([s["p50_us"] for s in samples])
            p99 = median([s["p99_us"] for s in samples])
            rows.append(
                [
                    group[0],
                    name,
                    number(p50, 1),
                    number(p99, 1),
                    number(median([s["p99.9_us"] for s in samples]), 1),
                    number(median([s["count"] for s in samples])),
                    percent(median([s["other_cpu"] for s in samples])),
                ]
            )
            latency_summary.append(
                {"transport": group[0], "server": name, "p50_us": p50, "p99_us": p99}
            )
        rows.append([""] * 7)
    say(
        f"\nLatency: native pingpong, 64-byte messages, one in flight, "
        f"{settings.latency_seconds:g} s; median of {settings.rounds} round(s)."
    )
    say(pin_note(settings))
    say(f"client: {example['latency']}\n")
    say(
        render(
            ["transport", "server", "p50 us", "p99 us", "p99.9 us", "round trips", "other CPU"],
            rows[:-1],
            left=2,
        )
    )

    say(
        "\nSummary: echokit serve msg/s as a multiple of asyncio's (>= 1.00x: at least as "
        "fast), from the medians above,\nand round by round (each round measures every "
        "server once, so a slow drift of the machine mostly cancels out)"
    )
    reference = {
        (e["transport"], e["size"]): e["runs"]
        for e in stream_summary + udp_summary + tls_summary
        if e["server"] == "asyncio"
    }
    verdicts = []
    for entry in stream_summary + udp_summary + tls_summary:
        if entry["server"] != "echokit serve":
            continue
        value = entry["ratio_to_asyncio"]
        if value is None:
            verdict = "-"
        elif value >= 1.0:
            verdict = "yes"
        elif value >= 0.95:
            verdict = "within 5% (noise?)"
        else:
            verdict = "NO"
        ours, theirs = entry["runs"], reference.get((entry["transport"], entry["size"]), [])
        paired = sorted(
            a["messages_per_s"] / b["messages_per_s"]
            for a, b in zip(ours, theirs, strict=False)
            if b["messages_per_s"]
        )
        rounds = (
            f"{statistics.median(paired):.2f}x [{paired[0]:.2f}-{paired[-1]:.2f}]"
            if paired and len(ours) == len(theirs)
            else "-"
        )
        entry["round_ratios"] = paired if len(ours) == len(theirs) else None
        verdicts.append(
            [
                entry["transport"],
                entry["size"],
                "-" if value is None else f"{value:.2f}x",
                verdict,
                rounds,
            ]
        )
    say(
        render(
            ["transport", "size", "echokit / asyncio", "as fast?", "per round: median [min-max]"],
            verdicts,
            left=2,
        )
    )
    report.sections["servers"] = {
        "servers": {s.name: command_text(s.argv) for s in servers},
        "uvloop": with_uvloop,
        "stream": stream_summary,
        "udp": udp_summary,
        "tls": tls_summary,
        "latency": latency_summary,
        "latency_runs": {f"{k[0]} {k[1]}": v for k, v in latency.items()},
        "commands": example,
        "repeated_runs": retries,
    }


# --- c) workers ------------------------------------------------------------------------


def compare_variants(
    settings: Settings,
    report: Report,
    key: str,
    servers: Sequence[Server],
    certs: Path,
    cases: Sequence[tuple[str, int]],
    connections: int,
    split: bool,
    note: str,
    ratio_key: str,
) -> None:
    """
    Drive each of C{servers} (variants of echokit serve, with the certificates in
    C{certs}) with the same loadgen for each of C{cases}, in interleaved rounds; print
    msg/s, the ratio to the first server, and everyone's CPU; keep the numbers in
    C{report.sections[key]}, the ratio under C{ratio_key}.
    """
    reference = servers[0].name
    results: dict[tuple[str, str], dict[str, list[Load]]] = {}
    timeout = settings.load_seconds + settings.load_warmup + 60

    def argv(server: Server, transport: str, size: int) -> list[str]:
        address = server.addresses[transport]
        seconds, warmup = settings.load_seconds, settings.load_warmup
        return loadgen_argv(
            transport, address, size, connections, seconds, warmup, certs / "ca.pem"
        )

    with running(servers):
        for round_ in range(settings.rounds):
            for transport, size in cases:
                for server in rotated(servers, round_):
                    try:
                        load = measure_load(server, argv(server, transport, size), timeout, split)
                    except BenchError as e:
                        report.problems.append(f"{key} {transport} {server.name}: {e}")
                        continue
                    group = (transport, size_name(size))
                    results.setdefault(group, {}).setdefault(server.name, []).append(load)
    rows, summary = [], []
    for transport, size in cases:
        group = (transport, size_name(size))
        runs = results.get(group, {})
        one = median([r.messages_per_s for r in runs.get(reference, [])])
        for server in servers:
            loads = runs.get(server.name, [])
            rate = median([r.messages_per_s for r in loads])
            rows.append(
                [
                    *group,
                    server.name,
                    number(rate),
                    ratio(rate, one),
                    percent(median([r.server_cpu for r in loads])),
                    percent(median([r.client_cpu for r in loads])),
                    percent(median([r.softirq_cpu for r in loads])),
                    str(sum(r.errors for r in loads)) if loads else "-",
                ]
            )
            summary.append(
                {
                    "transport": group[0],
                    "size": group[1],
                    "server": server.name,
                    "messages_per_s": rate,
                    ratio_key: rate / one if rate and one else None,
                    "runs": [asdict(r) for r in loads],
                }
            )
        rows.append([""] * 9)
    say(
        f"\nnative loadgen, {connections} connections, one message in flight each, "
        f"{settings.load_seconds:g} s; median of {settings.rounds} round(s). server CPU counts "
        f"every process\n(% of one core). {note}"
    )
    width = max(len(server.name) for server in servers) + 1
    for server in servers:
        say(f"  {server.name + ':':<{width}} {command_text(server.argv)}")
    say()
    say(
        render(
            [
                "transport",
                "size",
                "server",
                "msg/s",
                f"vs {reference}",
                "server CPU",
                "client CPU",
                "softirq",
                "errors",
            ],
            rows[:-1],
            left=3,
        )
    )
    report.sections[key] = {"results": summary}


def echokit_server(
    workdir: Path, certs: Path, name: str, flags: Sequence[str], listeners: Sequence[str]
) -> Server:
    """C{echokit serve} with C{flags}, on C{listeners}, with the certificates in C{certs}."""
    argv = [ECHOKIT, "-q", "serve", *flags, "--cert-dir", str(certs), *listeners]
    return Server(name, argv, len(listeners), workdir)


def workers_section(settings: Settings, report: Report, workdir: Path) -> None:
    """echokit serve with one process and with --workers 2: tcp and TLS, the same loadgen."""
    say("== c) workers: echokit serve --workers 2 against one process ==")
    certs = make_certs(workdir)
    listeners = ["tcp:0:interface=127.0.0.1", "ssl:0:interface=127.0.0.1"]
    servers = [
        echokit_server(workdir, certs, "1 process", [], listeners),
        echokit_server(workdir, certs, "2 processes", ["--workers", "2"], listeners),
    ]
    note = (
        f"Not pinned. On this machine's {os.cpu_count()} CPUs the client needs a core too, so "
        "a second worker\ncan only take what the client leaves: compare the CPU columns before "
        "reading the ratio as scaling."
    )
    cases = [("tcp", 1 * KIB), ("tcp", 64 * KIB), ("tls", 1 * KIB)]
    compare_variants(
        settings,
        report,
        "workers",
        servers,
        certs,
        cases,
        settings.connections * 2,
        False,
        note,
        "ratio_to_one_process",
    )


def reactors_section(settings: Settings, report: Report, workdir: Path) -> None:
    """echokit serve on each --reactor it offers (uvloop if installed): the same loadgen."""
    say("== d) reactors: echokit serve --reactor lean|epoll|asyncio|uvloop ==")
    names = ["lean", "epoll", "asyncio"] + (["uvloop"] if uvloop_available() else [])
    certs = make_certs(workdir)
    servers = [
        echokit_server(
            workdir,
            certs,
            f"--reactor {name}",
            ["--reactor", name],
            [
                "tcp:0:interface=127.0.0.1",
                f"unix:{workdir / f'reactor-{name}.sock'}",
                "ssl:0:interface=127.0.0.1",
            ],
        )
        for name in names
    ]
    missing = "" if "uvloop" in names else " uvloop is not installed: no uvloop row."
    note = f"{split_note(settings)} The default is the first row (lean).{missing}"
    cases = [("tcp", 1 * KIB), ("unix", 1 * KIB), ("tls", 1 * KIB)]
    compare_variants(
        settings,
        report,
        "reactors",
        servers,
        certs,
        cases,
        settings.connections,
        settings.pin,
        note,
        "ratio_to_lean",
    )


# --- e) extras -------------------------------------------------------------------------


def raise_open_files_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def settled_fds(server: Server, timeout: float = 5.0) -> int:
    """The server's open descriptors once the count has stopped changing for 0.5 s."""
    deadline = time.monotonic() + timeout
    last, since = server.open_fds(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = server.open_fds()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= 0.5:
            break
    return last


def idle_rss(server: Server, connections: int) -> dict[str, Any]:
    """Server VmRSS before and after C{connections} idle TCP connections."""
    host, port = server.addresses["tcp"].rsplit(":", 1)
    address = (host, int(port))
    # Warm up: let the server take its first connections (lazy imports, first buffers).
    for _ in range(20):
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"warm-up")
            sock.recv(64)
    base_fds = settled_fds(server)
    before = server.rss_kib()
    sockets: list[socket.socket] = []
    try:
        batch = 250
        while len(sockets) < connections:
            for _ in range(min(batch, connections - len(sockets))):
                sockets.append(socket.create_connection(address, timeout=10))
            expected = base_fds + len(sockets)
            if not wait_for(lambda: server.open_fds() >= expected, 20):  # noqa: B023 (called at once)
                raise BenchError(
                    f"{server.name} accepted {server.open_fds() - base_fds} of "
                    f"{len(sockets)} connections within 20 s"
                )
        time.sleep(1.0)
        server.check()
        # The last connections may still be settling: take the larger of two readings.
        first = server.rss_kib()
        time.sleep(0.5)
        after = max(first, server.rss_kib())
        # Are they still open (not closed over a limit)? One echo on the last one.
        sockets[-1].sendall(b"still there?")
        if sockets[-1].recv(64) != b"still there?":
            raise BenchError(f"{server.name}: the last idle connection did not echo")
    finally:
        for sock in sockets:
            sock.close()
    return {
        "server": server.name,
        "connections": connections,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": (after - before) / connections,
    }


def startup_times(runs: int) -> dict[str, Any]:
    """Wall-clock time of `echokit --help` and of a bare interpreter, median of runs."""

    def timed(argv: Sequence[str]) -> list[float]:
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(
                list(argv),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=60,
                check=False,
            )
            times.append(time.perf_counter() - t0)
        return times

    echokit = timed([ECHOKIT, "--help"])
    bare = timed([PYTHON, "-c", "pass"])
    # What `echokit --help` spends its imports on: echokit.cli's direct imports.
    done = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", "import echokit.cli"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    children: list[tuple[str, int]] = []
    pending: list[tuple[str, int]] = []
    total = 0
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = line.split("|")
        if len(parts) != 3 or not parts[1].strip().isdigit():
            continue
        cumulative, name = int(parts[1]), parts[2]
        depth = (len(name) - len(name.lstrip(" "))) // 2
        if depth == 1:
            pending.append((name.strip(), cumulative))
        elif depth == 0:
            if name.strip() in ("echokit.cli", "echokit"):
                children += pending
                total += cumulative
            pending = []
    children.sort(key=lambda item: -item[1])
    return {
        "echokit_help_s": echokit,
        "python_pass_s": bare,
        "echokit_help_median_ms": statistics.median(echokit) * 1000,
        "python_pass_median_ms": statistics.median(bare) * 1000,
        "import_echokit_cli_ms": total / 1000,
        "top_imports_ms": [(name, us / 1000) for name, us in children[:6]],
    }


def extras(settings: Settings, report: Report, workdir: Path) -> None:
    say("== e) extras: memory per idle connection, start-up time ==")
    limit = raise_open_files_limit()
    wanted = settings.idle_connections
    connections = min(wanted, limit - 200)
    if connections < wanted:
        say(f"(open-files limit {limit}: {connections} connections instead of {wanted})")
    rows = []
    results = []
    for name, argv in (
        ("echokit serve", [ECHOKIT, "-q", "serve", "tcp:0:interface=127.0.0.1"]),
        ("asyncio", [PYTHON, str(ASYNCIO_SERVER), "--tcp", "127.0.0.1:0"]),
        ("native echo_server", [str(ECHO_SERVER), "--tcp", "127.0.0.1:0"]),
    ):
        server = Server(name, argv, 1, workdir)
        try:
            with running([server]):
                result = idle_rss(server, connections)
        except (BenchError, OSError) as e:
            report.problems.append(f"extras idle connections {name}: {e}")
            continue
        results.append(result)
        rows.append(
            [
                name,
                number(result["connections"]),
                f"{result['rss_before_kib'] / 1024:.1f}",
                f"{result['rss_after_kib'] / 1024:.1f}",
                f"{result['kib_per_connection']:.2f}",
            ]
        )
    say(
        "\nServer memory per idle TCP connection: VmRSS (from /proc) before and after opening "
        "the connections,\ndivided by their number (each server raises its own open-files "
        "limit; echokit serve with default flags)."
    )
    say(
        "\n"
        + render(
            ["server", "idle connections", "RSS before MiB", "RSS after MiB", "KiB/connection"],
            rows,
        )
    )

    times = startup_times(settings.startup_runs)
    say(f"\nStart-up: wall clock, median of {settings.startup_runs} runs (min-max in brackets).\n")
    rows = [
        [
            "echokit --help",
            f"{times['echokit_help_median_ms']:.0f}",
            f"[{min(times['echokit_help_s']) * 1000:.0f}-{max(times['echokit_help_s']) * 1000:.0f}]",
        ],
        [
            "python -c pass",
            f"{times['python_pass_median_ms']:.0f}",
            f"[{min(times['python_pass_s']) * 1000:.0f}-{max(times['python_pass_s']) * 1000:.0f}]",
        ],
    ]
    say(render(["command", "median ms", "min-max ms"], rows))
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        say(
            "(PYTHONDONTWRITEBYTECODE is set here: a module whose .pyc is missing or stale is "
            "compiled again at every start)"
        )
    say(
        f"\nimport echokit.cli: {times['import_echokit_cli_ms']:.0f} ms "
        "(python -X importtime); its heaviest direct imports:"
    )
    for name, ms in times["top_imports_ms"]:
        say(f"  {ms:6.1f} ms  {name}")
    report.sections["extras"] = {"idle_connections": results, "startup": times}


# --- main ------------------------------------------------------------------------------


SECTIONS = {
    "honest": honest,
    "servers": servers_section,
    "workers": workers_section,
    "reactors": reactors_section,
    "extras": extras,
}


def check_built() -> None:
    missing = [p for p in (ECHO_SERVER, PINGPONG, LOADGEN) if not p.exists()]
    if missing:
        names = ", ".join(str(p.relative_to(HERE.parent)) for p in missing)
        raise SystemExit(f"run.py: not built: {names} (run `make bench`, which compiles them)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0].strip(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--quick", action="store_true", help="short runs, 1 round: a smoke test (~1 minute)"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SECTIONS),
        help="run only this section (repeatable)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 5, quick 1)")
    parser.add_argument(
        "--seconds", type=float, help="seconds per throughput run (default 1.5, quick 0.5)"
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin: latency runs put client and server on one CPU, throughput runs "
        "the server on one CPU and the client on the others",
    )
    parser.add_argument("--json", type=Path, metavar="FILE", help="save the raw numbers here")
    args = parser.parse_args(argv)
    check_built()
    settings = Settings.quick() if args.quick else Settings()
    if args.rounds is not None:
        settings.rounds = max(1, min(args.rounds, 20))
    if args.seconds is not None:
        settings.load_seconds = max(0.1, min(args.seconds, 60.0))
    settings.pin = not args.no_pin
    chosen = [name for name in SECTIONS if not args.only or name in args.only]

    # SIGTERM ends the run like Ctrl-C: the finally blocks stop every server.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    env = environment()
    report = Report(env, asdict(settings))
    say("echokit benchmarks")
    say(f"command: {env['command']}")
    say(f"date:    {env['date']}")
    say(
        f"machine: {env['nproc']} CPUs ({env['cpu']}), Linux {env['kernel']}; "
        f"Python {env['python']}, Twisted {env['twisted']}, echokit {env['echokit']}, "
        f"uvloop {env['uvloop'] or 'not installed'}"
    )
    say(
        f"caveat:  client and server share these {env['nproc']} CPUs: "
        "the client competes with the server for cores."
    )
    say()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="echokit-bench-") as tmp:
        for name in chosen:
            t0 = time.monotonic()
            try:
                SECTIONS[name](settings, report, Path(tmp))
            except BenchError as e:
                report.problems.append(f"{name}: {e}")
                say(f"{name}: failed: {e}")
            say(f"\n[{name}: {time.monotonic() - t0:.0f} s]\n")
    say(f"total: {time.monotonic() - started:.0f} s")
    if report.problems:
        say("\nproblems:")
        for problem in report.problems:
            say(f"  - {problem}")
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=1, default=str) + "\n")
        say(f"\nraw numbers written to {args.json}")
    return 1 if report.problems else 0


if __name__ == "__main__":
    sys.exit(main())
