"""
What every benchmark section shares: the programs, the settings, the report, the output,
and the measuring.

    Settings, Report, BenchError   how long and how often; everything measured (--json);
                                   one failed measurement (the run goes on)
    say, render, number, ratio...  plain text output: tables, numbers, command lines
    environment                    the machine the run is on
    Server, running                an echo server process: started, its listeners read
                                   from its stdout, its CPU and memory, stopped
    CPUWatch                       CPU used during a run: server, client, softirqs, others
    pinned, split_cpus             CPU placement of client and server (see --no-pin)
    run_json, loadgen_argv,        the native clients (benchmarks/native/) and how to
    pingpong_argv, measure_load    run them; one throughput measurement (L{Load})
    make_certs, echokit_server,    echokit's servers and certificates; interleaved rounds
    compare_variants               of variants of echokit serve under the same loadgen

A section (benchmarks/sections/) imports what it needs from here; nothing here knows the
sections.
"""

from __future__ import annotations

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
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
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

    def load_flags(self) -> list[str]:
        """An echokit bench or compare run's length: C{--duration} and C{--warmup}."""
        return ["--duration", f"{self.load_seconds:g}", "--warmup", f"{self.load_warmup:g}"]

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

    def rss_kib(self, field: str = "VmRSS") -> int:
        """The server's resident memory now (or C{field} of its status: VmHWM, the peak)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise BenchError(f"{self.name}: no {field}")

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


def json_rows(
    argv: Sequence[str], timeout: float, env: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """
    Run an echokit command that prints JSON lines (C{--json}); return them all.

    @raise BenchError: with the command and its last line of stderr, if it timed out,
        failed or printed no JSON line.
    """
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout:g} s: {command_text(argv)}") from None
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not rows:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise BenchError(f"{command_text(argv)}: {why}")
    return rows


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


# --- CPU placement ---------------------------------------------------------------------


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


# --- throughput runs ------------------------------------------------------------------


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


# --- variants of echokit serve under the same loadgen ---------------------------------


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


def asyncio_argv(workdir: Path, certs: Path, unix_name: str, *extra: str) -> list[str]:
    """
    The reference asyncio server (C{servers/asyncio_echo.py}) on tcp, unix, udp and TLS,
    with echokit's server certificate from C{certs}; C{extra} is e.g. C{--uvloop}.
    """
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
        str(certs / "server.pem"),
        "--key",
        str(certs / "server.key"),
    ]


def echokit_server(
    workdir: Path, certs: Path, name: str, flags: Sequence[str], listeners: Sequence[str]
) -> Server:
    """C{echokit serve} with C{flags}, on C{listeners}, with the certificates in C{certs}."""
    argv = [ECHOKIT, "-q", "serve", *flags, "--cert-dir", str(certs), *listeners]
    return Server(name, argv, len(listeners), workdir)
