"""
The server side: C{echokit serve} and C{twistd echokit}.

- L{listeners}: check server strings, listen, and explain a listener that cannot start.
- L{serve}: L{serve.EchoService} (shared by C{echokit serve} and C{twistd echokit}),
  graceful drain and the summary.
- L{workers}: C{--workers N}, processes that adopt the same listening sockets.
- L{twistd}: the twistd plugin's options and service maker.

Import order within: C{listeners} <- C{workers} <- C{serve} <- C{twistd} (no cycle).
"""
