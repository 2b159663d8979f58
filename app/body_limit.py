"""An ASGI middleware that refuses request bodies over a size, before the app reads them.

Gradio parses a request's JSON whole before any handler can look at it, so a 20 MB
ranking string cost the server 24 s and 1.7 GiB before the ranking's own check could
refuse it. This middleware answers 413 with one sentence instead: at once when the
declared Content-Length is too large, and, for a body without one (chunked), as soon as
the bytes received pass the cap; what the app had started to answer is then dropped.
Uploads (Gradio's upload route) get their own, larger cap.
"""

from __future__ import annotations

import json

UPLOAD_PATH = "/gradio_api/upload"


class BodyTooLarge(Exception):
    """Raised into the app when a streamed body passes the cap; the middleware answers 413."""


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB"


class BodyLimit:
    """Refuse bodies over `max_bytes` (over `upload_bytes` on the upload route) with 413."""

    def __init__(self, app, max_bytes: int, upload_bytes: int):
        self.app, self.max_bytes, self.upload_bytes = app, max_bytes, upload_bytes

    def limit(self, path: str) -> int:
        return self.upload_bytes if path.rstrip("/").endswith(UPLOAD_PATH) else self.max_bytes

    async def refuse(self, send, limit: int) -> None:
        what = "An upload" if limit == self.upload_bytes else "A request"
        body = json.dumps({"error": f"{what} may be at most {_mib(limit)}; send less (split the file, "
                                    "or shorten the text)."}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)  # no body to count
        limit = self.limit(scope.get("path", ""))
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            return await self.refuse(send, limit)
        received, exceeded, started = 0, False, False

        async def counted_receive():
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    exceeded = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if exceeded:
                return  # the app's own answer to a cut-off body: ours is sent instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:  # BodyTooLarge, or whatever the app made of it
            if not exceeded:
                raise
        if exceeded and not started:
            await self.refuse(send, limit)
