"""uvicorn's httptools HTTP/1.1 protocol with the two bounds it lacks: the size of a
request head and the time a client may take to send its request.

Measured against ``nextclick serve`` before this existed: a request with an 8 MB header
was read whole and answered 200 (httptools/llhttp sets no header limit, and uvicorn's
``h11_max_incomplete_event_size`` only applies to its h11 protocol), and 40 connections
sending their headers a byte at a time were all still open after 20 s (uvicorn's
``timeout_keep_alive`` only runs between requests; a connection that has started one, or
never sends a byte, is kept forever). Here the head is counted as it arrives and refused
with 431 past ``max_head_bytes``; a deadline of ``read_timeout`` seconds runs from the
connection (or the first byte of the next request on a kept-alive one) until the request
is complete: a head not complete by then gets 408, a body not complete is cut off (the
app sees the client disconnect).

``nextclick serve`` passes ``functools.partial(BoundedHttpToolsProtocol, ...)`` as
uvicorn's ``http`` class: a partial of a module-level class pickles, so ``--workers N``
processes get the same bounds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.errors import error_body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, max_head_bytes: int, read_timeout: float,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head_bytes = max_head_bytes
        self.read_timeout = read_timeout
        self._in_head = True  # no request head completed since the last request ended
        self._raw_head_bytes = 0  # bytes received while in a head (an upper bound)
        self._head_bytes = 0  # the parsed head: request target and header lines
        self._oversized = False
        self._deadline: asyncio.TimerHandle | None = None

    # ---- the deadline --------------------------------------------------------------------
    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._timed_out)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._in_head:
            self._refuse(408, "request_timeout",
                         f"the request was not received within {self.read_timeout:g} s")
        else:
            self.transport.close()  # mid-body: the app sees http.disconnect

    def _refuse(self, status: int, code: str, message: str) -> None:
        body = error_body(code, message)
        self.transport.write(b"".join([
            STATUS_LINE[status], b"content-type: application/json\r\n",
            b"content-length: ", str(len(body)).encode(), b"\r\n",
            b"connection: close\r\n\r\n", body]))
        self.transport.close()

    # ---- protocol and parser callbacks ---------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is bounded too

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Two counts: the bytes received while a head is incomplete bound what the parser
        # buffers (it holds a header until it is whole, so an 8 MB header never reaches a
        # callback); a completed head is measured exactly by the parser callbacks, so
        # body bytes that share a read with a small head never count against it.
        if self._oversized:
            return
        if self._in_head:
            self._raw_head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._oversized or (self._in_head and self._raw_head_bytes > self.max_head_bytes):
            self._oversized = True
            self._refuse(431, "request_header_too_large",
                         f"the request line and headers exceed {self.max_head_bytes} bytes")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_bytes += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_bytes += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._raw_head_bytes = 0
        if self._head_bytes > self.max_head_bytes:
            self._oversized = True  # refused by data_received; the app never sees it
            return
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._oversized:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._oversized:
            return
        super().on_message_complete()
        self._disarm()
        self._in_head = True
