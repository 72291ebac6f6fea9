"""The one-pass inbound header checks (aioh2s._h2headers) against h2's own pipeline.

The rule under test: ``accept`` may refuse more than h2 (h2 then decides), never less, and
whatever it accepts comes out exactly as h2 would return it.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.utilities
import pytest
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aioh2s import _h2headers
from aioh2s._h2headers import FastInboundStream, _h2_says, accept, same_fields

HV = h2.utilities.HeaderValidationFlags
REQUEST = HV(is_client=False, is_trailer=False, is_response_header=False, is_push_promise=False)
RESPONSE = HV(is_client=True, is_trailer=False, is_response_header=True, is_push_promise=False)
TRAILER = HV(is_client=False, is_trailer=True, is_response_header=False, is_push_promise=False)
CLIENT_TRAILER = HV(
    is_client=True, is_trailer=True, is_response_header=False, is_push_promise=False
)

NAMES = [
    b":method", b":scheme", b":authority", b":path", b":status", b":protocol", b":bogus",
    b":", b"", b"host", b"cookie", b"te", b"TE", b"connection", b"keep-alive",
    b"transfer-encoding", b"upgrade", b"proxy-connection", b"user-agent", b"content-length",
    b"x-a:b", b"x a", b"x\x00", b"x\x7f", b"x\xc3\xa9", b"Content-Type", b"accept",
    b"~!#$%&'*+-.^_`|", b"authorization",
]
VALUES = [
    b"", b"GET", b"CONNECT", b"POST", b"http", b"https", b"/", b"/x", b"a.example",
    b"b.example", b"200", b"103", b"trailers", b"Trailers", b"gzip", b" lead", b"trail ",
    b"\ttab", b"tab\t", b"in side", b"nul\x00", b"cr\r", b"lf\n", b"\xff\xfe", b"a=1", b" ",
    b"x" * 200,
]

block = st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=9)
# Mostly blocks that start like a valid request, so the deeper rules get exercised.
request_like = st.builds(
    lambda extra, head: head + extra,
    block,
    st.sampled_from([
        [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.example"),
         (b":path", b"/")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/x")],
        [(b":status", b"200")],
        [],
    ]),
)
flags = st.sampled_from([REQUEST, RESPONSE, TRAILER, CLIENT_TRAILER])
# A valid request plus a few odd fields, in any order (pseudo-header order, cookie crumbs).
shuffled = st.builds(
    lambda extra, valid: valid + extra,
    st.lists(st.tuples(st.sampled_from(NAMES), st.sampled_from(VALUES)), max_size=3),
    st.just([(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a.example"),
             (b":path", b"/")]),
).flatmap(st.permutations)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pairs=st.one_of(block, request_like, shuffled), f=flags, never=st.booleans())
def test_accept_is_never_looser_than_h2(pairs: list[tuple[bytes, bytes]], f: HV,
                                        never: bool) -> None:
    cls = NeverIndexedHeaderTuple if never else HeaderTuple
    headers = [cls(n, v) for n, v in pairs]
    # Twice: the second pass goes through the remembered-pairs cache.
    for _ in range(2):
        fast = accept(headers, f)
        stock = _h2_says(headers, f)
        if fast is not None:
            assert stock is not None, f"accepted what h2 rejects: {pairs} {f}"
            assert same_fields(fast, stock)


@pytest.mark.parametrize(
    ("pairs", "f"),
    [
        ([(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"a"), (b":path", b"/"),
          (b"user-agent", b"x"), (b"cookie", b"a=1"), (b"accept", b"*/*"), (b"cookie", b"b=2")],
         REQUEST),
        ([(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/up"), (b"host", b"h:1"),
          (b"te", b"trailers"), (b"content-length", b"5")], REQUEST),
        ([(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"5")],
         RESPONSE),
        ([(b":status", b"103"), (b"link", b"</s.css>; rel=preload")], RESPONSE),
        ([(b"grpc-status", b"0"), (b"x-checksum", b"abc")], TRAILER),
        ([], TRAILER),
    ],
)
def test_common_blocks_take_the_fast_path(pairs: list[tuple[bytes, bytes]], f: HV) -> None:
    headers = [HeaderTuple(n, v) for n, v in pairs]
    fast = accept(headers, f)
    stock = _h2_says(headers, f)
    assert fast is not None and stock is not None
    assert same_fields(fast, stock)


def test_samples_agree_with_h2() -> None:
    assert _h2headers.supported()
    refused = 0
    for headers, f in _h2headers._samples():
        fast = accept(headers, f)
        stock = _h2_says(headers, f)
        if fast is None:
            refused += 1
        else:
            assert stock is not None and same_fields(fast, stock)
    assert refused >= 15  # the malformed samples are there and are refused


@pytest.mark.parametrize(
    "pairs",
    [
        [(b":method", b"GET"), (b"x", b"y"), (b":scheme", b"http"), (b":path", b"/"),
         (b":authority", b"a")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a"),
         (b"cookie", b"a=1"), (b"cookie", b"")],
        [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a"),
         (b"host", b"a"), (b"host", b"a")],
    ],
)
def test_tricky_malformed_requests_are_refused(pairs: list[tuple[bytes, bytes]]) -> None:
    headers = [HeaderTuple(n, v) for n, v in pairs]
    assert _h2_says(headers, REQUEST) is None
    assert accept(headers, REQUEST) is None


def test_push_promise_and_connect_are_left_to_h2() -> None:
    connect = [HeaderTuple(b":method", b"CONNECT"), HeaderTuple(b":authority", b"a:443")]
    assert _h2_says(connect, REQUEST) is not None
    assert accept(connect, REQUEST) is None
    pp = HV(is_client=True, is_trailer=False, is_response_header=False, is_push_promise=True)
    assert accept([HeaderTuple(b":method", b"GET")], pp) is None


def test_credentials_and_long_values_are_not_remembered() -> None:
    _h2headers._VALID.clear()
    secret = HeaderTuple(b"authorization", b"Bearer s3cret")
    long = HeaderTuple(b"x-long", b"v" * 500)
    ok = HeaderTuple(b"x-ok", b"v")
    base = [HeaderTuple(n, v) for n, v in ((b":status", b"200"),)]
    assert accept([*base, secret, long, ok], RESPONSE) is not None
    assert ok in _h2headers._VALID
    assert secret not in _h2headers._VALID
    assert long not in _h2headers._VALID


def test_remembered_pairs_are_bounded() -> None:
    _h2headers._VALID.clear()
    for i in range(3 * _h2headers._VALID_MAX):
        accept([HeaderTuple(b":status", b"200"), HeaderTuple(b"x-n", str(i).encode())], RESPONSE)
        assert len(_h2headers._VALID) <= _h2headers._VALID_MAX


def _server_with_request(extra: list[tuple[bytes, bytes]]) -> tuple[object, object]:
    """(events or exception) from an aioh2s-configured h2 server receiving one request."""
    from aioh2s._h2ext import new_h2 as _new_h2
    from aioh2s.config import Config

    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, validate_outbound_headers=False,
                                  normalize_outbound_headers=False)
    )
    client.initiate_connection()
    server = _new_h2(False, Config())
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.send_headers(
        1, [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"),
            (b":path", b"/"), *extra], end_stream=True
    )
    try:
        return server, server.receive_data(client.data_to_send())
    except h2.exceptions.ProtocolError as e:
        return server, e


def test_aioh2s_streams_use_the_fast_path() -> None:
    server, events = _server_with_request([(b"cookie", b"a=1"), (b"cookie", b"b=2")])
    assert isinstance(events, list)
    assert isinstance(server.streams[1], FastInboundStream)  # type: ignore[attr-defined]
    req = events[0]
    assert isinstance(req, h2.events.RequestReceived)
    assert req.headers[-1] == (b"cookie", b"a=1; b=2")
    assert isinstance(req.headers[-1], NeverIndexedHeaderTuple)


@pytest.mark.parametrize(
    "bad",
    [[(b"Upper", b"x")], [(b"connection", b"close")], [(b"x", b" v")], [(b"te", b"gzip")],
     [(b"host", b"b")], [(b":path", b"/again")]],
)
def test_malformed_blocks_get_h2s_own_error(bad: list[tuple[bytes, bytes]]) -> None:
    server, result = _server_with_request(bad)
    # RFC 9113 §8.1.1: a malformed request is a stream error (RST_STREAM PROTOCOL_ERROR).
    assert isinstance(result, list), result
    (ev,) = result
    assert isinstance(ev, h2.events.StreamReset)
    assert ev.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR and not ev.remote_reset
    assert b"\x00\x00\x04\x03\x00\x00\x00\x00\x01" in server.data_to_send()  # RST_STREAM(1)
    # The judgement and its message are h2's: the fast path handed the block to h2's pipeline.
    headers = [HeaderTuple(n, v) for n, v in [
        (b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"a"), (b":path", b"/"),
        *bad]]
    with pytest.raises(h2.exceptions.ProtocolError) as stock:
        list(h2.utilities.validate_headers(
            h2.utilities.normalize_inbound_headers(headers, REQUEST), REQUEST))
    stream = server.streams[1]  # type: ignore[attr-defined]
    with pytest.raises(_h2headers.MalformedHeaders) as ours:
        stream._process_received_headers(headers, REQUEST, None)
    assert str(ours.value) == str(stock.value)


# -- outbound: aioh2s.headers.to_wire remembers fields it has checked --------------------


def test_to_wire_remembers_checked_fields_but_not_credentials() -> None:
    from aioh2s import headers as H

    H._FIELDS.clear()
    first = H.to_wire({":status": "200", "content-length": "5", "authorization": "Basic x",
                       "x-long": "v" * 500}, H.RESPONSE)
    again = H.to_wire({":status": "200", "content-length": "5", "authorization": "Basic x",
                       "x-long": "v" * 500}, H.RESPONSE)
    assert first == again
    assert (":status", "200") in H._FIELDS and ("content-length", "5") in H._FIELDS
    assert ("authorization", "Basic x") not in H._FIELDS
    assert ("x-long", "v" * 500) not in H._FIELDS
    assert isinstance(again[2], NeverIndexedHeaderTuple)
    # Unhashable pairs and values still work, and are checked.
    assert H.to_wire([[":status", bytearray(b"204")]], H.RESPONSE) == [(b":status", b"204")]
    with pytest.raises(H.ProtocolError):
        H.to_wire([[":status", "200"], ["x", bytearray(b"a\nb")]], H.RESPONSE)


def test_to_wire_remembered_fields_still_get_placement_checks() -> None:
    from aioh2s import headers as H

    H.to_wire({":status": "200", "x": "y"}, H.RESPONSE)  # both fields now remembered
    with pytest.raises(H.ProtocolError, match="after a regular header"):
        H.to_wire([("x", "y"), (":status", "200")], H.RESPONSE)
    with pytest.raises(H.ProtocolError, match="not allowed in trailers"):
        H.to_wire({":status": "200"}, H.TRAILERS)
    with pytest.raises(H.ProtocolError, match="unknown, misplaced or repeated"):
        H.to_wire({":status": "200"}, H.REQUEST)
    for i in range(3 * H._FIELDS_MAX):
        H.to_wire({":status": "200", "x-n": str(i)}, H.RESPONSE)
        assert len(H._FIELDS) <= H._FIELDS_MAX


def test_decoded_header_text_is_shared_but_bounded() -> None:
    from aioh2s import _h2headers as C

    C._TEXT.clear()
    a = C.decode([(b":method", b"GET"), (b"user-agent", b"ua"), (b"cookie", b"k=v")])
    b = C.decode([(b":method", b"GET"), (b"user-agent", b"ua"), (b"cookie", b"k=v")])
    assert list(a) == list(b) == [(":method", "GET"), ("user-agent", "ua"), ("cookie", "k=v")]
    assert list(a)[0][1] is list(b)[0][1]  # one shared "GET"
    assert b"k=v" not in C._TEXT  # cookie values are not kept
    # A peer sending endless distinct or long fields cannot grow the table.
    for i in range(3 * C._TEXT_MAX):
        C.decode([(b"x-%d" % i, b"v" * (i % 200)), (b"y" * 100, b"z")])
        assert len(C._TEXT) <= C._TEXT_MAX
    assert all(len(k) <= C._TEXT_MAX_LEN for k in C._TEXT)
    assert C.decode([(b"x-bad", b"\xff\xfe")]) == [("x-bad", "\udcff\udcfe")]
