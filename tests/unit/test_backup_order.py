"""The backup's table order (storage.backup.key_order): each table after those it
references, and a loop of references refused in one sentence instead of looping forever."""

from __future__ import annotations

import pytest

from storage import backup
from storage.db import Store, StoreError


def test_each_table_comes_after_the_tables_it_references():
    references = {"rankings": {"comparisons"}, "comparisons": {"prompts"}, "prompts": set(), "users": set()}
    assert backup.key_order(references) == ["prompts", "users", "comparisons", "rankings"]


def test_tables_that_reference_each_other_are_refused_naming_the_loop():
    references = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}  # d only hangs off the loop
    with pytest.raises(StoreError, match=r"^The tables a, b, c reference each other in a loop"):
        backup.key_order(references)


def test_a_backup_of_a_schema_with_a_loop_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    real = backup.key_order
    # comparisons references prompts; prompts referencing comparisons closes a loop
    monkeypatch.setattr(backup, "key_order", lambda refs: real({**refs, "prompts": refs["prompts"] | {"comparisons"}}))
    with Store(tmp_path / "workbench.duckdb") as store:
        with pytest.raises(StoreError, match="comparisons, prompts reference each other"):
            backup.write_backup(store, tmp_path / "backup")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["workbench.duckdb"]
