"""Tests for L{echokit.transports.grammar}: endpoint strings checked with Twisted's grammar."""

from pathlib import Path

import pytest
from twisted.internet.endpoints import _parse  # Twisted's own parser, to compare against

from echokit.errors import EndpointError
from echokit.transports.grammar import Field, escape, parse_client, parse_server, split_fields


class SplitFieldsTests:
    @pytest.mark.parametrize(
        "text",
        [
            "tcp:16000",
            "tcp:host=localhost:port=80",
            "tcp6:host=\\:\\:1:port=80",
            "unix:/tmp/a\\:b.sock:mode=600",
            "ssl:443:privateKey=k.pem:certKey=c=d.pem",
            "a:b:c=d=e:\\\\x",
        ],
    )
    def test_same_fields_as_twisted(self, text: str) -> None:
        """Fields, keywords and escapes are read exactly as Twisted's own parser reads them."""
        args, kwargs = _parse(text)
        fields = split_fields(text)
        assert [f.value for f in fields if f.key is None] == args
        assert {f.key: f.value for f in fields if f.key is not None} == kwargs

    def test_escape_round_trips(self) -> None:
        """An escaped value is one field with the original text."""
        value = "a:b=c\\d::1"
        assert split_fields(f"x:{escape(value)}") == [Field(None, "x"), Field(None, value)]

    def test_trailing_backslash_is_an_error(self) -> None:
        """A lone backslash at the end names the problem instead of raising StopIteration."""
        with pytest.raises(EndpointError, match="lone backslash"):
            split_fields("tcp:1\\")


class ParseServerTests:
    def test_kinds_and_values(self) -> None:
        """Each known kind converts its values: ports to int, modes from octal."""
        assert parse_server("tcp:16000").values == {"port": 16000}
        assert parse_server("tcp6:0:interface=\\:\\:1").values == {"port": 0, "interface": "::1"}
        assert parse_server("udp:7:interface=127.0.0.1").values == {
            "port": 7,
            "interface": "127.0.0.1",
        }
        assert parse_server("unix:/tmp/x.sock:mode=660").values == {
            "address": "/tmp/x.sock",
            "mode": 0o660,
        }

    def test_prefix_is_case_insensitive(self) -> None:
        """TCP:1 is tcp, as in Twisted."""
        assert parse_server("TCP:1").kind == "tcp"

    def test_unknown_kind_is_passed_through(self) -> None:
        """A kind echokit does not check is left to Twisted's plugins."""
        spec = parse_server("systemd:domain=INET:index=0")
        assert (spec.kind, spec.known) == ("systemd", False)

    @pytest.mark.parametrize(
        ("text", "fragments"),
        [
            ("tcp:notaport", ["port 'notaport' is not a number", "0 to 65535"]),
            ("tcp:99999", ["port 99999 is out of range"]),
            ("tcp:0:foo=1", ["unknown keyword 'foo'", "port, backlog, interface"]),
            ("tcp6:0:interface=::1", ["unescaped IPv6", "interface=\\:\\:1"]),
            ("tcp:0:interface=::1", ["unescaped IPv6", "interface=\\:\\:1"]),
            ("tcp:0:interface=\\:\\:1", ["not an IPv4 address", "tcp6"]),
            ("unix:/nonexistent-dir/x.sock", ["directory '/nonexistent-dir'", "does not exist"]),
            (
                "ssl:0:privateKey=/nonexistent.pem",
                ["privateKey file '/nonexistent.pem'", "echokit certs"],
            ),
            ("tcp", ["has no port", "tcp:16000"]),
            ("tcp:1:2", ["too many fields"]),
            ("", ["empty server endpoint"]),
            ("port=1", ["does not start with a transport"]),
            ("unix:/tmp/x:mode=999", ["not an octal file mode"]),
            ("tcp:1:port=2", ["port is given twice"]),
            ("tcp:1:backlog=-3", ["backlog='-3' is not a whole number"]),
        ],
    )
    def test_bad_strings_name_the_problem(self, text: str, fragments: list[str]) -> None:
        """Every bad string gets one line naming the bad part and the fix."""
        with pytest.raises(EndpointError) as info:
            parse_server(text)
        message = str(info.value)
        assert "\n" not in message
        for fragment in fragments:
            assert fragment in message

    def test_unix_path_too_long(self, tmp_path: Path) -> None:
        """A unix socket path longer than sun_path allows is refused before binding."""
        with pytest.raises(EndpointError, match="the limit is 107"):
            parse_server(f"unix:{tmp_path / ('x' * 120)}")


class ParseClientTests:
    def test_positional_and_keyword_forms_agree(self) -> None:
        """tcp:HOST:PORT and tcp:host=HOST:port=PORT mean the same."""
        assert (
            parse_client("tcp:localhost:80").values
            == parse_client("tcp:host=localhost:port=80").values
        )

    def test_escaped_ipv6_host(self) -> None:
        """An escaped IPv6 literal is one host."""
        assert parse_client("tcp6:host=\\:\\:1:port=1").values == {"host": "::1", "port": 1}

    @pytest.mark.parametrize(
        ("text", "fragment"),
        [
            ("tcp:host=::1:port=1", "write host=\\:\\:1"),
            ("tcp6:host=fe80::1:port=1", "write host=fe80\\:\\:1"),
            ("tcp:host=127.0.0.1", "has no port"),
            ("udp:host=127.0.0.1:port=0", "port 0 is out of range"),
            (
                "tls:host=x:port=1:trustRoots=/nonexistent",
                "trustRoots '/nonexistent' does not exist",
            ),
            ("ssl:host=x:port=1:bogus=1", "unknown keyword 'bogus'"),
            ("tcp:host=:port=1", "empty host"),
        ],
    )
    def test_bad_strings_name_the_problem(self, text: str, fragment: str) -> None:
        """Bad client strings get one line naming the bad part."""
        with pytest.raises(EndpointError) as info:
            parse_client(text)
        assert fragment in str(info.value)
