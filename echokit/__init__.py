"""
echokit: one pair of echo protocols served and reached over every transport.

The package is laid out in layers; each imports only from the ones above it in this list
(C{tests/test_layout.py} keeps it so):

- L{echokit.errors} and L{echokit.echo}: the core. The error hierarchy whose messages
  reach the user, with exit codes; what an echo must look like (sans-IO, no Twisted).
- L{echokit.runtime}: reactor choice, logs, and the server's limits (sans-IO policy).
- L{echokit.transports}: endpoint strings, the stream and datagram echo protocols, TLS,
  PROXY protocol, certificates.
- L{echokit.client} and L{echokit.server}: C{echokit connect}; C{echokit serve},
  its workers and the twistd plugin's service.
- L{echokit.measure}: C{echokit bench} and C{echokit compare}, their reports.
- L{echokit.demo} and L{echokit.cli}: the demo command, and the command line, the only
  module that touches the global reactor.
"""

__version__ = "1.0.0"
