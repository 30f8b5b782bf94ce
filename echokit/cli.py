"""
The command line: parse and check, then hand off to one function that runs the reactor.

Click code here only parses and validates. Each command builds a job (a coroutine that
takes the reactor) and passes it to L{run}, the only place that touches the global
reactor, and the one place where an L{EchokitError} becomes a message on stderr and an
exit status (2 for bad input, 1 for runtime failures). Endpoint strings are checked
before the reactor starts, so a typo never binds a port.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn

import click

from echokit import __version__
from echokit.errors import INTERRUPTED, EchokitError, InputError
from echokit.runtime.policy import LIMIT_OPTIONS, ServerPolicy
from echokit.runtime.reactors import DEFAULT as DEFAULT_REACTOR
from echokit.runtime.reactors import REACTORS, load_lazily, without_tls
from echokit.transports.certs import CERT_DIR_ENV, CertStore, resolve_cert_dir
from echokit.transports.grammar import EndpointSpec, parse_client, parse_server, plaintext_only

Job = Callable[[Any], Coroutine[Any, Any, object]]


def fail(error: EchokitError) -> NoReturn:
    """Print C{error}'s one-line message and exit with its status."""
    click.echo(f"echokit: error: {error}", err=True)
    sys.exit(error.exit_code)


def run(job: Job, ctx: click.Context, default_level: str = "warn") -> NoReturn:
    """
    Run C{job(reactor)} on the global reactor and exit with its outcome.

    Logging follows the global options (C{-v}, C{-q}, C{--log-format}, C{--log-file});
    C{default_level} is the lowest level shown without C{-v} or C{-q}. With C{-v} an
    unexpected error also prints its traceback.
    """
    from echokit.runtime.reactors import ReactorUnavailable, install

    try:
        reactor = install(ctx.obj["reactor"])
    except ReactorUnavailable as e:
        fail(InputError(str(e)))

    from twisted.internet import defer, task
    from twisted.python.failure import Failure

    from echokit.runtime.logs import start_logging

    show_traceback = ctx.obj["verbosity"] > 0
    try:
        start_logging(_level(ctx, default_level), ctx.obj["log_format"], ctx.obj["log_file"])
    except EchokitError as e:
        fail(e)
    from twisted.logger import Logger

    Logger(namespace="echokit").debug(
        "event loop: {name} ({cls})",
        name=ctx.obj["reactor"],
        cls=f"{type(reactor).__module__}.{type(reactor).__qualname__}",
    )

    def outcome(failure: Failure) -> None:
        if failure.check(SystemExit):
            failure.raiseException()
        if failure.check(BrokenPipeError):
            # Whoever read our output stopped reading (`| head`): stop quietly, like `cat`.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(141)
        if isinstance(failure.value, EchokitError):
            click.echo(f"echokit: error: {failure.value}", err=True)
            raise SystemExit(failure.value.exit_code)
        if show_traceback:
            failure.printTraceback(file=sys.stderr)
        click.echo(
            f"echokit: internal error: {type(failure.value).__name__}: {failure.getErrorMessage()} "
            "(run with -v for the traceback, and please report it)",
            err=True,
        )
        raise SystemExit(1)

    def main(reactor: Any) -> defer.Deferred[object]:
        return defer.ensureDeferred(job(reactor)).addErrback(outcome)

    try:
        task.react(main, _reactor=reactor)
    except SystemExit:
        if getattr(reactor, "_exitSignal", None) == signal.SIGINT:
            # Ctrl-C: the shell's convention (128 + SIGINT), and the prompt on a new line.
            sys.stderr.write("\n")
            sys.stderr.flush()
            raise SystemExit(INTERRUPTED) from None
        raise
    raise AssertionError("task.react returned")  # pragma: no cover


def _checked(parse: Callable[[str], EndpointSpec], text: str, role: str) -> EndpointSpec:
    try:
        spec = parse(text)
        if not spec.known:  # a Twisted plugin's prefix? Only Twisted can say (imports it)
            from echokit.transports.endpoints import check_kind

            check_kind(spec, role)
    except EchokitError as e:
        fail(e)
    return spec


def _cert_store(option: Path | None) -> CertStore:
    """The certificate store: --cert-dir, else $ECHOKIT_CERT_DIR, else the default."""
    try:
        return CertStore(resolve_cert_dir(str(option) if option else None))
    except EchokitError as e:
        fail(e)


def _global_argv(ctx: click.Context) -> list[str]:
    """The global options as given, for child processes (workers) to run alike."""
    obj = ctx.obj
    argv = ["--reactor", obj["reactor"], "--log-format", obj["log_format"]]
    if obj["log_file"] is not None:
        argv += ["--log-file", str(obj["log_file"])]
    if obj["verbosity"] < 0:
        argv.append("-q")
    argv += ["-v"] * max(0, obj["verbosity"])
    return argv


def _connect_timeout(ctx: click.Context, timeout: float) -> float | None:
    """
    The bound on connecting and on the TLS handshake: C{--timeout} if the user gave it,
    else C{None} (the client's default, 10 s).
    """
    given = ctx.get_parameter_source("timeout") not in (
        click.core.ParameterSource.DEFAULT,
        None,
    )
    return timeout if given else None


def _client_certificate(store: CertStore, wanted: bool) -> tuple[Path, Path | None] | None:
    """echokit's client certificate and key, if C{--client-cert} asked for them."""
    if not wanted:
        return None
    if not store.client_cert.is_file():
        fail(
            InputError(
                f"--client-cert: no client certificate in {store.directory}: "
                "run `echokit certs` first"
            )
        )
    return (store.client_cert, store.client_key)


def _level(ctx: click.Context, default: str) -> str:
    verbosity = ctx.obj["verbosity"]
    if verbosity < 0:
        return "warn"
    return "debug" if verbosity > 0 else default


def _command_reactor(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """C{--reactor} given after the command name wins over the global one."""
    if value is not None:
        ctx.ensure_object(dict)["reactor"] = value


#: C{--reactor} after the command (C{echokit serve --reactor asyncio ...}), as users of
#: other tools write it; the same choice as the global option before the command.
reactor_option = click.option(
    "--reactor",
    type=click.Choice(REACTORS),
    default=None,
    expose_value=False,
    callback=_command_reactor,
    help="Event loop, as the global --reactor (default: the global option's choice).",
)

cert_dir_option = click.option(
    "--cert-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Certificate directory (default: ${CERT_DIR_ENV}, else ~/.local/share/echokit/certs).",
)


def limit_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """serve's limits and timeouts, from the table twistd's plugin uses too."""
    for option, field, kind, help_text in reversed(LIMIT_OPTIONS):
        f = click.option(
            f"--{option}",
            field,
            type=click.IntRange(min=0) if kind is int else click.FloatRange(min=0),
            default=getattr(ServerPolicy, field),
            show_default=True,
            help=help_text,
        )(f)
    return f


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="echokit")
@click.option("-v", "--verbose", count=True, help="Log more: every message echoed, tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Log only warnings and errors.")
@click.option(
    "--reactor",
    type=click.Choice(REACTORS),
    default=DEFAULT_REACTOR,
    show_default=True,
    help="Event loop: lean (Twisted's epoll without per-event log context), epoll, asyncio, uvloop.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Log lines as text, or as one JSON object per line (twisted.logger's fields).",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append log lines to this file instead of stderr.",
)
@click.pass_context
def main(
    ctx: click.Context,
    verbose: int,
    quiet: bool,
    reactor: str,
    log_format: str,
    log_file: Path | None,
) -> None:
    """Serve and reach echo servers over tcp, tcp6, unix, ssl/tls, udp, quic and ws/wss.

    \b
    Examples:
      echokit serve tcp:16000 tcp6:16001 unix:/tmp/echo.sock ssl:16443 udp:16000
      echokit connect ssl:host=localhost:port=16443
      printf 'hello\\n' | echokit connect tcp:host=127.0.0.1:port=16000
      echokit demo
    """
    ctx.ensure_object(dict)
    ctx.obj["verbosity"] = -1 if quiet else verbose
    ctx.obj["log_format"] = log_format
    ctx.obj["reactor"] = reactor
    ctx.obj["log_file"] = log_file


@main.command()
@click.argument("descriptions", nargs=-1, required=True, metavar="DESCRIPTION...")
@limit_options
@click.option(
    "--workers",
    default="1",
    show_default=True,
    help="Processes serving the same listening sockets: a number, or auto (one per CPU).",
)
@click.option(
    "--require-client-cert",
    is_flag=True,
    help="TLS listeners demand a client certificate signed by echokit's CA (or --client-ca).",
)
@click.option(
    "--client-ca",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="CA certificate file for --require-client-cert (default: echokit's ca.pem).",
)
@cert_dir_option
@reactor_option
@click.pass_context
def serve(
    ctx: click.Context,
    /,
    descriptions: tuple[str, ...],
    workers: str,
    require_client_cert: bool,
    client_ca: Path | None,
    cert_dir: Path | None,
    **limits: Any,
) -> None:
    """Echo on every endpoint given, in one process.

    DESCRIPTION is a Twisted server endpoint string (tcp, tcp6, unix, ssl, and plugins
    such as systemd or haproxy) or echokit's udp:PORT[:interface=ADDR] or udp6:PORT,
    or WebSocket: ws:PORT[:interface=ADDR][:path=/P], wss:PORT[...], or ws: around any
    stream string (ws:tcp6:16000, ws:unix:/tmp/ws.sock, ws:ssl:16443).
    ssl:PORT and wss:PORT without privateKey= use echokit's generated certificate. Escape colons
    in IPv6 addresses: tcp6:16000:interface=\\:\\:1.

    \b
    Example:
      echokit serve tcp:16000 tcp6:16001 unix:/tmp/echo.sock ssl:16443 udp:16000
    """
    specs = [_checked(parse_server, text, "server") for text in descriptions]
    if ctx.obj.get("own_process"):
        # Before anything imports Twisted (worker_count's module does).
        load_lazily()
        if not require_client_cert and plaintext_only(specs):
            without_tls(stdlib=ctx.obj["reactor"] != "uvloop")
    store = _cert_store(cert_dir)
    verbose = ctx.obj["verbosity"] > 0
    from echokit.server.workers import worker_count

    try:
        processes = worker_count(workers)
    except EchokitError as e:
        fail(e)
    if client_ca is not None and not require_client_cert:
        fail(InputError("--client-ca only applies with --require-client-cert: add it"))
    if processes > 1 and any(spec.kind == "quic" for spec in specs):
        fail(
            InputError(
                "--workers: quic: listeners cannot share their socket between processes (each "
                "QUIC connection's packets must reach the one process that holds it): serve "
                "quic: in a process of its own, without --workers"
            )
        )
    policy = ServerPolicy(require_client_cert=require_client_cert, client_ca=client_ca, **limits)

    async def job(reactor: Any) -> None:
        from echokit.server.serve import serve_until_signalled

        await serve_until_signalled(
            reactor, specs, store, sys.stdout, policy, verbose, processes, _global_argv(ctx)
        )

    run(job, ctx, "info")


@main.command()
@click.argument("description", metavar="DESCRIPTION")
@click.option(
    "-m",
    "--message",
    is_flag=False,
    flag_value="Hello, Server!",
    default=None,
    help="Send TEXT (default 'Hello, Server!') and print its echo, then exit.",
)
@click.option(
    "-n", "--count", type=click.IntRange(min=1), default=None, help="Send the message N times."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=2.0,
    help="Seconds to wait for each echo (messages, typed lines, UDP datagrams; default: 2), "
    "and to connect and complete a TLS handshake (default: 10).",
)
@click.option(
    "--idle-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Pipe mode: give up when no echo has come for this many seconds while some is due "
    "(a server that stopped reading or echoing).",
)
@click.option(
    "--insecure", is_flag=True, help="Do not verify the TLS server's certificate (unsafe)."
)
@click.option(
    "--client-cert", is_flag=True, help="Present echokit's client certificate (mutual TLS)."
)
@cert_dir_option
@reactor_option
@click.pass_context
def connect(
    ctx: click.Context,
    description: str,
    message: str | None,
    count: int | None,
    timeout: float,
    idle_timeout: float,
    insecure: bool,
    client_cert: bool,
    cert_dir: Path | None,
) -> None:
    """Reach an echo server and check that what comes back is what was sent.

    With stdin piped, stream it to the server and the echo to stdout (over UDP, one
    datagram per line); at the terminal, send each line typed and show its round-trip
    time; with --message, send one message (or --count of them).

    DESCRIPTION is a client endpoint string: tcp:host=H:port=P, tcp6:host=H:port=P,
    unix:path=P, ssl:host=H:port=P, tls:host=H:port=P, udp:host=H:port=P or
    udp6:host=H:port=P or quic:host=H:port=P[:datagram=yes]; WebSocket: ws:host=H:port=P
    [:path=/P], wss:host=H:port=P, ws://HOST:PORT/PATH, wss://... (piped stdin goes as
    binary messages, typed lines as text messages). TLS, wss and QUIC servers are
    verified against echokit's CA (or trustRoots=/caCertsDir=) unless --insecure.

    \b
    Examples:
      printf 'hello\\n' | echokit connect tcp:host=127.0.0.1:port=16000
      echokit connect ssl:host=localhost:port=16443 --message hi --count 3
      echokit connect 'tcp6:host=\\:\\:1:port=16001'
    """
    from echokit.client.connect import ClientOptions

    spec = _checked(parse_client, description, "client")
    store = _cert_store(cert_dir)
    options = ClientOptions(
        store, insecure, _client_certificate(store, client_cert), timeout, idle_timeout=idle_timeout
    )
    if (connect_timeout := _connect_timeout(ctx, timeout)) is not None:
        options.connect_timeout = connect_timeout
    if insecure and spec.kind in ("ssl", "tls", "quic", "wss"):
        click.echo(
            "echokit: warning: --insecure: the server's certificate is NOT verified", err=True
        )
    if count is not None and message is None:
        message = "Hello, Server!"
    interactive = message is None and sys.stdin.isatty()

    async def job(reactor: Any) -> None:
        from echokit.client import connect as client
        from echokit.transports.endpoints import carries_datagrams

        if message is not None:
            await client.send_messages(
                reactor, spec, options, message.encode(), count or 1, sys.stdout.buffer
            )
        elif interactive:
            await client.interactive(reactor, spec, options)
        elif carries_datagrams(spec):
            await client.pipe_datagrams(reactor, spec, options)
        else:
            await client.pipe_stream(reactor, spec, options)

    run(job, ctx)


class ByteSize(click.ParamType[int]):
    """A size in bytes: 64, 1k, 64k, 1m (binary multiples)."""

    name = "size"
    _units = {"": 1, "b": 1, "k": 1024, "kb": 1024, "m": 1024**2, "mb": 1024**2}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        text = str(value).strip().lower()
        number = text.rstrip("kmb")
        unit = text[len(number) :]
        if not number.isdigit() or unit not in self._units:
            self.fail(f"'{value}' is not a size: write bytes, or use k or m (64, 1k, 64k, 1m)")
        return int(number) * self._units[unit]


class Rates(click.ParamType[tuple[float, ...]]):
    """Fixed rates in msg/s: 2000, 50k, 1m, or a list 1k,10k,50k."""

    name = "rate"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> tuple[float, ...]:
        from echokit.measure.schedule import parse_rates

        if isinstance(value, tuple):
            return value
        try:
            return parse_rates(str(value))
        except InputError as e:
            self.fail(str(e))


def bench_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options C{bench} and C{compare} share."""
    options = [
        click.option(
            "--size",
            type=ByteSize(),
            default="64",
            show_default=True,
            help="Message size (64, 1k, 64k, 1m).",
        ),
        click.option(
            "--connections",
            type=click.IntRange(min=1, max=1000),
            default=4,
            show_default=True,
            help="Connections in flight in the throughput phase.",
        ),
        click.option(
            "--duration",
            type=click.FloatRange(min=0.1, max=3600),
            default=2.0,
            show_default=True,
            help="Seconds per phase (latency, throughput).",
        ),
        click.option(
            "--count",
            type=click.IntRange(min=1, max=100_000_000),
            default=None,
            help="Messages per phase, instead of --duration.",
        ),
        click.option(
            "--rate",
            "rates",
            type=Rates(),
            default=None,
            help="Open loop: send at this fixed rate (msg/s over all connections: 2000, 50k, "
            "1m), whether or not echoes came back; latency from each intended send time. "
            "A list (1k,10k,50k) gives one row per rate.",
        ),
        click.option(
            "--warmup",
            type=click.FloatRange(min=0, max=600),
            default=0.5,
            show_default=True,
            help="Seconds of traffic before measuring throughput.",
        ),
        click.option(
            "--timeout",
            type=click.FloatRange(min=0.001, max=60),
            default=1.0,
            help="Seconds without an echo before a UDP message, or a stream's missing bytes, "
            "count as lost (default: 1); also the bound on connecting and on a TLS handshake "
            "(default: 10).",
        ),
        click.option(
            "--json",
            "as_json",
            is_flag=True,
            help="One JSON object per endpoint (fields: see README).",
        ),
        click.option(
            "--wide",
            is_flag=True,
            help="Every column in the table (p90, p99.9, whole endpoint strings), wider "
            "than 120 columns.",
        ),
        click.option(
            "--save",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Save this run to FILE (JSON).",
        ),
        click.option(
            "--baseline",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            default=None,
            help="Show the change against a run saved with --save.",
        ),
        click.option(
            "--plot",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="Write a latency-percentile chart (.png or .svg; needs echokit[plot]).",
        ),
        click.option("--insecure", is_flag=True, help="Do not verify TLS servers (unsafe)."),
        click.option(
            "--client-cert", is_flag=True, help="Present echokit's client certificate over TLS."
        ),
        cert_dir_option,
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _bench_setup(
    ctx: click.Context,
    size: int,
    connections: int,
    duration: float,
    count: int | None,
    rates: tuple[float, ...] | None,
    warmup: float,
    timeout: float,
    as_json: bool,
    wide: bool,
    save: Path | None,
    baseline: Path | None,
    plot: Path | None,
    insecure: bool,
    client_cert: bool,
    cert_dir: Path | None,
) -> tuple[Any, Any, Any]:
    from echokit.client.connect import ClientOptions
    from echokit.measure.bench import BenchSettings
    from echokit.measure.compare import Output

    settings = BenchSettings(size, connections, duration, count, warmup, timeout, rates or ())
    try:
        settings.check()
    except EchokitError as e:
        fail(e)
    if plot is not None and plot.suffix.lower() not in (".png", ".svg"):
        fail(InputError(f"--plot writes .png or .svg files, not '{plot.name}'"))
    if plot is not None:
        from echokit.measure.report import PlotUnavailable, check_plotting

        try:
            check_plotting()
        except PlotUnavailable as e:
            fail(e)
    for flag, path in (("--save", save), ("--plot", plot)):
        # Checked now, so that a long run is not measured for nothing.
        if path is not None and not os.access(path.absolute().parent, os.W_OK):
            fail(
                InputError(f"{flag}: cannot write '{path}': its directory is missing or read-only")
            )
    store = _cert_store(cert_dir)
    options = ClientOptions(store, insecure, _client_certificate(store, client_cert), timeout)
    if (connect_timeout := _connect_timeout(ctx, timeout)) is not None:
        options.connect_timeout = connect_timeout
    if insecure:
        click.echo(
            "echokit: warning: --insecure: TLS servers' certificates are NOT verified", err=True
        )
    output = Output(
        sys.stdout, as_json, save, baseline, plot, progress=sys.stderr.isatty(), wide=wide
    )
    return settings, options, output


@main.command()
@click.argument("descriptions", nargs=-1, required=True, metavar="DESCRIPTION...")
@click.option(
    "--server-pid",
    type=int,
    default=None,
    metavar="PID",
    help="Also measure this local server process's CPU per message (with its children).",
)
@bench_options
@click.option(
    "--processes",
    default="1",
    show_default=True,
    metavar="N|auto",
    help="Client processes measuring at once (auto: one per CPU), one merged result.",
)
@click.option(
    "--start-at",
    default=None,
    metavar="TIME",
    help="Start at this wall-clock time (ISO 8601, or Unix seconds): hosts measure together.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1, max=3600),
    default=None,
    metavar="S",
    help="Every S seconds, one JSON line of that interval's latency on stdout.",
)
@click.option(
    "--hlog",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write HdrHistogram's interval log to FILE (every --interval S, else every 1 s).",
)
@reactor_option
@click.pass_context
def bench(
    ctx: click.Context,
    /,
    descriptions: tuple[str, ...],
    server_pid: int | None,
    processes: str,
    start_at: str | None,
    interval: float | None,
    hlog: Path | None,
    **kwargs: Any,
) -> None:
    """Measure running echo servers over the client strings given, one table.

    Any plain byte echo works (echokit's, socat PIPE, ncat --exec cat, inetd). For each
    endpoint: connect time (TLS handshake apart), round-trip latency with one message in
    flight (p50 to max), throughput with --connections in flight, and an audit of every
    message (lost, duplicated, reordered, corrupted). With --rate, one fixed-rate
    (open-loop) phase instead, latency counted from each message's intended send time.

    \b
    Examples:
      echokit bench tcp:host=127.0.0.1:port=16000 udp:host=127.0.0.1:port=16000 --size 1k
      echokit bench tcp:host=127.0.0.1:port=16000 --rate 1k,10k,50k --plot load.png
    """
    from echokit.measure.cpu import check_server_pid

    specs = [_checked(parse_client, text, "client") for text in descriptions]
    settings, options, output = _bench_setup(ctx, **kwargs)
    from echokit.measure.bench import transport_name
    from echokit.measure.results import too_large

    for spec in specs:
        ipv6 = ":" in str(spec.get("host", ""))
        if why := too_large(transport_name(spec), settings.size, ipv6):
            fail(InputError(f"--size: {spec.text}: {why}; give a smaller --size"))
    if server_pid is not None:
        try:
            check_server_pid(server_pid)
        except EchokitError as e:
            fail(e)
    from echokit.measure.processes import process_count, shares

    try:
        count = process_count(processes, len(os.sched_getaffinity(0)))
        if count > 1:
            shares(settings, count)  # checked now: enough connections for every process
    except EchokitError as e:
        fail(e)
    if start_at is not None:
        import dataclasses
        import time

        from echokit.measure.starttime import parse_start_at

        try:
            settings = dataclasses.replace(settings, start_at=parse_start_at(start_at, time.time()))
        except EchokitError as e:
            fail(e)
    if interval is not None or hlog is not None:
        from echokit.measure.intervals import IntervalLog

        try:
            log_file = None if hlog is None else hlog.open("w")
        except OSError as e:
            fail(InputError(f"--hlog: cannot write '{hlog}': {e.strerror}"))
        rows = len(specs) * max(1, len(settings.rates))
        output.intervals = IntervalLog(
            interval or 1.0, sys.stdout if interval else None, log_file, tagged=rows > 1
        )
    mode = "clients in this process"
    if count > 1:
        mode = f"{count} client processes started together, each its own reactor; merged"

    async def job(reactor: Any) -> None:
        from echokit.measure.compare import measure
        from echokit.measure.cpu import CpuMeter

        pids = None if server_pid is None else (lambda: [server_pid])
        described = mode
        if server_pid is not None:
            described += f"; server CPU from process {server_pid} and its children"
        meter = CpuMeter(pids, client=True)
        await measure(
            reactor, specs, options, settings, output, described, meter, count, _global_argv(ctx)
        )

    run(job, ctx)


@main.command("bench-process", hidden=True)
@cert_dir_option
@click.argument("config")
@click.pass_context
def bench_process(ctx: click.Context, cert_dir: Path | None, config: str) -> None:
    """Internal: one of `echokit bench --processes N`'s clients (see echokit.measure.processes)."""
    from echokit.client.connect import ClientOptions

    options = ClientOptions(_cert_store(cert_dir))

    async def job(reactor: Any) -> None:
        from echokit.measure.processes import run_child

        await run_child(reactor, config, options, sys.stdout)

    run(job, ctx)


@main.command()
@click.argument(
    "transports",
    nargs=-1,
    type=click.Choice(["tcp", "tcp6", "unix", "ssl", "udp", "quic", "quic-dgram", "ws", "wss"]),
    metavar="[TRANSPORT...]",
)
@click.option(
    "--server-process",
    is_flag=True,
    help="Run the servers in a child process, so clients and servers do not share a reactor.",
)
@click.option(
    "--pin/--no-pin",
    default=True,
    show_default=True,
    help="Pin clients and servers to CPUs (one CPU in one process; with --server-process "
    "one each), so that latency does not measure the kernel moving or waking threads.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1, 1000),
    default=None,
    help="Measure every transport's latency first, in this many rounds taking turns, so "
    "that all see the machine alike; 1: each transport's in one go.  [default: 10]",
)
@bench_options
@reactor_option
@click.pass_context
def compare(
    ctx: click.Context,
    /,
    transports: tuple[str, ...],
    server_process: bool,
    pin: bool,
    rounds: int | None,
    **kwargs: Any,
) -> None:
    """Start echokit's servers and measure every transport side by side.

    With no TRANSPORT, all of them: tcp, tcp6, unix, ssl, udp, with echokit[quic]
    quic (a QUIC stream) and quic-dgram (QUIC DATAGRAM frames), and with echokit[ws] ws
    and wss (WebSocket, plain and TLS), on loopback with ephemeral ports. The output says whether servers and clients shared one process.
    Latency is measured in rounds that take turns, beside a floor (a plain Python echo
    thread: the machine's own round trip); x floor is each p50 over the floor's.

    \b
    Examples:
      echokit compare
      echokit compare tcp unix ssl --size 1k --server-process --plot latency.png
    """
    from echokit.measure.compare import TRANSPORTS, default_transports
    from echokit.measure.interleave import ROUNDS

    chosen = [t for t in TRANSPORTS if t in transports] if transports else default_transports()
    settings, options, output = _bench_setup(ctx, **kwargs)
    from echokit.measure.results import too_large

    for transport in transports:  # those named; compare leaves the others out itself
        if why := too_large(transport, settings.size):
            fail(InputError(f"--size: {transport}: {why}; give a smaller --size"))
    if rounds is not None and settings.rates:
        fail(
            InputError(
                "--rounds splits the closed-loop latency phase, which a fixed-rate run "
                "(--rate) does not have: give one or the other"
            )
        )

    async def job(reactor: Any) -> None:
        from echokit.measure.compare import compare as run_compare

        await run_compare(
            reactor,
            chosen,
            options,
            settings,
            output,
            server_process,
            ctx.obj["reactor"],
            pin,
            ROUNDS if rounds is None else rounds,
        )

    run(job, ctx)


@main.command(hidden=True)
@click.option("--index", type=int, required=True)
@click.option("--ready-fd", type=int, default=None)
@cert_dir_option
@click.argument("config")
@click.pass_context
def worker(
    ctx: click.Context, index: int, ready_fd: int | None, cert_dir: Path | None, config: str
) -> None:
    """Internal: one of `echokit serve --workers N`'s processes (see echokit.server.workers)."""
    store = _cert_store(cert_dir)

    async def job(reactor: Any) -> None:
        from echokit.server.serve import serve_until_signalled
        from echokit.server.workers import worker_plans

        plans, policy = worker_plans(reactor, config, store)
        await serve_until_signalled(
            reactor,
            plans,
            store,
            sys.stdout,
            policy,
            ctx.obj["verbosity"] > 0,
            name=f"worker {index} (pid {os.getpid()})",
            ready_fd=ready_fd,
        )

    run(job, ctx, "info")


@main.command()
@click.argument("files", nargs=-1, type=click.Path(path_type=Path), metavar="FILE...")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per endpoint.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the merged latency-percentile chart (.png or .svg; needs echokit[plot]).",
)
@click.option("--force", is_flag=True, help="Merge runs that do not match, saying what differed.")
def merge(files: tuple[Path, ...], as_json: bool, plot: Path | None, force: bool) -> None:
    """Merge runs saved on several hosts (or runs) into one result, exactly.

    Each FILE is a run written by `bench --save` or `bench --json`, of the same
    endpoints, message size and mode. Latency histograms are added (percentiles are
    those of all the samples), counts and rates summed: run the hosts at the same
    time (`bench --start-at`) so that the sum means the load they put together.

    \b
    Example:
      echokit merge host1.json host2.json host3.json --plot merged.png
    """
    from echokit.measure.merge import merge_files

    try:
        merge_files(list(files), sys.stdout, as_json, plot, force)
    except EchokitError as e:
        fail(e)


@main.command()
@click.option(
    "--dir",
    "--cert-dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where to write them (default: ${CERT_DIR_ENV}, else ~/.local/share/echokit/certs).",
)
@click.option("--force", is_flag=True, help="Replace certificates that exist already.")
def certs(directory: Path | None, force: bool) -> None:
    """Create a local CA, a server certificate and a client certificate.

    The server certificate is valid for localhost, 127.0.0.1 and ::1. serve and connect
    find the directory the same way: --cert-dir, else $ECHOKIT_CERT_DIR, else
    ~/.local/share/echokit/certs.

    \b
    Example:
      echokit certs --dir ./certs
    """
    store = _cert_store(directory)
    try:
        if store.complete() and not force:
            click.echo(f"certificates already in {store.directory} (--force makes new ones)")
            return
        store.create()
    except EchokitError as e:
        fail(e)
    for path in store.files():
        click.echo(f"wrote {path}")


@main.command()
@cert_dir_option
@reactor_option
@click.pass_context
def demo(ctx: click.Context, cert_dir: Path | None) -> None:
    """Serve and reach every transport in one process, and print one table.

    \b
    Example:
      echokit demo
    """
    store = _cert_store(cert_dir)

    async def job(reactor: Any) -> None:
        from echokit.demo import demo as run_demo

        await run_demo(reactor, store, sys.stdout)

    run(job, ctx)


def entry() -> NoReturn:
    """
    The C{echokit} command: L{main}, with click's own usage errors on one line too.

    Click prints a usage error as a usage block, a hint and the error; echokit prints
    every error as one line, C{echokit: error: ...}, with the same exit status (2).
    """
    try:
        # own_process: echokit owns this process (not a test's CliRunner), so a plaintext
        # server may leave the TLS libraries unloaded for good (see serve).
        main.main(standalone_mode=False, obj={"own_process": True})
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.format_message(), err=True)
        sys.exit(e.exit_code)
    except click.ClickException as e:
        where = (
            f" (see '{e.ctx.command_path} --help')"
            if isinstance(e, click.UsageError) and e.ctx
            else ""
        )
        click.echo(f"echokit: error: {e.format_message()}{where}", err=True)
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("echokit: aborted", err=True)
        sys.exit(INTERRUPTED)
    sys.exit(0)
