"""Users, roles and passwords.

Passwords are stored as self-describing scrypt hashes,
``scrypt$16384$8$1$<salt base64>$<hash base64>``, so that the cost parameters can be
raised later without breaking the hashes already stored.

Roles: an *annotator* ranks; a *researcher* also configures the queue, edits the
guidelines and marks gold items; an *admin* also manages users.

Sign-in is guarded by `LoginGuard`: failed passwords slow down further tries for the same
user name and for the same client address, with a growing wait, and enough failures in a
row lock the user name for a while. That state lives in the server's memory only: a
restart forgets waits and locks (a lock survives nothing more than the process), which
is enough to turn an online guessing attack from thousands of tries a minute into a
handful an hour.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from rlhf.errors import UserError
from storage import users

log = logging.getLogger(__name__)

ROLES = ("annotator", "researcher", "admin")
STAFF = ("researcher", "admin")  # may change how annotation works
MIN_PASSWORD_LENGTH = 8
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P, _SALT_BYTES, _HASH_BYTES = 2**14, 8, 1, 16, 32


class PermissionDenied(PermissionError):
    """The user may not do this, in one sentence."""


class AuthError(UserError):
    """A user cannot be created as asked (bad name, role or password), in one sentence."""


@dataclass(frozen=True)
class User:
    name: str
    role: str


# -- passwords --------------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def hash_password(password: str) -> str:
    """A salted scrypt hash of `password` that names its own parameters."""
    salt = secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.scrypt(password.encode("utf-8"), salt=salt, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P,
                            dklen=_HASH_BYTES)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches `stored`; False for a wrong password and for a
    stored value that is not one of our hashes (never an exception at login)."""
    try:
        scheme, n, r, p, salt, expected = stored.split("$")
        if scheme != "scrypt":
            return False
        expected_bytes = base64.b64decode(expected, validate=True)
        digest = hashlib.scrypt(password.encode("utf-8"), salt=base64.b64decode(salt, validate=True),
                                n=int(n), r=int(r), p=int(p), dklen=len(expected_bytes))
    except (ValueError, TypeError, AttributeError):
        return False
    # constant-time comparison: response time says nothing about how much matched
    return hmac.compare_digest(digest, expected_bytes)


# A hash of nothing in particular, checked against when the user does not exist, so
# that "no such user" takes as long as "wrong password" (names are not revealed by timing).
_DUMMY_HASH = hash_password(secrets.token_hex(8))


# -- roles ------------------------------------------------------------------------------


def require_role(user: User | None, *roles: str) -> User:
    """Return `user` if their role is one of `roles`; raise PermissionDenied otherwise
    (None means nobody is logged in)."""
    if user is None:
        raise PermissionDenied("Please log in first.")
    if user.role not in roles:
        allowed = " or ".join(f"{role}s" for role in roles) or "nobody"
        article = "an" if user.role[:1] in "aeiou" else "a"
        raise PermissionDenied(f"Only {allowed} may do this, and {user.name} is {article} {user.role}.")
    return user


# -- users in the store -----------------------------------------------------------------


def check_new_user(name: str, role: str, password: str) -> str:
    """The cleaned name, after checking name, role and password; AuthError otherwise."""
    name = (name or "").strip()
    if not _NAME.fullmatch(name):
        raise AuthError(
            f"'{name}' cannot be a user name: use up to 64 letters, digits, '.', '_', '-' or '@', "
            "starting with a letter or digit."
        )
    if role not in ROLES:
        raise AuthError(f"'{role}' is not a role: choose {', '.join(ROLES)}.")
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AuthError(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    return name


def create_user(store, name: str, role: str, password: str, must_change_password: bool = False) -> User:
    """Add a user to `store` (a storage.db.Store); a taken name raises AuthError.
    `must_change_password` (the first admin's shown-once password) makes every request
    but a password change refuse until the user has chosen their own."""
    name = check_new_user(name, role, password)
    password_hash = hash_password(password)  # slow on purpose: done before the transaction
    try:
        with store.transaction() as cur:
            users.add(cur, name, role, password_hash, must_change_password)
    except ValueError as error:
        raise AuthError(str(error)) from None
    return User(name, role)


# What an imported annotator's account holds instead of a hash: no password matches it
# (verify_password refuses anything that is not one of our scrypt hashes), so the account
# names the person behind imported rankings and cannot sign in until an admin sets a password.
NO_PASSWORD = "imported: no password set"


def add_imported_annotators(cur, names: list[str]) -> list[str]:
    """Create, inside the caller's transaction, an annotator account without a password
    for each name not yet a user (the `<tool>:<annotator>` of imported rankings); returns
    the names created. Existing users, whatever their role, are left as they are."""
    created = [name for name in dict.fromkeys(names) if users.get(cur, name) is None]
    for name in created:
        users.add(cur, name, "annotator", NO_PASSWORD)
    return created


def authenticate(store, name: str, password: str) -> User | None:
    """The user if the name and password match, else None."""
    found = users.get(store.cursor(), (name or "").strip())
    if found is None:
        verify_password(password or "", _DUMMY_HASH)
        return None
    if not verify_password(password or "", found["password_hash"]):
        return None
    return User(found["name"], found["role"])


def get_user(store, name: str) -> User | None:
    found = users.get(store.cursor(), name)
    return User(found["name"], found["role"]) if found else None


def session_user(store, name: str | None, changing_password: bool = False) -> User:
    """The signed-in user behind a request, looked up again on every request: an account
    disabled since sign-in is refused at once, and one that must choose a new password
    may do nothing else (`changing_password` marks the one request that may)."""
    found = users.get(store.cursor(), name) if name else None
    if found is None:
        raise PermissionDenied("Please log in first.")
    if found["disabled"]:
        raise PermissionDenied(f"The account '{found['name']}' is disabled; ask an admin to enable it.")
    if found["must_change_password"] and not changing_password:
        raise PermissionDenied(f"{found['name']} must choose a new password first: use the Account tab "
                               "(or the /change_password endpoint).")
    return User(found["name"], found["role"])


def _existing(cur, name: str) -> dict:
    found = users.get(cur, (name or "").strip())
    if found is None:
        raise AuthError(f"There is no user named '{name}'; `rlhf users list` shows who there is.")
    return found


def _check_password(password: str) -> None:
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise AuthError(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")


def set_password(store, name: str, password: str, must_change_password: bool = False) -> User:
    """Give `name` a new password (an admin's reset, or `rlhf users passwd`)."""
    _check_password(password)
    password_hash = hash_password(password)
    with store.transaction() as cur:
        found = _existing(cur, name)
        users.set_password(cur, found["name"], password_hash, must_change_password)
    return User(found["name"], found["role"])


def change_own_password(store, name: str, current: str, new: str) -> User:
    """A signed-in user replaces their password; the current one must be given again, so
    a browser left open does not let someone else take the account over."""
    found = _existing(store.cursor(), name)
    if not verify_password(current or "", found["password_hash"]):
        raise AuthError("The current password is wrong; nothing was changed.")
    if new == current:
        raise AuthError("The new password must differ from the current one.")
    return set_password(store, name, new)


def _keep_an_admin(cur, found: dict) -> None:
    """Refuse a change that would leave no enabled admin (nobody could manage users)."""
    if found["role"] == "admin" and not found["disabled"] and users.count_admins(cur, enabled_only=True) <= 1:
        raise AuthError(f"{found['name']} is the last enabled admin; make another admin first.")


def set_role(store, name: str, role: str) -> User:
    if role not in ROLES:
        raise AuthError(f"'{role}' is not a role: choose {', '.join(ROLES)}.")
    with store.transaction() as cur:
        found = _existing(cur, name)
        if role != "admin":
            _keep_an_admin(cur, found)
        users.set_role(cur, found["name"], role)
    return User(found["name"], role)


def set_disabled(store, name: str, disabled: bool) -> User:
    """Disable (or enable again) an account; its password and rankings are kept."""
    with store.transaction() as cur:
        found = _existing(cur, name)
        if disabled:
            _keep_an_admin(cur, found)
        users.set_disabled(cur, found["name"], disabled)
    return User(found["name"], found["role"])


def list_users(store) -> pd.DataFrame:
    """name, role, disabled, must_change_password, created_at for every user (no password hashes)."""
    return users.list_users(store.cursor())


def count_admins(store) -> int:
    return users.count_admins(store.cursor())


# -- sign-in throttling -----------------------------------------------------------------


@dataclass(frozen=True)
class AccountSettings:
    """How sign-in and sessions are guarded (`rlhf serve` options)."""

    free_failures: int = 3       # failed tries, per user name and per address, before any wait
    first_wait_s: float = 1.0    # the wait after those; it doubles with each further failure
    max_wait_s: float = 60.0     # ... up to this
    lock_failures: int = 10      # failures in a row that lock a user name
    lock_minutes: float = 15.0   # for this long (in memory: a restart lifts it)
    idle_hours: float = 8.0      # a session unused this long is ended
    check_threads: int = 2       # password checks at once (scrypt is slow on purpose)

    def __post_init__(self):
        for name in ("lock_failures", "lock_minutes", "idle_hours", "check_threads", "first_wait_s", "max_wait_s"):
            if not getattr(self, name) > 0:
                raise AuthError(f"{name.replace('_', ' ')} must be above 0, not {getattr(self, name)!r}.")


@dataclass
class _Strikes:
    failures: int = 0        # in a row, not yet forgiven
    in_flight: int = 0       # tries being checked now
    wait_until: float = 0.0
    locked_until: float = 0.0
    last_seen: float = 0.0


class LoginRefused(AuthError):
    """A sign-in not even checked (too many failures), in one sentence."""


@dataclass
class LoginGuard:
    """Counts failed sign-ins per user name and per client address and says when the
    next try may be checked. Thread-safe; the clock is a parameter for tests."""

    settings: AccountSettings = field(default_factory=AccountSettings)
    clock: Callable[[], float] = time.monotonic
    max_keys: int = 10_000  # forgotten oldest-first beyond this: a flood of names cannot fill memory

    def __post_init__(self):
        self._lock = threading.Lock()
        self._strikes: dict[tuple[str, str], _Strikes] = {}

    def admit(self, name: str, address: str) -> None:
        """Reserve one check for (name, address), or raise LoginRefused with the wait."""
        now = self.clock()
        with self._lock:
            by_name, by_address = self._get(("name", name), now), self._get(("address", address), now)
            if by_name.locked_until > now:
                minutes = max(1, round((by_name.locked_until - now) / 60))
                raise LoginRefused(f"The account '{name}' is locked for {minutes} more minute{'s' * (minutes > 1)} "
                                   f"after {self.settings.lock_failures} failed sign-ins; wait, or ask an admin.")
            wait = max(by_name.wait_until, by_address.wait_until) - now
            # once failing, one check at a time: a burst cannot slip in between a failure and
            # the wait it sets (a crowd signing in at once, none failing, is not held up)
            busy = any(strikes.in_flight and strikes.failures >= self.settings.free_failures
                       for strikes in (by_name, by_address))
            if wait > 0 or busy:
                seconds = max(1, math.ceil(wait))
                raise LoginRefused(f"Too many failed sign-ins for '{name}' or from this address; "
                                   f"try again in {seconds} second{'s' * (seconds > 1)}.")
            by_name.in_flight += 1
            by_address.in_flight += 1

    def settle(self, name: str, address: str, ok: bool) -> None:
        """Record the outcome of an admitted check."""
        now = self.clock()
        with self._lock:
            for key in (("name", name), ("address", address)):
                strikes = self._get(key, now)
                strikes.in_flight = max(0, strikes.in_flight - 1)
                if ok and key[0] == "name":
                    strikes.failures, strikes.wait_until = 0, 0.0
                elif not ok:
                    strikes.failures += 1
                    strikes.wait_until = max(strikes.wait_until, now + self._wait(strikes.failures))
                    if key[0] == "name" and strikes.failures >= self.settings.lock_failures:
                        strikes.locked_until = now + 60 * self.settings.lock_minutes
                        strikes.failures = 0
                        log.warning("Sign-in for '%s' locked for %g minutes after %d failures (the last from %s)",
                                    name, self.settings.lock_minutes, self.settings.lock_failures, address)

    def unlock(self, name: str) -> None:
        """An admin's enable or password reset lifts the lock and the wait on a name."""
        with self._lock:
            self._strikes.pop(("name", name), None)

    def _wait(self, failures: int) -> float:
        extra = failures - self.settings.free_failures
        if extra < 0:
            return 0.0
        return min(self.settings.max_wait_s, self.settings.first_wait_s * 2 ** extra)

    def _get(self, key: tuple[str, str], now: float) -> _Strikes:
        strikes = self._strikes.get(key)
        forget_after = 60 * self.settings.lock_minutes
        if strikes is not None and not strikes.in_flight and now - strikes.last_seen > forget_after \
                and strikes.locked_until <= now:
            strikes = None  # quiet for a lock's length: earlier failures are forgiven
        if strikes is None:
            if len(self._strikes) >= self.max_keys:
                self._forget_oldest()
            strikes = self._strikes[key] = _Strikes()
        strikes.last_seen = now
        return strikes

    def _forget_oldest(self) -> None:
        idle = sorted((s.last_seen, key) for key, s in self._strikes.items() if not s.in_flight)
        for _, key in idle[: max(1, len(idle) // 10)]:
            del self._strikes[key]
