"""
Measurement: what C{echokit bench} and C{echokit compare} measure, and how it is shown.

- L{bench}: connect time, round-trip latency, throughput and integrity of one endpoint.
- L{compare}: start echokit's servers (in this process or a child) and bench each transport.
- L{report}: tables, JSON, saved runs and baselines, plots.
- L{histogram} and L{integrity} (sans-IO): latency histograms (HdrHistogram, exact to
  merge); numbered, checksummed messages and their audit.

Stands on the client (L{echokit.client}) and, for C{compare}, the server
(L{echokit.server}); nothing below imports it.
"""
