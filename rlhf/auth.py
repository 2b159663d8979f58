"""Users, roles and passwords.

Passwords are stored as self-describing scrypt hashes,
``scrypt$16384$8$1$<salt base64>$<hash base64>``, so that the cost parameters can be
raised later without breaking the hashes already stored.

Roles: an *annotator* ranks; a *researcher* also configures the queue, edits the
guidelines and marks gold items; an *admin* also manages users.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

import pandas as pd

from rlhf.errors import UserError
from storage import users

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


def create_user(store, name: str, role: str, password: str) -> User:
    """Add a user to `store` (a storage.db.Store); a taken name raises AuthError."""
    name = check_new_user(name, role, password)
    password_hash = hash_password(password)  # slow on purpose: done before the transaction
    try:
        with store.transaction() as cur:
            users.add(cur, name, role, password_hash)
    except ValueError as error:
        raise AuthError(str(error)) from None
    return User(name, role)


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


def list_users(store) -> pd.DataFrame:
    """name, role, created_at for every user (no password hashes)."""
    return users.list_users(store.cursor())


def count_admins(store) -> int:
    return users.count_admins(store.cursor())
