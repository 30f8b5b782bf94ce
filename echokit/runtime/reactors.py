"""
Which reactor runs echokit: the names C{--reactor} takes, and installing one.

C{--reactor} chooses:

    - C{lean} (the default on Linux): L{echokit.runtime.leanreactor.LeanEPollReactor}, Twisted's
      epoll reactor without the per-event log-context bookkeeping;
    - C{epoll}: Twisted's own epoll reactor, unchanged;
    - C{asyncio}: Twisted's asyncio reactor on the standard event loop;
    - C{uvloop}: Twisted's asyncio reactor on uvloop, if uvloop is installed.

Installing a reactor is the CLI's business alone (L{install}); everything else takes the
reactor as an argument. This module imports no reactor until L{install} is called, so
the command line can offer the names without paying for Twisted's start-up.
"""

from __future__ import annotations

import sys
from typing import Any

REACTORS = ("lean", "epoll", "asyncio", "uvloop")
DEFAULT = "lean" if sys.platform.startswith("linux") else "asyncio"


#: What a process that never speaks TLS does not load: pyOpenSSL (which Twisted's reactor,
#: TCP transport and endpoints import whenever they can), cryptography and service_identity.
TLS_LIBRARIES = ("OpenSSL", "cryptography", "service_identity")

#: The standard library's TLS, which asyncio imports if it can (and so Twisted's
#: C{defer}, through asyncio): with the OpenSSL libraries it loads, about 4 MiB.
STDLIB_TLS = ("ssl", "_ssl")


def without_tls(stdlib: bool = True) -> bool:
    """
    Run this process's Twisted as it runs where no TLS library is installed.

    Twisted imports pyOpenSSL (and through it cryptography) whenever it can, for
    C{startTLS} and C{listenSSL}, even in a process that never speaks TLS: about 14 MiB
    of a plaintext server's memory; asyncio, which Twisted's C{defer} imports, loads
    the standard library's C{ssl} and with it OpenSSL's libraries: about 4 MiB more.
    Marking the libraries as absent in C{sys.modules} makes Twisted and asyncio take
    their own "no TLS available" branches, configurations they support; echokit's own
    TLS modules are imported only by the code that builds TLS endpoints. The command
    line calls this for C{echokit serve} when no listener needs TLS, before anything
    imports Twisted; afterwards, importing one of L{TLS_LIBRARIES} (or of
    L{STDLIB_TLS}) raises C{ImportError} in this process.

    @param stdlib: also mark L{STDLIB_TLS} absent (C{False} for a reactor that needs
        C{ssl} to run at all: uvloop imports it unconditionally).

    Does nothing (and returns C{False}) once Twisted or one of the libraries is
    imported: they would be half-loaded then, and nothing would be saved.
    """
    absent = (*TLS_LIBRARIES, *STDLIB_TLS) if stdlib else TLS_LIBRARIES
    if any(name in sys.modules for name in ("twisted.internet", *absent)):
        return False
    for name in absent:
        sys.modules[name] = None  # type: ignore[assignment]  # "not installed", to importers
    return True


#: Standard-library modules Twisted imports at start-up that a server never uses:
#: C{twisted.python.compat}'s C{from http import cookiejar as cookielib} (a deprecated
#: alias) runs C{http.cookiejar}, and through it C{urllib.request}, C{http.client} and
#: the C{email} package, about 2 MiB of a server's memory.
UNUSED_BY_SERVERS = ("http.cookiejar",)


def load_lazily(names: tuple[str, ...] = UNUSED_BY_SERVERS) -> list[str]:
    """
    Make each module in C{names} importable without running it, until it is used.

    Each becomes a module whose code runs the first time one of its attributes is read
    (L{importlib.util.LazyLoader}), put in C{sys.modules} and on its package, so that
    C{from http import cookiejar} binds it without running it, while
    C{http.cookiejar.CookieJar} (or C{from http.cookiejar import CookieJar}) loads the
    real module at that moment and works as ever::

        >>> load_lazily(("http.cookiejar",)) in (["http.cookiejar"], [])
        True
        >>> import http.cookiejar
        >>> http.cookiejar.CookieJar.__name__
        'CookieJar'

    The command line calls this for C{echokit serve}, before anything imports Twisted.
    A module that is already imported is left alone.

    @return: the names made lazy.
    """
    import importlib.util

    made = []
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            continue
        loader = importlib.util.LazyLoader(spec.loader)
        spec.loader = loader
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        loader.exec_module(module)
        package, _, child = name.rpartition(".")
        if package:
            # On the package too: `from http import cookiejar` then takes the attribute
            # without the import system's look at the module's __spec__ (which would
            # load it at once).
            setattr(sys.modules[package], child, module)
        made.append(name)
    return made


class ReactorUnavailable(Exception):
    """The chosen reactor cannot run here."""


def install(name: str) -> Any:
    """
    Install the reactor called C{name} (one of L{REACTORS}) as the global reactor.

    @raise ReactorUnavailable: with a one-line reason.
    """
    from twisted.internet.main import installReactor

    if name == "lean":
        from echokit.runtime.leanreactor import LeanEPollReactor

        reactor: Any = LeanEPollReactor()  # type: ignore[no-untyped-call]  # Twisted's __init__
        installReactor(reactor)
        return reactor
    if name == "epoll":
        from twisted.internet import epollreactor

        epollreactor.install()
    elif name in ("asyncio", "uvloop"):
        import asyncio

        if name == "uvloop":
            try:
                import uvloop  # type: ignore[import-not-found,unused-ignore]
            except ImportError:
                raise ReactorUnavailable(
                    "--reactor uvloop needs uvloop: pip install uvloop"
                ) from None
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        from twisted.internet import asyncioreactor

        asyncioreactor.install(loop)
    else:
        raise ReactorUnavailable(f"unknown reactor '{name}': choose one of {', '.join(REACTORS)}")
    from twisted.internet import reactor as installed

    return installed
