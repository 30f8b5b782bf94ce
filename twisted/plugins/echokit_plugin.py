"""
twistd's entry to echokit: C{twistd [-n] echokit --listen DESCRIPTION ...}.

A L{ServiceMaker} names the module with the options and the service
(L{echokit.server.twistd}); twistd imports it only when C{echokit} is the command, so listing
plugins never imports echokit. This directory has no C{__init__.py} on purpose: Twisted
finds C{twisted/plugins} directories through C{sys.path}.
"""

from twisted.application.service import ServiceMaker

echokit = ServiceMaker(
    "echokit",
    "echokit.server.twistd",
    "Echo on tcp, tcp6, unix, ssl/tls and udp endpoints (the service `echokit serve` runs).",
    "echokit",
)
