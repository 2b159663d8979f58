"""How refusals reach the page (shared by every tab), and the server's side of signing in.

Gradio keeps sign-ins as random tokens in the
`tokens` dict of its FastAPI app (token -> user name, read on every request through its
cookie) and calls an `auth` callable from its `/login` route on the event loop. We put
our own `/login` route in its place (the password check runs in a small thread pool,
behind `LoginGuard`) and our own `SessionTokens` in place of the dict (idle sessions end).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable

import gradio as gr
from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.middleware import Middleware
from starlette.routing import Route

from rlhf.auth import AccountSettings, AuthError, LoginGuard, PermissionDenied, User, authenticate, session_user
from rlhf.errors import UserError
from rlhf.collect.formats import FormatError
from rlhf.limits import LIMITS
from rlhf.preference.ranking import RankingError

REFUSALS = (UserError, RankingError, FormatError, PermissionDenied)
# Every event has a finite concurrency limit. Sampling for researchers (side by side,
# arena battles, evaluations) shares one small one, page and API alike: it runs in its
# own child process, one request at a time, so more at once would only hold threads.
REQUESTS = {"concurrency_limit": LIMITS.request_concurrency}
RESEARCH_SAMPLING = {"concurrency_id": "research-sampling", "concurrency_limit": LIMITS.research_concurrency}
MAX_NAME_CHARS, MAX_PASSWORD_CHARS = 64, 1024  # checked before hashing: scrypt of a huge string is work


def as_text(message: str) -> str:
    """A message for Gradio's toasts, which render HTML: `&` and `<` escaped, so a name or
    a model's text quoted in it can open no tag (a lone `>`, as in 'C > B', stays)."""
    return message.replace("&", "&amp;").replace("<", "&lt;")


def refusal(message: str) -> gr.Error:
    """The one way a handler refuses: a toast on the page, an exception for API clients."""
    return gr.Error(as_text(message), print_exception=False)


def warning(message: str) -> None:
    gr.Warning(as_text(message))


@contextmanager
def user_error():
    """Refusals raised below the app become a `refusal`."""
    try:
        yield
    except REFUSALS as error:
        raise refusal(str(error)) from None


class SessionTokens(dict):
    """Gradio's sign-in tokens (token -> user name) with an idle limit: a token not used
    for `idle_seconds` is dropped at its next use, so that request and every later one is
    refused as signed out. Kept in memory, like Gradio's own: a restart signs everyone out."""

    def __init__(self, idle_seconds: float, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.idle_seconds, self.clock = idle_seconds, clock
        self._last_used: dict[str, float] = {}
        self._lock = threading.Lock()

    def __setitem__(self, token: str, name: str) -> None:
        with self._lock:
            super().__setitem__(token, name)
            self._last_used[token] = self.clock()

    def __delitem__(self, token: str) -> None:
        with self._lock:
            super().__delitem__(token)
            self._last_used.pop(token, None)

    def get(self, token, default=None):
        if token is None:
            return default
        now = self.clock()
        with self._lock:
            name = super().get(token)
            if name is None:
                return default
            if now - self._last_used.get(token, now) > self.idle_seconds:
                super().pop(token, None)
                self._last_used.pop(token, None)
                return default
            self._last_used[token] = now
            return name

    def end_user(self, name: str) -> int:
        """Sign `name` out everywhere (disabled, or given a new password); returns how many sessions ended."""
        with self._lock:
            ended = [token for token, holder in self.items() if holder == name]
            for token in ended:
                super().pop(token, None)
                self._last_used.pop(token, None)
        return len(ended)


def _yield_to_requests() -> None:
    """Lower the calling thread's CPU priority (Linux nices threads one by one): a burst of
    password checks then takes only the CPU that signed-in users' requests leave over."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux, or not allowed: checks run at normal priority
        pass


class _HoldSignInsUntil:
    """Pure ASGI: a POST to /login waits until `installed` is set; everything else passes."""

    def __init__(self, app, installed: threading.Event):
        self.app, self.installed = app, installed

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope.get("method") == "POST" and scope.get("path", "").rstrip("/") == "/login":
            while not self.installed.is_set():
                await asyncio.sleep(0.01)
        await self.app(scope, receive, send)


class SignIn:
    """The server's sign-in: throttled, checked off the event loop, ending in a session token."""

    def __init__(self, store, settings: AccountSettings = AccountSettings()):
        self.store = store
        self.settings = settings
        self.guard = LoginGuard(settings)
        self.tokens = SessionTokens(3600 * settings.idle_hours)
        self._pool = ThreadPoolExecutor(max_workers=settings.check_threads, thread_name_prefix="login",
                                        initializer=_yield_to_requests)
        self._installed = threading.Event()

    def check(self, name: str, password: str, address: str) -> User:
        """The user, or AuthError with the one sentence the login page and API show. Runs
        in the pool; the guard has admitted the try."""
        try:
            user = authenticate(self.store, name, password)
        except BaseException:
            self.guard.settle(name, address, ok=False)
            raise
        self.guard.settle(name, address, ok=user is not None)
        if user is None:
            raise AuthError("Wrong user name or password.")
        try:
            session_user(self.store, user.name, changing_password=True)
        except PermissionDenied as refused:
            raise AuthError(str(refused)) from None
        return user

    async def login(self, request: Request) -> JSONResponse:
        """POST /login with form fields username and password, as Gradio's page and
        gradio_client send them; the cookies set on success are Gradio's own."""
        form = await request.form()
        name, password = str(form.get("username") or "").strip(), str(form.get("password") or "")
        address = request.client.host if request.client else "unknown"
        try:
            if len(name) > MAX_NAME_CHARS or len(password) > MAX_PASSWORD_CHARS:
                raise AuthError(f"A user name has at most {MAX_NAME_CHARS} characters and a password at most "
                                f"{MAX_PASSWORD_CHARS}.")
            self.guard.admit(name, address)  # in memory, quick: refused tries never reach the pool
            user = await asyncio.get_running_loop().run_in_executor(self._pool, self.check, name, password, address)
        except AuthError as refused:
            return JSONResponse({"detail": str(refused)}, status_code=400)
        token = secrets.token_urlsafe(32)
        self.tokens[token] = user.name
        response = JSONResponse({"success": True})
        cookie_id = request.app.cookie_id
        response.set_cookie(key=f"access-token-{cookie_id}", value=token, httponly=True, samesite="none",
                            secure=True)
        response.set_cookie(key=f"access-token-unsecure-{cookie_id}", value=token, httponly=True)
        return response

    def gate(self) -> Middleware:
        """Middleware that holds a sign-in sent before `install` (Gradio answers its page as
        soon as it listens, a moment before launch returns) until our route is in place,
        instead of letting Gradio's own /login refuse it."""
        return Middleware(_HoldSignInsUntil, installed=self._installed)

    def install(self, server_app) -> None:
        """Put our tokens and /login route in place of Gradio's, right after launch."""
        server_app.tokens = self.tokens
        server_app.router.routes[:] = [
            route for route in server_app.router.routes
            if not (getattr(route, "path", None) in ("/login", "/login/") and "POST" in (route.methods or ()))
        ]
        for path in ("/login", "/login/"):
            server_app.router.routes.insert(0, Route(path, self.login, methods=["POST"]))
        self._installed.set()

    def rules(self) -> str:
        """The login page's message: the page itself only says "Incorrect credentials" for
        every refusal, so the rules behind a refusal are stated there once, plainly."""
        s = self.settings
        return (f"Sign in to the RLHF Workbench. After {s.free_failures} wrong passwords each further try waits "
                f"longer, {s.lock_failures} in a row lock the account for {s.lock_minutes:g} minutes, and a "
                f"session ends after {s.idle_hours:g} hours without use.")

    def end_sessions(self, name: str) -> None:
        """`name` is signed out everywhere and any lock on the name lifted (an admin acted)."""
        self.tokens.end_user(name)
        self.guard.unlock(name)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
