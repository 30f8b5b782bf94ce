"""
The runtime every command stands on: which reactor runs, where logs go, and the limits.

- L{reactors} and L{leanreactor}: the C{--reactor} choice, installed only when a command
  runs; the lean epoll reactor (the default on Linux).
- L{logs}: log output (text or JSON), filters, throttled resource warnings.
- L{policy} (sans-IO): the server's limits and their defaults, the connection limiter,
  token bucket, UDP repeat guard and log throttle.

Imports only from L{echokit.errors}: the transports and everything above use it.
"""
