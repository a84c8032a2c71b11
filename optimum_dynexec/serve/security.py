"""ASGI middleware in front of every route: the API key and the request size limit."""

from __future__ import annotations

import hmac
import json

from .errors import error_body

OPEN_PATHS = ("/health",)  # answered without the key: load balancers and Ray probe them


class _TooLarge(Exception):
    pass


async def _send_error(send, status: int, message: str, code: str, headers: list | None = None) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


class GuardMiddleware:
    """Refuses a request without the API key (401, when a key is set; `Authorization: Bearer KEY` or `api-key: KEY`)
    and a body larger than `max_body_bytes` (413), before any route reads it.

    Args:
        app: the ASGI app to guard.
        api_key (`str`, *optional*): the key clients must send; `None` lets everyone in.
        max_body_bytes (`int`): the largest request body accepted.
    """

    def __init__(self, app, api_key: str | None, max_body_bytes: int):
        self.app, self.api_key, self.max_body_bytes = app, api_key, max_body_bytes

    def _authorized(self, scope) -> bool:
        if self.api_key is None or scope["path"] in OPEN_PATHS:
            return True
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"authorization", b"").decode("latin-1")
        token = given[7:].strip() if given.lower().startswith("bearer ") else headers.get(b"api-key", b"").decode()
        return hmac.compare_digest(token.encode(), self.api_key.encode())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not self._authorized(scope):
            return await _send_error(
                send,
                401,
                "Missing or wrong API key: send `Authorization: Bearer <key>`.",
                "invalid_api_key",
                [(b"www-authenticate", b"Bearer")],
            )
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_large = f"The request body is larger than this server's limit of {self.max_body_bytes} bytes."
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            return await _send_error(send, 413, too_large, "request_too_large")
        received, started, overflow = 0, False, False

        async def limited_receive():
            nonlocal received, overflow
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    overflow = True
                    raise _TooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if overflow:  # the route saw a broken body: whatever it answers, the client gets the 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await _send_error(send, 413, too_large, "request_too_large")
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLarge:
            if not started:
                await _send_error(send, 413, too_large, "request_too_large")
