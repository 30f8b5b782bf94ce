"""
The transports: endpoint strings and the Twisted protocols that echo over them.

- L{grammar} checks endpoint strings (Twisted's grammar, echokit's one-line errors);
  L{endpoints} turns checked strings into Twisted endpoints and listening ports back into
  connect strings.
- L{stream} (tcp, tcp6, unix, ssl/tls) and L{datagram} (udp): the echo protocols and
  factories, thin adapters over the sans-IO core in L{echokit.echo}.
- L{tls}, L{tlslayer} and L{certs}: TLS settings, the TLS layer of TLS listeners, and the
  generated CA and certificates. L{proxy}: C{haproxy:} listeners (PROXY protocol).
- L{fastpath}: ways around Twisted's per-message costs (write-through, plain recv).

Imports only from L{echokit.echo}, L{echokit.errors} and L{echokit.runtime}: never from the
server, client, measurement or command-line packages (C{tests/test_layout.py} checks).
"""
