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


def without_tls() -> bool:
    """
    Run this process's Twisted as it runs where pyOpenSSL is not installed.

    Twisted imports pyOpenSSL (and through it cryptography) whenever it can, for
    C{startTLS} and C{listenSSL}, even in a process that never speaks TLS: about 14 MiB
    of a plaintext server's memory. Marking the libraries as absent in C{sys.modules}
    makes Twisted take its own "no TLS available" branch, a configuration it supports;
    echokit's own TLS modules are imported only by the code that builds TLS endpoints.
    The command line calls this for C{echokit serve} when no listener needs TLS, before
    anything imports Twisted; afterwards, importing one of L{TLS_LIBRARIES} raises
    C{ImportError} in this process.

    Does nothing (and returns C{False}) once Twisted or one of the libraries is
    imported: they would be half-loaded then, and nothing would be saved.
    """
    loaded = ("twisted.internet", *TLS_LIBRARIES)
    if any(name in sys.modules for name in loaded):
        return False
    for name in TLS_LIBRARIES:
        sys.modules[name] = None  # type: ignore[assignment]  # "not installed", to importers
    return True


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
