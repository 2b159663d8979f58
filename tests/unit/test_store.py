"""The DuckDB store: migrations, constraints, transactions, the process lock, and the
storage functions that write several rows at once. No model needed: a bare Store on a
temporary file."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pandas as pd
import pytest

import storage.db
from storage import comparisons, feedback, models, prompts, queue
from storage.comparisons import NewCompletion
from storage.db import Migration, Store
from storage.feedback import DuplicateRanking

ROOT = Path(__file__).resolve().parents[2]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "workbench.duckdb"


@pytest.fixture
def store(db_path):
    with Store(db_path) as opened:
        yield opened


def table_count(cur, table: str) -> int:
    return cur.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


def add_comparison(cur, k: int = 3, prompt_set: str = "s", text: str = "Why is the sky blue?") -> int:
    """A prompt, the base version and one generated comparison of K completions."""
    prompts.add_prompts(cur, prompt_set, [user(text)], source="test")
    if models.get(cur, "base") is None:
        models.register(cur, "base", "policy", base_model="tiny", path="models/base", method="import", status="active")
    prompt_id = prompts.ids_by_fingerprint(cur, prompt_set, [prompts.fingerprint(user(text))])[0]
    return comparisons.add(
        cur, prompt_id,
        [NewCompletion(f"answer {i}", "base", {"seed": i}, 3, "length") for i in range(k)],
    )


# -- migrations -------------------------------------------------------------------------


def test_new_file_gets_every_migration_recorded(store):
    shipped = storage.db.migrations()
    assert shipped and shipped[0].version == 1
    rows = store.cursor().execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()
    assert [(v, n) for v, n, _ in rows] == [(m.version, m.name) for m in shipped]
    assert all(applied_at is not None for _, _, applied_at in rows)
    assert store.schema_version() == shipped[-1].version
    tables = {row[0] for row in store.cursor().execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"prompts", "prompt_sets", "comparisons", "completions", "rankings", "ranking_ranks",
            "model_versions", "jobs", "arena_battles", "users"} <= tables


def test_reopening_applies_nothing(db_path):
    with Store(db_path) as first:
        before = first.cursor().execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()
    with Store(db_path) as again:
        assert again.migrate() == []
        after = again.cursor().execute("SELECT version, name, applied_at FROM schema_migrations ORDER BY version").fetchall()
    assert after == before  # same rows, same timestamps: nothing re-applied


def test_older_database_is_upgraded_in_place(db_path, monkeypatch):
    first = [m for m in storage.db.migrations() if m.version == 1]
    monkeypatch.setattr(storage.db, "migrations", lambda: first)
    with Store(db_path) as old:
        assert old.schema_version() == 1
        with old.transaction() as cur:
            prompt_count = prompts.add_prompts(cur, "old", [user("one"), user("two")], source="v1")
            comparison_id = add_comparison(cur, k=2, prompt_set="old", text="one")
    assert prompt_count == 2

    extra = Migration(2, "prompt_note", "ALTER TABLE prompts ADD COLUMN note VARCHAR DEFAULT 'none';")
    monkeypatch.setattr(storage.db, "migrations", lambda: first + [extra])
    with Store(db_path) as upgraded:
        cur = upgraded.cursor()
        assert upgraded.schema_version() == 2
        assert cur.execute("SELECT version, name FROM schema_migrations ORDER BY version").fetchall() == [
            (1, first[0].name), (2, "prompt_note")]
        assert cur.execute("SELECT text, note FROM prompts ORDER BY id").fetchall() == [("one", "none"), ("two", "none")]
        assert comparisons.get(cur, comparison_id).k == 2
        assert upgraded.migrate() == []  # and the upgrade happens once


def test_failing_migration_leaves_the_database_at_its_old_version(db_path, monkeypatch):
    first = [m for m in storage.db.migrations() if m.version == 1]
    monkeypatch.setattr(storage.db, "migrations", lambda: first)
    with Store(db_path) as old, old.transaction() as cur:
        prompts.add_prompts(cur, "old", [user("kept")], source="v1")

    broken = Migration(2, "broken", "ALTER TABLE prompts ADD COLUMN half VARCHAR; SELECT * FROM no_such_table;")
    monkeypatch.setattr(storage.db, "migrations", lambda: first + [broken])
    with pytest.raises(duckdb.Error):
        Store(db_path)

    monkeypatch.setattr(storage.db, "migrations", lambda: first)
    with Store(db_path) as reopened:
        cur = reopened.cursor()
        assert reopened.schema_version() == 1
        columns = [row[0] for row in cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'prompts'").fetchall()]
        assert "half" not in columns
        assert prompts.count(cur) == 1


def test_a_ranking_stores_its_page_context_and_each_rank_by_letter(store):
    cur = store.cursor()
    comparison_id = add_comparison(cur, k=3)
    ranking_id = feedback.add_ranking(cur, comparison_id, "ana", "C > A = B", {"C": 1, "A": 2, "B": 2},
                                      guidelines_version=3, none_acceptable=True)
    assert cur.execute("SELECT guidelines_version, none_acceptable FROM rankings WHERE id = ?",
                       [ranking_id]).fetchall() == [(3, True)]
    assert cur.execute("SELECT m.letter, r.rank FROM ranking_ranks r JOIN completions m ON m.id = r.completion_id"
                       " WHERE r.ranking_id = ? ORDER BY m.letter", [ranking_id]).fetchall() == \
        [("A", 2), ("B", 2), ("C", 1)]
    imported = feedback.add_ranking(cur, comparison_id, "bob", "A > B > C", {"A": 1, "B": 2, "C": 3})
    assert cur.execute("SELECT guidelines_version, none_acceptable FROM rankings WHERE id = ?",
                       [imported]).fetchall() == [(None, False)]


def test_a_hand_out_keeps_its_token_and_only_a_fresh_one_restarts_its_clock(store):
    from datetime import datetime

    cur = store.cursor()
    comparison_id = add_comparison(cur, k=2)
    first, reload, again = datetime(2026, 1, 1), datetime(2026, 1, 2), datetime(2026, 1, 3)
    assert queue.hand_out(cur, comparison_id, "ana", "t1", fresh=True, now=first) == "t1"
    assert queue.hand_out(cur, comparison_id, "ana", "t2", fresh=False, now=reload) == "t1"  # a reload
    assert queue.handout_by_token(cur, "t1").handed_at == first
    assert queue.hand_out(cur, comparison_id, "ana", "t3", fresh=True, now=again) == "t1"  # handed out again
    assert queue.handout_by_token(cur, "t1").handed_at == again
    assert queue.hand_out(cur, comparison_id, "bob", "t4", fresh=True, now=first) == "t4"
    assert table_count(cur, "handouts") == 2


# -- constraints ------------------------------------------------------------------------


def test_rank_row_for_missing_completion_is_refused(store):
    cur = store.cursor()
    comparison_id = add_comparison(cur, k=2)
    ranking_id = feedback.add_ranking(cur, comparison_id, "ana", "A > B", {"A": 1, "B": 2})
    with pytest.raises(duckdb.ConstraintException):
        cur.execute("INSERT INTO ranking_ranks (ranking_id, completion_id, rank) VALUES (?, 999999, 1)", [ranking_id])
    completion_id = cur.execute("SELECT min(id) FROM completions").fetchall()[0][0]
    with pytest.raises(duckdb.ConstraintException):
        cur.execute("INSERT INTO ranking_ranks (ranking_id, completion_id, rank) VALUES (999999, ?, 1)", [completion_id])
    assert table_count(cur, "ranking_ranks") == 2


def test_completion_for_missing_comparison_is_refused(store):
    cur = store.cursor()
    with pytest.raises(duckdb.ConstraintException):
        cur.execute("INSERT INTO completions (comparison_id, letter, text) VALUES (424242, 'A', 'orphan')")
    assert table_count(cur, "completions") == 0


def test_ranking_for_missing_comparison_is_refused(store):
    cur = store.cursor()
    with pytest.raises(duckdb.ConstraintException):
        feedback.add_ranking(cur, 424242, "ana", "A > B", {"A": 1, "B": 2})
    assert table_count(cur, "rankings") == 0


# -- transactions -----------------------------------------------------------------------


def test_transaction_rolls_back_everything_on_error(store):
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with store.transaction() as cur:
            add_comparison(cur, k=3)
            assert table_count(cur, "completions") == 3  # visible inside the transaction
            raise Boom()
    cur = store.cursor()
    for table in ("prompt_sets", "prompts", "model_versions", "comparisons", "completions"):
        assert table_count(cur, table) == 0, table

    with store.transaction() as cur:  # and the store is usable afterwards
        add_comparison(cur, k=2)
    assert table_count(store.cursor(), "completions") == 2


# -- prompts ----------------------------------------------------------------------------


def test_add_prompts_dedupes_within_a_set_but_not_across_sets(store):
    with store.transaction() as cur:
        added = prompts.add_prompts(cur, "a", [user("x"), user("y"), user("x")], source="f1",
                                    categories=["c1", "c2", "c1"])
        assert added == 2
        assert prompts.add_prompts(cur, "a", [user("y"), user("z")], source="f2") == 1
        assert prompts.add_prompts(cur, "b", [user("x")], source="f3") == 1
    cur = store.cursor()
    assert cur.execute("SELECT prompt_set, text, source FROM prompts ORDER BY id").fetchall() == [
        ("a", "x", "f1"), ("a", "y", "f1"), ("a", "z", "f2"), ("b", "x", "f3")]
    assert prompts.set_names(cur) == ["a", "b"]
    assert prompts.set_counts(cur).to_dict("records") == [{"prompt_set": "a", "prompts": 3},
                                                          {"prompt_set": "b", "prompts": 1}]
    # a conversation with history is a different prompt from its last turn alone
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}, *user("x")]
    assert prompts.add_prompts(cur, "a", [history], source="f4") == 1
    stored = json.loads(cur.execute("SELECT messages FROM prompts WHERE source = 'f4'").fetchall()[0][0])
    assert stored == history


def test_not_compared_by_skips_prompts_the_version_has_compared(store):
    cur = store.cursor()
    prompts.add_prompts(cur, "s", [user(t) for t in ("p1", "p2", "p3")], source="t")
    prompts.add_prompts(cur, "other", [user("q1")], source="t")
    models.register(cur, "base", "policy", base_model="tiny", path="models/base", method="import")
    models.register(cur, "v2", "policy", base_model="tiny", path="models/v2", method="dpo", parent="base")
    ids = prompts.ids_by_fingerprint(cur, "s", [prompts.fingerprint(user(t)) for t in ("p1", "p2", "p3")])
    comparisons.add(cur, ids[0], [NewCompletion("a", "base"), NewCompletion("b", "base")])

    todo = prompts.not_compared_by(cur, "base", "s", 10)
    assert list(todo["text"]) == ["p2", "p3"]
    assert list(todo["messages"]) == [user("p2"), user("p3")]
    assert list(prompts.not_compared_by(cur, "v2", "s", 10)["text"]) == ["p1", "p2", "p3"]
    assert list(prompts.not_compared_by(cur, "base", None, 10)["text"]) == ["p2", "p3", "q1"]
    assert list(prompts.not_compared_by(cur, "base", "s", 1)["text"]) == ["p2"]
    # imported text (no model version) does not count as the version's comparison
    comparisons.add_imported_pairs(cur, [ids[1]], ["good"], ["bad"], annotator="import:x")
    assert list(prompts.not_compared_by(cur, "base", "s", 10)["text"]) == ["p2", "p3"]


# -- rankings ---------------------------------------------------------------------------


def test_add_ranking_stores_ranks_per_completion(store):
    cur = store.cursor()
    comparison_id = add_comparison(cur, k=3)
    ranking_id = feedback.add_ranking(cur, comparison_id, "ana", "B > A = C", {"B": 1, "A": 2, "C": 2},
                                      seconds_spent=12.5)
    assert cur.execute(
        "SELECT comparison_id, annotator, source, ranking, seconds_spent FROM rankings WHERE id = ?", [ranking_id]
    ).fetchall() == [(comparison_id, "ana", "human", "B > A = C", 12.5)]
    assert cur.execute(
        "SELECT m.letter, r.rank FROM ranking_ranks r JOIN completions m ON m.id = r.completion_id"
        " WHERE r.ranking_id = ? ORDER BY m.letter", [ranking_id]
    ).fetchall() == [("A", 2), ("B", 1), ("C", 2)]
    assert feedback.ranking_by(cur, comparison_id, "ana") == "B > A = C"
    assert feedback.ranking_by(cur, comparison_id, "bob") is None

    frame = feedback.rankings_frame(cur)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert list(row["completions"]) == ["answer 0", "answer 1", "answer 2"]
    assert list(row["ranks"]) == [2, 1, 2]
    assert row["messages"] == user("Why is the sky blue?")
    assert row["user"] == "ana"



def test_the_newest_rankings_are_read_by_a_limit_and_match_the_whole_table(store):
    cur = store.cursor()
    ids = [feedback.add_ranking(cur, add_comparison(cur, k=2), "ana", ranking, ranks)
           for ranking, ranks in [("A > B", {"A": 1, "B": 2}), ("B > A", {"A": 2, "B": 1}), ("A = B", {"A": 1, "B": 1})]]
    whole = feedback.rankings_frame(cur)
    newest = feedback.rankings_frame(cur, newest=2)
    assert list(newest["ranking_id"]) == ids[1:]
    pd.testing.assert_frame_equal(newest, whole.tail(2).reset_index(drop=True))
    assert len(feedback.rankings_frame(cur, newest=10)) == 3 and feedback.rankings_frame(cur, newest=0).empty

def test_add_ranking_refuses_a_duplicate_annotator(store):
    cur = store.cursor()
    comparison_id = add_comparison(cur, k=2)
    feedback.add_ranking(cur, comparison_id, "ana", "A > B", {"A": 1, "B": 2})
    with pytest.raises(DuplicateRanking) as caught:
        feedback.add_ranking(cur, comparison_id, "ana", "B > A", {"B": 1, "A": 2})
    assert str(caught.value) == (
        f"ana already ranked comparison {comparison_id} as 'A > B'; rankings are never overwritten."
    )
    feedback.add_ranking(cur, comparison_id, "bob", "B > A", {"B": 1, "A": 2})  # another annotator may
    assert cur.execute("SELECT annotator, ranking FROM rankings ORDER BY id").fetchall() == [
        ("ana", "A > B"), ("bob", "B > A")]
    assert table_count(cur, "ranking_ranks") == 4


class Letters:
    """A stand-in for random.Random whose choices are the given letters in turn."""

    def __init__(self, *letters: str):
        self.letters = list(letters)

    def choice(self, options):
        assert options == "AB"
        return self.letters.pop(0)


def test_add_imported_pairs_creates_ranked_import_comparisons(store):
    with store.transaction() as cur:
        prompts.add_prompts(cur, "hh", [user("q1"), user("q2")], source="pairs.jsonl")
        ids = prompts.ids_by_fingerprint(cur, "hh", [prompts.fingerprint(user("q1")), prompts.fingerprint(user("q2"))])
        count = comparisons.add_imported_pairs(  # the chosen answer at A, then B, then B
            cur, [ids[0], ids[1], ids[0]], ["good 1", "good 2", "good 3"], ["bad 1", "bad 2", "bad 3"],
            annotator="import:pairs.jsonl", rng=Letters("A", "B", "B"))
    assert count == 3
    cur = store.cursor()
    assert cur.execute("SELECT prompt_id, k, source, round FROM comparisons ORDER BY id").fetchall() == [
        (ids[0], 2, "import", 1), (ids[1], 2, "import", 1), (ids[0], 2, "import", 1)]
    assert cur.execute(
        "SELECT c.prompt_id, m.letter, m.text, m.model_version, m.finish_reason"
        " FROM completions m JOIN comparisons c ON c.id = m.comparison_id ORDER BY c.id, m.letter"
    ).fetchall() == [
        (ids[0], "A", "good 1", None, "import"), (ids[0], "B", "bad 1", None, "import"),
        (ids[1], "A", "bad 2", None, "import"), (ids[1], "B", "good 2", None, "import"),
        (ids[0], "A", "bad 3", None, "import"), (ids[0], "B", "good 3", None, "import"),
    ]
    assert cur.execute("SELECT annotator, source, ranking FROM rankings ORDER BY comparison_id").fetchall() == [
        ("import:pairs.jsonl", "import", "A > B"), ("import:pairs.jsonl", "import", "B > A"),
        ("import:pairs.jsonl", "import", "B > A")]
    assert cur.execute(  # the chosen answer ranked first, whatever its letter
        "SELECT m.text, r.rank FROM ranking_ranks r JOIN completions m ON m.id = r.completion_id ORDER BY m.text"
    ).fetchall() == [("bad 1", 2), ("bad 2", 2), ("bad 3", 2), ("good 1", 1), ("good 2", 1), ("good 3", 1)]
    # every ranking points at its own comparison
    assert cur.execute(
        "SELECT count(*) FROM rankings r JOIN ranking_ranks rr ON rr.ranking_id = r.id"
        " JOIN completions m ON m.id = rr.completion_id WHERE m.comparison_id <> r.comparison_id"
    ).fetchall()[0][0] == 0

    # ids came from the sequences: ordinary inserts afterwards do not collide
    new_id = add_comparison(cur, k=2, prompt_set="hh", text="q1")
    new_ranking = feedback.add_ranking(cur, new_id, "ana", "B > A", {"A": 2, "B": 1})
    assert new_id not in {row[0] for row in cur.execute("SELECT id FROM comparisons WHERE source = 'import'").fetchall()}
    assert table_count(cur, "rankings") == 4 and new_ranking > 0
    assert "numbered_pairs" not in {row[0] for row in cur.execute("SELECT table_name FROM duckdb_tables()").fetchall()}


def test_lock_error_is_explained_from_duckdbs_message(tmp_path):
    path = tmp_path / "w.duckdb"
    error = storage.db._explain_io_error(path, duckdb.IOException(
        f'IO Error: Could not set lock on file "{path}": Conflicting lock is held in /usr/bin/python3.11 (PID 4242).'
        " See also https://duckdb.org/docs/current/connect/concurrency"))
    assert isinstance(error, storage.db.StoreLockedError)
    assert (error.pid, error.program) == (4242, "/usr/bin/python3.11")
    assert str(error) == (f"The database {path} is in use by python3.11 (PID 4242);"
                          " DuckDB allows one writing process per file.")
    other = storage.db._explain_io_error(path, duckdb.IOException("IO Error: Cannot open file: Permission denied"))
    assert type(other) is storage.db.StoreError
    assert str(other) == f"Cannot open the database {path}: Cannot open file: Permission denied"


def test_lock_holder_with_a_space_in_its_path_is_still_named(tmp_path):
    path = tmp_path / "w.duckdb"
    error = storage.db._explain_io_error(path, duckdb.IOException(
        f'IO Error: Could not set lock on file "{path}": Conflicting lock is held in'
        " /opt/My Tools/bin/python3 (PID 4242). See also https://duckdb.org/docs/current/connect/concurrency"))
    assert isinstance(error, storage.db.StoreLockedError)
    assert error.pid == 4242
    assert "python3 (PID 4242)" in str(error)


def test_a_sequence_is_drawn_up_to_a_value_once_however_often_asked(store):
    """storage.db.draw_sequence_to, used by the backup's restore and the synthetic store:
    drawing `n` more values each time (the one-liner it replaces) overshot a sequence that
    had already given some."""
    cur = store.cursor()
    cur.execute("SELECT nextval('ranking_id_seq') FROM range(3)").fetchall()
    storage.db.draw_sequence_to(cur, "ranking_id_seq", 5)
    storage.db.draw_sequence_to(cur, "ranking_id_seq", 5)
    storage.db.draw_sequence_to(cur, "ranking_id_seq", 2)  # already past: nothing drawn
    assert cur.execute("SELECT nextval('ranking_id_seq')").fetchall()[0][0] == 6
    storage.db.draw_sequence_to(cur, "prompt_id_seq", 4)  # never drawn before
    assert cur.execute("SELECT nextval('prompt_id_seq')").fetchall()[0][0] == 5
    with pytest.raises(storage.db.StoreError, match="no sequence named nope"):
        storage.db.draw_sequence_to(cur, "nope", 1)
