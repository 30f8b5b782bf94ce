"""
The client side: C{echokit connect} (L{connect}), whose stream and datagram openers the
demo and the benchmarks reuse.
"""
