"""A backup of the store as one Parquet file per table, taken while the store is in use.

DuckDB 2.0.1's own `EXPORT DATABASE` and `COPY FROM DATABASE` refuse this store:
`model_versions.parent` references its own table ("self-referencing foreign key constraint
... not supported for exporting"; COPY FROM DATABASE inserts a child before its parent and
fails the key). So the backup is written table by table, all inside one transaction: DuckDB
gives a transaction one snapshot, so the files agree with each other however many rankings
arrive meanwhile (https://duckdb.org/docs/stable/sql/statements/transactions).

    DIR/<table>.parquet   every row of one table
    DIR/manifest.json     the migrations the store had, each table's rows, each sequence's last value

A restore builds a new database file from nothing: the backup's own migrations (so the
files' columns match), its rows in foreign-key order (a self-referencing table in waves,
parents first), each sequence moved past its last value, then renamed into place; opening
it with `Store` then applies any migration newer than the backup.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from storage.db import Store, StoreError, draw_sequence_to, migrations

MANIFEST = "manifest.json"
FORMAT = 1
_MIGRATIONS_TABLE = "schema_migrations"


@dataclass(frozen=True)
class BackupReport:
    path: Path
    schema_versions: list[int]
    tables: dict[str, int]  # table -> rows


def write_backup(store: Store, directory: str | Path) -> BackupReport:
    """Write every table of `store` into `directory` (new or empty), from one snapshot.

    Safe while other threads write: they go on, and what they commit after the snapshot is
    not in this backup. The folder appears whole or not at all."""
    directory = Path(directory)
    _require_new_folder(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        with store.transaction() as cur:  # one snapshot for every table
            order = _tables_in_key_order(cur)
            counts = {}
            for table in order:
                cur.execute(f"COPY (SELECT * FROM {_name(table)}) TO '{_literal(staging / f'{table}.parquet')}'"
                            " (FORMAT parquet)")
                counts[table] = cur.execute(f"SELECT count(*) FROM {_name(table)}").fetchall()[0][0]
            versions = [row[0] for row in cur.execute(f"SELECT version FROM {_MIGRATIONS_TABLE} ORDER BY version")
                        .fetchall()]
            sequences = dict(cur.execute(
                "SELECT sequence_name, last_value FROM duckdb_sequences()"
                " WHERE database_name = current_database() AND schema_name = 'main'").fetchall())
        manifest = {"format": FORMAT, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "schema_versions": versions, "order": order, "tables": counts, "sequences": sequences}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=1))
        if directory.exists():
            directory.rmdir()  # checked empty above
        os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return BackupReport(directory, versions, counts)


def restore_backup(directory: str | Path, db_path: str | Path) -> BackupReport:
    """Build the database file `db_path` (which must not exist) from a backup in `directory`.

    Everything is checked and built in a file beside `db_path` first; on any problem that
    file is removed and `db_path` never appears."""
    directory, db_path = Path(directory), Path(db_path)
    manifest = _read_manifest(directory)
    if db_path.exists():
        raise StoreError(f"{db_path} already exists; restore into a new home.")
    partial = db_path.with_name(f".{db_path.name}.restoring")
    partial.unlink(missing_ok=True)
    try:
        conn = duckdb.connect(str(partial))
        try:
            _rebuild(conn, directory, manifest)
        finally:
            conn.close()
        os.replace(partial, db_path)
    finally:
        partial.unlink(missing_ok=True)
        partial.with_name(partial.name + ".wal").unlink(missing_ok=True)
    return BackupReport(directory, manifest["schema_versions"], manifest["tables"])


def _rebuild(conn: duckdb.DuckDBPyConnection, directory: Path, manifest: dict) -> None:
    known = {migration.version: migration for migration in migrations()}
    newer = [version for version in manifest["schema_versions"] if version not in known]
    if newer:
        raise StoreError(f"The backup in {directory} has migration {newer[0]}, which this workbench does not know;"
                         " restore it with the release that made it.")
    conn.begin()
    # The backup's schema_migrations rows are restored below, so the table starts empty.
    conn.execute(f"CREATE TABLE {_MIGRATIONS_TABLE} (version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
                 " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)")
    for version in sorted(manifest["schema_versions"]):
        conn.execute(known[version].sql)
    order = _tables_in_key_order(conn)
    if sorted(order) != sorted(manifest["order"]):
        raise StoreError(f"The backup in {directory} does not hold the tables its migrations make; it is damaged.")
    for table in reversed(order):  # rows a migration seeds are in the backup too
        conn.execute(f"DELETE FROM {_name(table)}")
    self_keys = _self_references(conn)
    for table in order:
        source = f"read_parquet('{_literal(directory / f'{table}.parquet')}')"
        if table in self_keys:
            _insert_in_waves(conn, table, source, *self_keys[table])
        else:
            conn.execute(f"INSERT INTO {_name(table)} BY NAME SELECT * FROM {source}")
        rows = conn.execute(f"SELECT count(*) FROM {_name(table)}").fetchall()[0][0]
        if rows != manifest["tables"][table]:
            raise StoreError(f"The backup's {table}.parquet holds {rows} rows, its manifest {manifest['tables'][table]};"
                             " it is damaged.")
    for sequence, last in manifest["sequences"].items():
        if last is not None:
            draw_sequence_to(conn, sequence, last)
    conn.commit()


def _insert_in_waves(conn, table: str, source: str, column: str, key: str) -> None:
    """Rows whose `column` names a row of the same table go in after that row: each wave adds
    the rows whose parent is already in (the first, those without one)."""
    while True:
        before = conn.execute(f"SELECT count(*) FROM {_name(table)}").fetchall()[0][0]
        conn.execute(
            f"INSERT INTO {_name(table)} BY NAME SELECT * FROM {source} s"
            f" WHERE s.{_name(key)} NOT IN (SELECT {_name(key)} FROM {_name(table)})"
            f" AND (s.{_name(column)} IS NULL OR s.{_name(column)} IN (SELECT {_name(key)} FROM {_name(table)}))")
        if conn.execute(f"SELECT count(*) FROM {_name(table)}").fetchall()[0][0] == before:
            return


def _tables_in_key_order(cur) -> list[str]:
    """The main schema's tables, each after every table it references (its own aside)."""
    tables = [row[0] for row in cur.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database()"
        " AND schema_name = 'main' ORDER BY table_name").fetchall()]
    references = {table: set() for table in tables}
    for table, referenced in cur.execute(
            "SELECT table_name, referenced_table FROM duckdb_constraints() WHERE database_name = current_database()"
            " AND schema_name = 'main' AND constraint_type = 'FOREIGN KEY'").fetchall():
        if referenced != table:
            references[table].add(referenced)
    return key_order(references)


def key_order(references: dict[str, set[str]]) -> list[str]:
    """The tables (keys of `references`: table -> the other tables it references), each after
    every table it references, in waves, alphabetical within a wave (Kahn's topological sort).
    Tables that reference each other, directly or round a longer loop, have no such order:
    refused, since no restore could insert either first."""
    order: list[str] = []
    while len(order) < len(references):
        ready = sorted(t for t in references if t not in order and references[t] <= set(order))
        if not ready:
            stuck = {t for t in references if t not in order}
            while True:  # drop the tables that only hang off a loop, leaving the loop's own
                tail = {t for t in stuck if not any(t in references[other] for other in stuck)}
                if not tail:
                    break
                stuck -= tail
            stuck = sorted(stuck)
            raise StoreError(f"The tables {', '.join(stuck)} reference each other in a loop, so no order lets a"
                             " restore insert each after the tables it references; the backup refuses this schema.")
        order += ready
    return order


def _self_references(cur) -> dict[str, tuple[str, str]]:
    """table -> (referencing column, referenced key) for each table that references itself."""
    return {
        table: (columns[0], keys[0])
        for table, columns, keys in cur.execute(
            "SELECT table_name, constraint_column_names, referenced_column_names FROM duckdb_constraints()"
            " WHERE database_name = current_database() AND schema_name = 'main'"
            " AND constraint_type = 'FOREIGN KEY' AND referenced_table = table_name").fetchall()
    }


def _read_manifest(directory: Path) -> dict:
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except OSError:
        raise StoreError(f"{directory} holds no backup ({MANIFEST} is missing or unreadable).") from None
    except ValueError:
        raise StoreError(f"{directory / MANIFEST} is not valid JSON; the backup is damaged.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StoreError(f"{directory / MANIFEST} is not a backup of format {FORMAT}.")
    for table in manifest.get("order", []):
        if not (directory / f"{table}.parquet").is_file():
            raise StoreError(f"The backup in {directory} lacks {table}.parquet; it is damaged.")
    return manifest


def _require_new_folder(directory: Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise StoreError(f"{directory} already exists and is not an empty folder; choose a new one.")


def _name(identifier: str) -> str:
    """An identifier quoted for SQL (table and column names come from the catalogue)."""
    return '"' + identifier.replace('"', '""') + '"'


def _literal(value: object) -> str:
    """Text inside a single-quoted SQL literal (COPY takes no parameter for its file)."""
    return str(value).replace("'", "''")
