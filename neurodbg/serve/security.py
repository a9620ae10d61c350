"""Who may talk to the server, and how much they may send.

- Bound to loopback, the server answers only requests whose Host header names
  loopback (a web page elsewhere cannot reach it through DNS rebinding).
- Bound anywhere else it requires an access token: `Authorization: Bearer T`, or
  the cookie set by opening `/?token=T` once in the browser.
- Request bodies above the limit are refused with 413 before they are read whole."""

from __future__ import annotations

import hmac
import json
from urllib.parse import parse_qs, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

COOKIE = "neurodbg_token"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_HOSTS


async def _reply(send: Send, status: int, detail: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}



def _hostname(host: str) -> str:
    """'127.0.0.1:8000' -> '127.0.0.1'; '[::1]:8000' -> '[::1]'."""
    return host[:host.find("]") + 1] if host.startswith("[") else host.split(":")[0]


class Guard:
    """ASGI middleware: host check, token check, body size limit."""

    def __init__(self, app: ASGIApp, *, token: str | None, loopback_only: bool, max_body_bytes: int) -> None:
        self.app, self.token, self.loopback_only, self.max_body = app, token, loopback_only, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if self.loopback_only and not is_loopback(_hostname(headers.get("host", ""))):
            await _reply(send, 421, "this server answers only requests addressed to 127.0.0.1 or localhost")
            return
        if self.token is not None and not self._authorised(scope, headers):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            offered = (query.get("token") or [""])[0]
            if scope["path"] == "/" and offered and hmac.compare_digest(offered, self.token):
                # the link printed at start-up: remember the token in a cookie and drop it from the address bar,
                # keeping the rest of the query (?lang=zh)
                cookie = f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                rest = urlencode([(k, v) for k, values in query.items() if k != "token" for v in values])
                location = f"/?{rest}" if rest else "/"
                await send({"type": "http.response.start", "status": 303,
                            "headers": [(b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode()),
                                        (b"content-length", b"0")]})
                await send({"type": "http.response.body", "body": b""})
                return
            await _reply(send, 401, "this server needs its access token: open the link printed when it started, "
                                    "or send 'Authorization: Bearer TOKEN'")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _reply(send, 413, f"request body over {self.max_body} bytes")
            return
        await self.app(scope, self._limited(receive), send)

    def _authorised(self, scope: Scope, headers: dict[str, str]) -> bool:
        assert self.token is not None
        auth = headers.get("authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip(), self.token):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value, self.token):
                return True
        return False

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    from fastapi import HTTPException

                    raise HTTPException(413, f"request body over {self.max_body} bytes")
            return message

        return limited


