"""Users: a name, a role (annotator, researcher, admin), a password hash, and whether the
account is disabled or must choose a new password at its next sign-in.

Hashing and checking passwords is rlhf.auth's business; this module only stores what it
is given and never hands password hashes out in listings.
"""

from __future__ import annotations

import pandas as pd

from storage.db import first_row

_FIELDS = ("name", "role", "password_hash", "created_at", "disabled", "must_change_password")


def add(cur, name: str, role: str, password_hash: str, must_change_password: bool = False) -> None:
    """Store a new user; a name that is taken is refused with a ValueError sentence
    (an existing user's password is never overwritten by accident)."""
    if get(cur, name) is not None:
        raise ValueError(f"There is already a user named '{name}'.")
    cur.execute(
        "INSERT INTO users (name, role, password_hash, must_change_password) VALUES (?, ?, ?, ?)",
        [name, role, password_hash, must_change_password],
    )


def get(cur, name: str) -> dict | None:
    """{name, role, password_hash, created_at, disabled, must_change_password} for one user, or None."""
    row = first_row(cur.execute(
        "SELECT name, role, password_hash, created_at, coalesce(disabled, false),"
        " coalesce(must_change_password, false) FROM users WHERE name = ?", [name]
    ))
    return dict(zip(_FIELDS, row)) if row is not None else None


def set_password(cur, name: str, password_hash: str, must_change_password: bool) -> None:
    cur.execute(
        "UPDATE users SET password_hash = ?, must_change_password = ?, password_changed_at = current_timestamp"
        " WHERE name = ?", [password_hash, must_change_password, name],
    )


def set_role(cur, name: str, role: str) -> None:
    cur.execute("UPDATE users SET role = ? WHERE name = ?", [role, name])


def set_disabled(cur, name: str, disabled: bool) -> None:
    cur.execute("UPDATE users SET disabled = ? WHERE name = ?", [disabled, name])


def list_users(cur) -> pd.DataFrame:
    """Every user's name, role, state and creation time; never the password hashes."""
    return cur.execute(
        "SELECT name, role, coalesce(disabled, false) AS disabled,"
        " coalesce(must_change_password, false) AS must_change_password, created_at FROM users ORDER BY name"
    ).df()


def count_admins(cur, enabled_only: bool = False) -> int:
    """Admins in the store; with `enabled_only`, those who can still sign in."""
    enabled = " AND NOT coalesce(disabled, false)" if enabled_only else ""
    return cur.execute(f"SELECT count(*) FROM users WHERE role = 'admin'{enabled}").fetchall()[0][0]
