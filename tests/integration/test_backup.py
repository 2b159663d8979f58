"""`rlhf backup` while `rlhf serve` holds the store (the server takes it, asked through
jobs/requests/), then `rlhf restore` into a new home: every row of every table comes back,
including a version whose parent is a version (the self-reference DuckDB's EXPORT DATABASE
refuses), and ids go on from where they were."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pytest

from helpers import add_comparisons, register, rows
from rlhf.collect.workbench import Workbench
from rlhf.home import Home
from storage import backup
from storage.db import StoreError

RLHF = Path(sys.executable).with_name("rlhf")
PAIRS = [
    {"prompt": [{"role": "user", "content": f"Question {n}: what is {n} + {n}?"}],
     "chosen": [{"role": "assistant", "content": f"{2 * n}."}],
     "rejected": [{"role": "assistant", "content": "I'd rather not say; it's 'complicated'."}]}
    for n in range(6)
]


def _rlhf(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(RLHF), *args], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert result.returncode == 0, result.stderr + result.stdout
    return result


def _fill(wb: Workbench) -> None:
    source = wb.home.root.parent / "pairs.jsonl"
    source.write_text("".join(json.dumps(pair) + "\n" for pair in PAIRS))
    wb.import_pairs(source, "arith")
    # DuckDB checks a key against the rows before the statement: one INSERT of a parent
    # and its child fails, so the restore must add them generation by generation
    register(wb, "child", "policy", parent="base")
    register(wb, "grandchild", "policy", parent="child")


def _differences(first: Path, second: Path) -> dict[str, tuple[int, int]]:
    """Tables whose rows differ between two database files: table -> (only in first, only in second)."""
    conn = duckdb.connect()
    conn.execute(f"ATTACH '{first}' AS a (READ_ONLY)")
    conn.execute(f"ATTACH '{second}' AS b (READ_ONLY)")
    tables = [row[0] for row in conn.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = 'a' ORDER BY 1").fetchall()]
    found = {}
    for table in tables:
        counts = tuple(conn.execute(f"SELECT count(*) FROM (SELECT * FROM {x}.{table} EXCEPT ALL"
                                    f" SELECT * FROM {y}.{table})").fetchall()[0][0]
                       for x, y in (("a", "b"), ("b", "a")))
        if counts != (0, 0):
            found[table] = counts
    conn.close()
    return found


def test_a_backup_taken_while_the_server_runs_restores_every_row(serve_workbench, tmp_path):
    served = serve_workbench(_fill)
    served.start()
    folder = tmp_path / "backup"
    taken = _rlhf("backup", str(folder), "--home", str(served.home.root))
    assert "by the server at" in taken.stdout, taken.stdout
    assert served.running  # the server held the store all along
    manifest = json.loads((folder / backup.MANIFEST).read_text())
    assert manifest["tables"]["rankings"] == len(PAIRS) and manifest["tables"]["model_versions"] == 3

    new_home = tmp_path / "restored"
    _rlhf("restore", str(folder), "--home", str(new_home))
    served.stop()
    assert _differences(served.home.db_path, Home(new_home).db_path) == {}
    assert (Home(new_home).db_path.stat().st_mode & 0o777) == 0o600
    # the ids go on after the restored ones
    with Workbench(Home(new_home)) as wb:
        last = max(wb.rankings()["ranking_id"])
        next_id = wb.store.cursor().execute("SELECT nextval('ranking_id_seq')").fetchall()[0][0]
    assert next_id == last + 1


def test_a_damaged_backup_is_refused_and_leaves_no_store(tiny_home, tmp_path):
    tmp_path = tmp_path / "backups"
    tmp_path.mkdir()
    with Workbench(tiny_home) as wb:
        backup.write_backup(wb.store, tmp_path / "b")
        with pytest.raises(StoreError, match="not an empty folder"):
            backup.write_backup(wb.store, tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / backup.MANIFEST).read_text())
    manifest["tables"]["prompts"] += 1
    (tmp_path / "b" / backup.MANIFEST).write_text(json.dumps(manifest))
    target = tmp_path / "new.duckdb"
    with pytest.raises(StoreError, match="prompts.parquet holds .* rows, its manifest"):
        backup.restore_backup(tmp_path / "b", target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_rankings_stored_during_a_backup_leave_it_consistent(tiny_home, tmp_path):
    """A writer thread ranks comparisons (each ranking and its K ranks in one transaction)
    all through the backup: the backup holds whole rankings only, and fewer than the end."""
    with Workbench(tiny_home) as wb:
        ids = add_comparisons(wb, 150, k=4)
        started, finished = threading.Event(), threading.Event()

        def rank_until_done() -> None:
            for comparison_id in ids:
                wb.rank(comparison_id, "A > B = C > D", user="ana")
                started.set()
                if finished.is_set():
                    break

        writer = threading.Thread(target=rank_until_done)
        writer.start()
        assert started.wait(60)
        taken = backup.write_backup(wb.store, tmp_path / "b")
        finished.set()
        writer.join(120)
        stored = rows(wb, "SELECT count(*) FROM rankings")[0][0]
    backed_up = taken.tables["rankings"]
    assert 1 <= backed_up <= stored
    assert taken.tables["ranking_ranks"] == 4 * backed_up
    restored = tmp_path / "restored.duckdb"
    backup.restore_backup(tmp_path / "b", restored)
    conn = duckdb.connect(str(restored), read_only=True)
    orphans = conn.execute("SELECT count(*) FROM rankings r WHERE (SELECT count(*) FROM ranking_ranks k"
                           " WHERE k.ranking_id = r.id) <> 4").fetchall()[0][0]
    conn.close()
    assert orphans == 0
