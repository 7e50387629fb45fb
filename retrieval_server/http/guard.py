"""What every request passes before the app sees it: the key, the body's size, the body's pace.

An ASGI middleware, so it acts before FastAPI reads or parses anything:

* **authentication first**: with an API key, a request without the right bearer token is answered 401
  from its headers alone; its body is never read (a stranger cannot make the server buffer or parse
  megabytes). Only ``GET /health`` is open, and it shows readiness only (the app's business);
* **size**: a declared ``Content-Length`` over the limit is answered 413 at once; a chunked body is
  counted as it arrives and cut off with 413 when it passes the limit;
* **pace**: the whole body must arrive within ``body_timeout_s``, or the answer is 408 and the
  connection closes (a client that sends a few bytes and stalls, or a chunked body that never ends,
  no longer holds a connection and a buffer for ever).

The body, once complete, is handed to the app unchanged.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

OPEN_PATHS = frozenset({"/health"})


def bearer_token_ok(headers: dict[str, str], api_key: str | None) -> bool:
    """Constant-time check of ``Authorization: Bearer <key>``; always true without a key."""
    if api_key is None:
        return True
    header = headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else ""
    return hmac.compare_digest(token.encode(), api_key.encode())


class RequestGuard:
    def __init__(
        self, app: Any, *, api_key: str | None, max_body_bytes: int, body_timeout_s: float, on_reject: Callable[[int], None] | None = None
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.on_reject = on_reject or (lambda status: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if scope["path"] not in OPEN_PATHS and not bearer_token_ok(headers, self.api_key):
            await self._answer(send, 401, "missing or wrong bearer token (Authorization: Bearer <key>)", {"www-authenticate": "Bearer"})
            return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._answer(send, 400, "Content-Length must be a non-negative integer")
                return
            if int(declared) > self.max_body_bytes:
                await self._answer(send, 413, f"request body over the {self.max_body_bytes}-byte limit (Content-Length {declared})")
                return
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        try:
            body = await asyncio.wait_for(self._read_body(receive), self.body_timeout_s)
        except _TooLarge:
            await self._answer(send, 413, f"request body over the {self.max_body_bytes}-byte limit")
            return
        except asyncio.TimeoutError:
            await self._answer(send, 408, f"request body not received within {self.body_timeout_s:g} s")
            return
        except _Disconnected:
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read_body(self, receive: Receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _answer(self, send: Send, status: int, detail: str, extra: dict[str, str] | None = None) -> None:
        self.on_reject(status)
        body = json.dumps({"detail": detail}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")]
        headers += [(k.encode(), v.encode()) for k, v in (extra or {}).items()]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


class _Disconnected(Exception):
    pass


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the already-read body once, then defers to the real one (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
