"""
Per-message cost in counts, not seconds: server instructions (callgrind) and syscalls (strace).

Wall-clock throughput depends on what else the machine runs; the work a server does
per message does not. For echokit serve, asyncio+uvloop and asyncio, at 1 KiB over
unix, tcp, udp and TLS (the native loadgen, one connection, one message in flight):

  - instructions per message: the server runs under C{valgrind --tool=callgrind} with
    counting off (C{--instr-atstart=no}); C{callgrind_control -i on} just before the
    load, C{-i off} after it, C{-d} dumps the count. Everything the server's process
    executes while the load runs (Python, the C libraries, not the kernel); a 1 s and
    a 4 s load, and the difference in instructions over the difference in messages,
    so that connecting (and the TLS handshake) cancels out.
  - system calls per message: C{strace -c -f -p PID} attached for the load alone.

One connection, so that every message costs one wake-up, one read and one write
whatever else the machine runs: with 10 connections the messages handled per wake-up
depend on how fast the client runs beside the server (under load, unix 1 KiB varied
from 15k to 20k instructions per message), with one they do not. Both tools slow the
server down (callgrind about 50x), which no longer changes the counts.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from harness import (
    KIB,
    PYTHON,
    BenchError,
    Report,
    Server,
    Settings,
    asyncio_argv,
    command_text,
    loadgen_argv,
    make_certs,
    render,
    run_json,
    say,
    uvloop_available,
)

TRANSPORTS = ("unix", "tcp", "udp", "tls")
#: Seconds of the short and the long load under callgrind (a Python server echoes
#: 1-4k msg/s there, 100-400 over TLS).
SHORT, LONG = 1.0, 4.0


def servers(workdir: Path, certs: Path, wrapper: list[str]) -> list[Server]:
    """echokit serve and the asyncio reference (on uvloop too) on every transport."""

    found = [
        Server(
            "echokit serve",
            [
                *wrapper,
                PYTHON,
                "-m",
                "echokit",
                "-q",
                "serve",
                "--cert-dir",
                str(certs),
                "tcp:0:interface=127.0.0.1",
                f"unix:{workdir / 'costs-echokit.sock'}",
                "udp:0",
                "ssl:0:interface=127.0.0.1",
            ],
            4,
            workdir,
        )
    ]
    if uvloop_available():
        found.append(
            Server(
                "asyncio+uvloop",
                [*wrapper, *asyncio_argv(workdir, certs, "costs-uvloop.sock", "--uvloop")],
                4,
                workdir,
            )
        )
    found.append(
        Server(
            "asyncio", [*wrapper, *asyncio_argv(workdir, certs, "costs-asyncio.sock")], 4, workdir
        )
    )
    return found


def load(server: Server, transport: str, certs: Path, seconds: float) -> int:
    """Run the loadgen for C{seconds}, no warm-up; return the messages echoed."""
    argv = loadgen_argv(
        transport, server.addresses[transport], 1 * KIB, 1, seconds, 0, certs / "ca.pem"
    )
    if transport == "udp":
        argv += ["--timeout", "2000"]
    data, _ = run_json(argv, seconds + 120)
    return int(data["messages"])


def control(*args: str) -> None:
    done = subprocess.run(
        ["callgrind_control", *args], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode != 0:
        raise BenchError(f"callgrind_control {' '.join(args)}: {done.stderr.strip()}")


#: The functions whose calls section costs counts per message: Python frames (every
#: Python function call ends in _PyFrame_Clear in CPython 3.11), allocations through
#: Python's allocator, and through the C library's (which OpenSSL and large buffers use).
COUNTED_CALLS = {"_PyFrame_Clear": "frames", "PyObject_Malloc": "pymalloc", "malloc": "malloc"}
COUNTED_NAMES = tuple(COUNTED_CALLS.values())


def calls_in(dump: str) -> dict[str, int]:
    """Calls to each of L{COUNTED_CALLS} recorded in a callgrind dump (its cfn=/calls= lines)."""
    names: dict[str, str] = {}
    found = dict.fromkeys(COUNTED_CALLS.values(), 0)
    callee = None
    for line in dump.splitlines():
        if line.startswith(("fn=", "cfn=")):
            match = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
            if match:
                if match.group(2):
                    names[match.group(1)] = match.group(2)
                if line.startswith("cfn="):
                    name = names.get(match.group(1), "").split("'")[0].split("@")[0]
                    callee = COUNTED_CALLS.get(name)
        elif line.startswith("calls=") and callee is not None:
            found[callee] += int(line[6:].split()[0])
            callee = None
    return found


def counted_run(
    server: Server, transport: str, certs: Path, out: Path, seconds: float
) -> tuple[int, int, dict[str, int]]:
    """(messages echoed, instructions executed, L{COUNTED_CALLS}) over one load."""
    before = set(out.parent.glob(out.name + "*"))
    control("-i", "on", str(server.pid))
    try:
        messages = load(server, transport, certs, seconds)
    finally:
        control("-i", "off", str(server.pid))
    control("-d", str(server.pid))
    total = 0
    calls = dict.fromkeys(COUNTED_CALLS.values(), 0)
    for path in set(out.parent.glob(out.name + "*")) - before:
        dump = path.read_text()
        found = re.search(r"^totals: (\d+)", dump, re.MULTILINE)
        total += int(found.group(1)) if found else 0
        for name, count in calls_in(dump).items():
            calls[name] += count
    return messages, total, calls


def instructions(server: Server, transport: str, certs: Path, out: Path) -> dict[str, Any]:
    """
    Instructions the server executes per echoed message (callgrind), and its calls to
    L{COUNTED_CALLS}: the difference between a long and a short load, over the
    difference in messages, so that what each load costs once (connecting, the TLS
    handshake) cancels out.
    """
    load(server, transport, certs, 0.5)  # warm-up, not counted (first buffers, code paths)
    short = counted_run(server, transport, certs, out, SHORT)
    long = counted_run(server, transport, certs, out, LONG)
    messages, total = long[0] - short[0], long[1] - short[1]
    if messages <= 0 or total <= 0:
        raise BenchError(f"{server.name} {transport}: no messages or no count")
    per_call = {name: (long[2][name] - short[2][name]) / messages for name in long[2]}
    return {
        "short": short[:2],
        "long": long[:2],
        "per_message": total / messages,
        "calls_per_message": per_call,
    }


def syscalls(server: Server, transport: str, certs: Path, workdir: Path) -> dict[str, Any]:
    """System calls per echoed message, by name (strace -c attached for the load only)."""
    out = workdir / f"strace-{server.name.replace(' ', '_')}-{transport}.txt"
    load(server, transport, certs, 0.3)  # warm-up, not counted (see servers.warm_up)
    tracer = subprocess.Popen(
        ["strace", "-c", "-f", "-o", str(out), "-p", str(server.pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)  # attached to every thread before the load starts
        messages = load(server, transport, certs, 1.0)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(30)
    calls: dict[str, int] = {}
    for line in out.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
            calls[parts[-1]] = int(parts[3])
    if not messages:
        raise BenchError(f"{server.name} {transport}: no messages under strace")
    return {
        "messages": messages,
        "per_message": sum(calls.values()) / messages,
        "by_call": {k: v / messages for k, v in sorted(calls.items(), key=lambda kv: -kv[1])},
    }


def run(settings: Settings, report: Report, workdir: Path) -> None:
    say("== costs: instructions and system calls per message (counts, not seconds) ==")
    for tool in ("valgrind", "callgrind_control", "strace"):
        if shutil.which(tool) is None:
            raise BenchError(f"{tool} is not installed (Debian: apt-get install valgrind strace)")
    certs = make_certs(workdir)
    results: dict[str, dict[str, dict[str, Any]]] = {}
    callgrind_out = workdir / "callgrind"
    callgrind_out.mkdir(exist_ok=True)
    wrapper = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    for plain in servers(workdir, certs, []):
        say(f"  {plain.name}: {command_text(plain.argv)}")
    started = time.monotonic()
    for index, server in enumerate(servers(workdir, certs, [])):
        out = callgrind_out / f"cg{index}.out"
        counted = Server(
            server.name, [*wrapper, f"--callgrind-out-file={out}.%p", *server.argv], 4, workdir
        )
        traced = server
        row = results.setdefault(server.name, {})
        try:
            counted.start(timeout=180)
            for transport in TRANSPORTS:
                try:
                    row.setdefault(transport, {})["instructions"] = instructions(
                        counted, transport, certs, out
                    )
                except BenchError as e:
                    report.problems.append(f"costs callgrind {server.name} {transport}: {e}")
        except BenchError as e:
            report.problems.append(f"costs callgrind {server.name}: {e}")
        finally:
            counted.stop()
        try:
            traced.start()
            for transport in TRANSPORTS:
                try:
                    row.setdefault(transport, {})["syscalls"] = syscalls(
                        traced, transport, certs, workdir
                    )
                except BenchError as e:
                    report.problems.append(f"costs strace {server.name} {transport}: {e}")
        except BenchError as e:
            report.problems.append(f"costs strace {server.name}: {e}")
        finally:
            traced.stop()
    say(f"  ({time.monotonic() - started:.0f} s)")
    example = command_text(loadgen_argv("unix", "PATH", 1 * KIB, 1, LONG, 0))
    say(
        f"\nPer message at 1 KiB, one connection (client: {example}; --tls with --ca).\n"
        "instr: server instructions per message under callgrind (user space: Python, libc, "
        f"OpenSSL; {LONG:g} s load minus {SHORT:g} s load); vs uvloop: as a multiple of "
        "asyncio+uvloop's (lower is cheaper);\nframes: Python function calls; pymalloc, "
        "malloc: allocations by Python's allocator and by the C library's;\n"
        "syscalls: per message under strace -c, the commonest three named.\n"
    )
    rows = []
    for transport in TRANSPORTS:
        reference = (
            results.get("asyncio+uvloop", {}).get(transport, {}).get("instructions", {})
        ).get("per_message")
        for name, row in results.items():
            cell = row.get(transport, {})
            instr = cell.get("instructions", {}).get("per_message")
            calls = cell.get("syscalls", {})
            top = ", ".join(f"{k} {v:.2f}" for k, v in list(calls.get("by_call", {}).items())[:3])
            per_call = cell.get("instructions", {}).get("calls_per_message", {})
            rows.append(
                [
                    transport,
                    name,
                    "-" if instr is None else f"{instr:,.0f}",
                    "-" if instr is None or not reference else f"{instr / reference:.2f}x",
                    *(f"{per_call[k]:.1f}" if k in per_call else "-" for k in COUNTED_NAMES),
                    "-" if not calls else f"{calls['per_message']:.2f}",
                    top or "-",
                ]
            )
        rows.append([""] * 9)
    say(
        render(
            [
                "transport",
                "server",
                "instr/msg",
                "vs uvloop",
                *COUNTED_NAMES,
                "syscalls/msg",
                "commonest",
            ],
            rows[:-1],
            left=2,
        )
    )
    report.sections["costs"] = {"seconds": [SHORT, LONG], "results": results}
