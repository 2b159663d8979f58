"""Security headers on every response the server sends: page, API, static files, errors.

The Content-Security-Policy is the second wall behind `app.render`: if text ever did
become markup, the browser would still fetch nothing from another origin, post no form
elsewhere, and load in no other site's frame. It is as tight as Gradio 6's page allows:

- `script-src 'unsafe-inline'`: Gradio writes its config into inline `<script>` tags
  (`window.gradio_config`), and the keyboard shortcuts come in the page's head;
- `script-src 'unsafe-eval'`: Gradio's HTML component (and so `RenderedText`) turns its
  template into a function (`Function(...)`) on every render;
- `style-src 'unsafe-inline'`: Svelte and Gradio set styles inline;
- `img-src` adds `data:` (Gradio's inline icons); everything else, fonts included, comes
  from the server itself, and `connect-src 'self'` keeps Gradio's fetch and server-sent
  events at home.

Checked in Chromium by tests/browser/test_hostile_text.py on every tab, which fails on any
violation: without `'unsafe-eval'` every gr.HTML stays empty ("Error evaluating template").
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self' 'unsafe-inline' 'unsafe-eval'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "connect-src 'self'",
    "frame-src 'none'",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


class SecurityHeaders:
    """Pure ASGI middleware (streams and server-sent events pass untouched): sets the
    headers above on every HTTP response, replacing any the app set itself."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                ours = {name for name, _ in self.headers}
                kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in ours]
                message["headers"] = [*kept, *self.headers]
            await send(message)

        await self.app(scope, receive, with_headers)


def middleware() -> list[Middleware]:
    """What `gr.Blocks.launch(app_kwargs={"middleware": ...})` hands to FastAPI."""
    return [Middleware(SecurityHeaders)]
