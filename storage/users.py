"""Users: a name, a role (annotator, researcher, admin) and a password hash.

Hashing and checking passwords is rlhf.auth's business; this module only stores what it
is given and never hands password hashes out in listings.
"""

from __future__ import annotations

import pandas as pd

from storage.db import first_row


def add(cur, name: str, role: str, password_hash: str) -> None:
    """Store a new user; a name that is taken is refused with a ValueError sentence
    (an existing user's password is never overwritten by accident)."""
    if get(cur, name) is not None:
        raise ValueError(f"There is already a user named '{name}'.")
    cur.execute(
        "INSERT INTO users (name, role, password_hash) VALUES (?, ?, ?)",
        [name, role, password_hash],
    )


def get(cur, name: str) -> dict | None:
    """{name, role, password_hash, created_at} for one user, or None."""
    row = first_row(cur.execute(
        "SELECT name, role, password_hash, created_at FROM users WHERE name = ?", [name]
    ))
    if row is None:
        return None
    return dict(zip(("name", "role", "password_hash", "created_at"), row))


def list_users(cur) -> pd.DataFrame:
    """Every user's name, role and creation time; never the password hashes."""
    return cur.execute("SELECT name, role, created_at FROM users ORDER BY name").df()


def count_admins(cur) -> int:
    return cur.execute("SELECT count(*) FROM users WHERE role = 'admin'").fetchall()[0][0]
