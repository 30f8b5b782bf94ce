"""echokit's tests: unit tests on in-memory transports, and end-to-end tests on real sockets."""
