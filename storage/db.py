"""The DuckDB store: opening the file, numbered migrations, transactions.

One process owns the database file (DuckDB allows one read-write process); inside it,
each thread works through its own cursor. Everything that writes several rows does so
inside `Store.transaction()`, so a failure leaves the store as it was.
"""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import duckdb

_LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.+?) \(PID (?P<pid>\d+)\)")


def first_row(result: duckdb.DuckDBPyConnection) -> tuple | None:
    """The first row of a query's result, or None. Reads the result to its end: DuckDB
    refuses further work on a cursor whose last result was left half-read."""
    rows = result.fetchall()
    return rows[0] if rows else None


def draw_sequence_to(cur: duckdb.DuckDBPyConnection, sequence: str, last: int) -> None:
    """Move `sequence` on until the value it last gave is at least `last` (DuckDB has no way
    to set a sequence, so it is drawn). Draws only what is missing: calling it again, or on a
    sequence already past `last`, changes nothing."""
    row = first_row(cur.execute(
        "SELECT start_value, increment_by, last_value FROM duckdb_sequences()"
        " WHERE database_name = current_database() AND schema_name = 'main' AND sequence_name = ?", [sequence]))
    if row is None:
        raise StoreError(f"The store has no sequence named {sequence}.")
    start, step, current = row
    if current is None:
        current = start - step
    missing = max(0, -(-(last - current) // step))
    if missing:
        name = sequence.replace("'", "''")
        cur.execute(f"SELECT max(nextval('{name}')) FROM range(?)", [missing]).fetchall()


class StoreError(RuntimeError):
    """A problem with the database file, said in one sentence."""


class StoreLockedError(StoreError):
    def __init__(self, path: Path, program: str | None, pid: int | None):
        self.path, self.program, self.pid = path, program, pid
        holder = f"{Path(program).name} (PID {pid})" if pid else "another process"
        super().__init__(f"The database {path} is in use by {holder}; DuckDB allows one writing process per file.")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The numbered `NNN_name.sql` files shipped in `storage/migrations`, in order."""
    found = []
    for entry in (resources.files("storage") / "migrations").iterdir():
        match = re.fullmatch(r"(\d{3})_(\w+)\.sql", entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda m: m.version)


class Store:
    """An open workbench database, upgraded to the newest schema."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        try:
            self.conn = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.IOException as error:
            raise _explain_io_error(self.path, error) from None
        self._local = threading.local()
        if not read_only:
            self.migrate()

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """This thread's cursor (DuckDB connections are not shared between threads)."""
        cursor = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._local.cursor = self.conn.cursor()
        return cursor

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cursor = self.cursor()
        cursor.begin()
        try:
            yield cursor
        except BaseException:
            cursor.rollback()
            raise
        cursor.commit()

    def schema_version(self) -> int:
        return self.cursor().execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0]

    def applied_versions(self) -> set[int]:
        return {row[0] for row in self.cursor().execute("SELECT version FROM schema_migrations").fetchall()}

    def migrate(self) -> list[int]:
        """Apply, in order, every migration this file has not recorded yet; returns their
        numbers. Every one, not only those above the highest applied: migrations written on
        parallel branches can land out of order (006 shipped before 005), and a file that
        got 006 first must still get 005 when it arrives. So two migrations must not depend
        on each other unless their numbers say so."""
        cursor = self.cursor()
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
            " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
        )
        done = self.applied_versions()
        applied = []
        for migration in migrations():
            if migration.version in done:
                continue
            with self.transaction() as tx:
                tx.execute(migration.sql)
                tx.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (?, ?)",
                    [migration.version, migration.name],
                )
            applied.append(migration.version)
        return applied

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _explain_io_error(path: Path, error: duckdb.IOException) -> StoreError:
    message = str(error)
    match = _LOCK_HOLDER.search(message)
    if match or "Could not set lock" in message:
        return StoreLockedError(path, match and match["program"], match and int(match["pid"]))
    return StoreError(f"Cannot open the database {path}: {message.removeprefix('IO Error: ')}")
