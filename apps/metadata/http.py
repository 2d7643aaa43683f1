"""A small, strict HTTP/1.x request parser and response writer, with bounds.

Pure functions over bytes (no sockets), so the TCP endpoint can feed it
whatever has arrived and it answers one request at a time, which gives
pipelining and keep-alive for free. Bounds: the request head is at most
MAX_HEAD bytes and MAX_HEADERS lines, a body (only a token PUT might send
one) at most MAX_BODY bytes; chunked bodies are refused. A malformed request
gets a 4xx/5xx answer and the connection is closed after it.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

LOG = logging.getLogger(__name__)

MAX_HEAD = 8192
MAX_HEADERS = 64
MAX_TARGET = 2048
MAX_BODY = 4096

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 411: "Length Required",
    413: "Content Too Large", 414: "URI Too Long",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 505: "HTTP Version Not Supported",
}

_TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_METHOD = re.compile(rb"^[A-Z]{1,16}$")
_TARGET = re.compile(rb"^[\x21-\x7e]+$")
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


@dataclass(frozen=True)
class Request:
    method: str
    target: str                 # origin-form path, query string removed
    version: str                # "HTTP/1.0" or "HTTP/1.1"
    headers: dict[str, str]     # lower-case names
    body: bytes = b""

    def header(self, name: str) -> Optional[str]:
        return self.headers.get(name.lower())

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in (self.header("connection") or "").split(",")}
        if self.version == "HTTP/1.1":
            return "close" not in tokens
        return "keep-alive" in tokens


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class ParseError:
    status: int


def _find_head_end(buf: bytes | bytearray) -> tuple[int, int]:
    """(end of head, length of terminator), or (-1, 0)."""
    limit = MAX_HEAD + 4
    i = buf.find(b"\r\n\r\n", 0, limit)
    j = buf.find(b"\n\n", 0, limit)
    if i < 0 and j < 0:
        return -1, 0
    if i >= 0 and (j < 0 or i <= j):
        return i, 4
    return j, 2


def parse_request(buf: bytes | bytearray) -> tuple[Optional[Request | ParseError], int]:
    """Parse one request from the front of buf.

    Returns (None, 0) when more bytes are needed, (Request, consumed) for a
    request, (ParseError, 0) for one that cannot be answered normally.
    """
    start = 0
    while start < len(buf) and buf[start:start + 1] in (b"\r", b"\n"):
        start += 1                                  # RFC 9112 2.2: leading empty lines
        if start > 16:
            return ParseError(400), 0
    view = bytes(buf[start:start + MAX_HEAD + 4])
    end, term = _find_head_end(view)
    if end < 0:
        return (ParseError(431), 0) if len(view) > MAX_HEAD else (None, 0)
    if end > MAX_HEAD:
        return ParseError(431), 0
    lines = view[:end].replace(b"\r\n", b"\n").split(b"\n")
    if len(lines) - 1 > MAX_HEADERS:
        return ParseError(431), 0
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        return ParseError(400), 0
    method, target, version = parts
    if not _METHOD.match(method):
        return ParseError(400), 0
    if version not in (b"HTTP/1.0", b"HTTP/1.1"):
        return ParseError(505 if version.startswith(b"HTTP/") else 400), 0
    if len(target) > MAX_TARGET:
        return ParseError(414), 0
    if not _TARGET.match(target):
        return ParseError(400), 0
    if target.lower().startswith(b"http://"):       # absolute-form: keep the path
        slash = target.find(b"/", 7)
        target = target[slash:] if slash >= 0 else b"/"
    if not target.startswith(b"/"):
        return ParseError(400), 0
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.match(name):     # also refuses obs-fold (leading space)
            return ParseError(400), 0
        value = value.strip(b" \t")
        if _VALUE_BAD.search(value):
            return ParseError(400), 0
        key = name.decode("ascii").lower()
        text = value.decode("latin-1")
        if key in headers:
            if key in ("content-length", "host"):
                if headers[key] != text:
                    return ParseError(400), 0
                continue
            text = headers[key] + ", " + text
        headers[key] = text
    if "transfer-encoding" in headers:
        return ParseError(501), 0
    vers = version.decode("ascii")
    if vers == "HTTP/1.1" and "host" not in headers:
        return ParseError(400), 0
    length = 0
    if "content-length" in headers:
        cl = headers["content-length"]
        if not cl.isdigit() or len(cl) > 9:
            return ParseError(400), 0
        length = int(cl)
        if length > MAX_BODY:
            return ParseError(413), 0
    head_len = start + end + term
    if len(buf) < head_len + length:
        return None, 0
    body = bytes(buf[head_len:head_len + length])
    path = target.split(b"?", 1)[0].split(b"#", 1)[0].decode("ascii")
    return Request(method.decode("ascii"), path, vers, headers, body), head_len + length


def render(resp: Response, *, head_only: bool = False, keep_alive: bool = True) -> bytes:
    reason = REASONS.get(resp.status, "Unknown")
    lines = [f"HTTP/1.1 {resp.status} {reason}",
             f"Content-Type: {resp.content_type}",
             f"Content-Length: {len(resp.body)}",
             "Connection: " + ("keep-alive" if keep_alive else "close"),
             "Server: vmflow-metadata"]
    lines += [f"{k}: {v}" for k, v in resp.headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + resp.body


def error_response(status: int) -> Response:
    return Response(status, (f"{status} {REASONS.get(status, 'Error')}\n").encode())


class HttpSession:
    """The StreamHandler of one connection: one request in, one response out."""

    def __init__(self, serve: Callable[[Request], Response],
                 count: Optional[Callable[[str], None]] = None):
        self.serve = serve
        self.count = count if count is not None else (lambda name: None)

    def on_data(self, inbuf: bytearray) -> tuple[bytes, bool]:
        if not inbuf:
            return b"", False
        req, used = parse_request(inbuf)
        if req is None:
            return b"", False
        if isinstance(req, ParseError):
            self.count(f"metadata.http.bad_request_{req.status}")
            inbuf.clear()
            return render(error_response(req.status), keep_alive=False), True
        del inbuf[:used]
        try:
            resp = self.serve(req)
        except Exception:                           # a bug must not kill the connection table
            LOG.exception("metadata: serving %s %s failed", req.method, req.target)
            self.count("metadata.http.internal_error")
            resp = error_response(500)
        self.count(f"metadata.http.status_{resp.status}")
        keep = req.keep_alive
        return render(resp, head_only=req.method == "HEAD", keep_alive=keep), not keep
