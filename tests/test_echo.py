"""Tests for L{echokit.echo}, the sans-IO core: plain calls, plain asserts."""

import pytest

from echokit.echo import DatagramLedger, EchoVerifier
from echokit.errors import EchoMismatch


class EchoVerifierTests:
    def test_exact_echo_in_other_chunks_is_complete(self) -> None:
        """Bytes that come back in different chunks than they were sent still verify."""
        v = EchoVerifier()
        for chunk in (b"abc", b"", b"defgh", b"i"):
            v.sent(chunk)
        for chunk in (b"a", b"bcdefg", b"hi"):
            v.received(chunk)
        assert v.complete
        assert (v.bytes_sent, v.bytes_received, v.pending) == (9, 9, 0)

    def test_pending_counts_bytes_in_flight(self) -> None:
        """pending is what was sent and has not come back yet."""
        v = EchoVerifier()
        v.sent(b"hello world")
        v.received(b"hello")
        assert v.pending == 6
        assert not v.complete

    def test_differing_byte_is_reported_with_its_offset(self) -> None:
        """A changed byte fails with its offset in the whole stream and both values."""
        v = EchoVerifier()
        v.sent(b"abcdef")
        v.received(b"abc")
        with pytest.raises(EchoMismatch, match=r"echo differs at byte 4: sent b'e', got b'X'"):
            v.received(b"dXf")

    def test_extra_bytes_are_reported(self) -> None:
        """More bytes back than were sent is a mismatch, not silently accepted."""
        v = EchoVerifier()
        v.sent(b"ab")
        with pytest.raises(EchoMismatch, match="1 more byte"):
            v.received(b"abc")

    def test_nothing_sent_and_nothing_received_is_complete(self) -> None:
        """An empty exchange is complete."""
        assert EchoVerifier().complete

    def test_memory_holds_only_what_is_in_flight(self) -> None:
        """Chunks that have fully come back are released."""
        v = EchoVerifier()
        v.sent(b"x" * 1000)
        v.sent(b"y" * 1000)
        v.received(b"x" * 1000 + b"y" * 10)
        assert len(v._outstanding) == 1
        assert len(v._outstanding[0]) == 990


class DatagramLedgerTests:
    def test_answered_and_lost_are_counted(self) -> None:
        """An echo answers the datagram in flight; a timeout counts it lost."""
        ledger = DatagramLedger()
        ledger.sent(b"one")
        assert ledger.received(b"one")
        ledger.sent(b"two")
        ledger.timed_out()
        assert (ledger.answered, ledger.lost, ledger.unexpected) == (1, 1, 0)
        assert not ledger.waiting

    def test_late_or_foreign_datagram_is_unexpected(self) -> None:
        """A reply that matches nothing in flight does not answer the next datagram."""
        ledger = DatagramLedger()
        ledger.sent(b"one")
        ledger.timed_out()
        ledger.sent(b"two")
        assert not ledger.received(b"one")
        assert ledger.waiting
        assert ledger.unexpected == 1

    def test_one_datagram_at_a_time(self) -> None:
        """Sending while a datagram is in flight is a programming error."""
        ledger = DatagramLedger()
        ledger.sent(b"a")
        with pytest.raises(ValueError):
            ledger.sent(b"b")
