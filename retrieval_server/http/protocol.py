"""uvicorn's HTTP protocol with a deadline on each request's head (request line and headers).

uvicorn bounds neither how long a new connection may stay silent nor how slowly a request's headers may
arrive: its keep-alive timer starts only after a response, and any byte received cancels it. A client that
opens connections and sends nothing, or sends its headers a byte every few seconds (slowloris), holds a
connection of the server's for ever. The request guard (:mod:`retrieval_server.http.guard`) bounds the body,
but only once the headers are complete and the app sees the request; this bounds what comes before.

The deadline starts when the connection opens and again when a response ends (the next request's head);
it is cleared when the headers are complete. On expiry the connection closes: with a ``408`` when part of a
request had arrived, silently when nothing had (an idle keep-alive connection, which a client's pool may
reuse at that moment, must not read an answer to a request it never sent).
It is a subclass of uvicorn's own httptools protocol, passed to uvicorn as its ``http`` class: uvicorn has
no setting for it (``docs/upstream.md``).
"""

from __future__ import annotations

import asyncio
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from retrieval_server.limits import Limits


def request_timeout_response(seconds: float) -> bytes:
    body = json.dumps({"detail": f"request headers not received within {seconds:g} s"}).encode()
    head = f"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    return head.encode() + body


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` that answers 408 and closes when a request's head takes too long."""

    header_timeout_s: float = Limits.header_timeout_s
    _head_deadline: asyncio.TimerHandle | None = None
    _head_started = False  # bytes of the next request arrived since the deadline was armed

    def data_received(self, data: bytes) -> None:
        self._head_started = True
        super().data_received(data)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._clear_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self.pipeline:  # a pipelined request's head is already in
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._clear_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._clear_head_deadline()
        self._head_started = False
        self._head_deadline = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _clear_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        request_running = self.cycle is not None and not self.cycle.response_complete
        if not request_running and not self.transport.is_closing():
            if self._head_started:
                self.transport.write(request_timeout_response(self.header_timeout_s))
            self.transport.close()


def protocol_with_header_timeout(seconds: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class for ``uvicorn.run(app, http=...)`` with this many seconds for a request's head."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": float(seconds)})
