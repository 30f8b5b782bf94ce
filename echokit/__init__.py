"""
echokit: one pair of echo protocols served and reached over every transport.

The package is laid out by concern:

- L{echokit.echo}: the sans-IO core (what an echo must look like; no sockets).
- L{echokit.stream} and L{echokit.datagram}: the Twisted protocols and factories,
  thin adapters over the core, for byte streams (tcp, tcp6, unix, ssl/tls) and UDP.
- L{echokit.endpoints}: endpoint strings, parsed with Twisted's grammar, checked, and
  turned into Twisted endpoints (plus echokit's tcp6 and udp strings).
- L{echokit.certs} and L{echokit.tls}: generated certificates and TLS settings.
- L{echokit.serve}, L{echokit.connect} and L{echokit.demo}: what the commands do.
- L{echokit.cli}: the command line; the only module that touches the global reactor.
- L{echokit.errors}: the errors whose messages reach the user, with their exit codes.
"""

__version__ = "1.0.0"
