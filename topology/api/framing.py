"""Where an HTTP/1.1 request ends in a byte buffer, without blocking on a socket.

The API's worker (topology/api/worker.py) reads each request whole in its
event loop before a thread sees it, so a client that sends slowly costs a
buffer, not a thread. This module only decides, from the bytes so far,
whether the request is complete, needs more, or must be refused; gunicorn's
own parser reads the request afterwards.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

HEADER_END = b"\r\n\r\n"


@dataclass(frozen=True)
class Refusal:
    status: str  # "413 Request Entity Too Large"
    type: str  # Neutron error type
    message: str
    # Body bytes the client announced and will still send (discarded before
    # closing, so the client gets to read the answer instead of a reset).
    discard: int = 0


@dataclass(frozen=True)
class Framing:
    header_end: Optional[int] = None  # offset just past the blank line, once seen
    # Offset just past the body: the whole request is in once the buffer is this long.
    end: Optional[int] = None
    expects_continue: bool = False
    refusal: Optional[Refusal] = None


def frame(buf: bytes | bytearray, max_header: int, max_body: int) -> Framing:
    """Where the first request in `buf` ends, once its header is in.

    Framing() while the header is incomplete; then header_end and end, or a
    refusal. The caller waits until the buffer is `end` bytes long.
    """
    cut = buf.find(HEADER_END, 0, max_header + len(HEADER_END))
    if cut < 0:
        if len(buf) > max_header:
            return Framing(refusal=Refusal(
                "431 Request Header Fields Too Large", "HTTPRequestHeaderFieldsTooLarge",
                f"Request header is larger than {max_header} bytes."))
        return Framing()
    header_end = cut + len(HEADER_END)
    lengths, chunked, expects = [], False, False
    for line in bytes(buf[:cut]).split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if not sep:
            continue  # gunicorn's parser refuses it with a 400
        name = name.strip().lower()
        if name == b"content-length":
            lengths.append(value.strip())
        elif name == b"transfer-encoding":
            chunked = True
        elif name == b"expect" and value.strip().lower() == b"100-continue":
            expects = True
    if chunked:
        # Every Neutron client sends Content-Length; reading a chunked body
        # whole would need its own framing, and a 411 is what HTTP offers.
        return Framing(header_end, refusal=Refusal(
            "411 Length Required", "HTTPLengthRequired",
            "A request body needs Content-Length; chunked transfer encoding is not accepted."))
    if len(set(lengths)) > 1 or any(not v.isdigit() for v in lengths):
        return Framing(header_end, refusal=Refusal(
            "400 Bad Request", "HTTPBadRequest", "Invalid Content-Length header."))
    length = int(lengths[0]) if lengths else 0
    if length > max_body:
        return Framing(header_end, refusal=Refusal(
            "413 Request Entity Too Large", "HTTPRequestEntityTooLarge",
            f"Request body is {length} bytes, more than the {max_body} bytes allowed.",
            discard=length - (len(buf) - header_end)))
    return Framing(header_end, header_end + length, expects and length > len(buf) - header_end)


def error_response(status: str, body: bytes) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection."""
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body
