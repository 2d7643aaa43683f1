"""Where a request ends in a buffer (topology/api/framing.py)."""
from __future__ import annotations

from topology.api.framing import error_response, frame

GET = b"GET /v2.0/networks HTTP/1.1\r\nHost: x\r\n\r\n"


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /v2.0/networks HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n" % len(body)
            + extra + b"\r\n" + body)


def test_a_header_in_pieces_is_incomplete_until_its_blank_line():
    for cut in range(len(GET)):
        f = frame(GET[:cut], 1024, 1024)
        assert f.end is None and f.refusal is None
    f = frame(GET, 1024, 1024)
    assert f.header_end == f.end == len(GET)


def test_a_body_is_waited_for_by_content_length():
    req = post(b'{"network": {}}')
    f = frame(req[:-3], 1024, 1024)
    assert f.end == len(req) and f.refusal is None
    # Bytes of a pipelined next request do not move the end.
    assert frame(req + GET, 1024, 1024).end == len(req)


def test_header_names_are_case_insensitive():
    req = b"POST / HTTP/1.1\r\ncOnTeNt-LeNgTh:  5 \r\n\r\nhello"
    assert frame(req, 1024, 1024).end == len(req)


def test_a_body_over_the_limit_is_refused_before_it_arrives():
    head = b"POST / HTTP/1.1\r\nContent-Length: 10485760\r\n\r\n"
    f = frame(head + b"x" * 100, 1024, 1048576)
    assert f.refusal.status.startswith("413")
    assert "10485760" in f.refusal.message and "1048576" in f.refusal.message
    assert f.refusal.discard == 10485760 - 100


def test_a_header_over_the_limit_is_a_431():
    f = frame(b"GET / HTTP/1.1\r\nX: " + b"a" * 2000, 1024, 1024)
    assert f.refusal.status.startswith("431")
    # Under the limit and unfinished: keep reading.
    assert frame(b"GET / HTTP/1.1\r\nX: " + b"a" * 900, 1024, 1024).refusal is None


def test_chunked_bodies_and_bad_lengths_are_refused():
    chunked = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    assert frame(chunked, 1024, 1024).refusal.status.startswith("411")
    for bad in (b"-1", b"abc", b"1e3"):
        f = frame(b"POST / HTTP/1.1\r\nContent-Length: " + bad + b"\r\n\r\n", 1024, 1024)
        assert f.refusal.status.startswith("400")
    two = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
    assert frame(two, 1024, 1024).refusal.status.startswith("400")


def test_expect_100_continue_is_noticed_only_while_the_body_is_missing():
    req = post(b"{}", b"Expect: 100-continue\r\n")
    assert frame(req[:-2], 1024, 1024).expects_continue
    assert not frame(req, 1024, 1024).expects_continue


def test_error_response_is_a_whole_closing_http_answer():
    raw = error_response("413 Request Entity Too Large", b'{"a": 1}')
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert b"Content-Length: 8" in head and b"Connection: close" in head
    assert body == b'{"a": 1}'
