"""The synthetic store behind `python -m rlhf.bench scale` (storage.synthetic) and one small
pass of the benchmark over it: every step runs and reports what it made."""

from __future__ import annotations

import pytest

from rlhf.bench.scale import STEPS, measure
from rlhf.preference.ranking import parse_ranking
from storage import synthetic
from storage.db import Store


def test_the_synthetic_store_has_four_consistent_rankings_per_comparison(tmp_path):
    with Store(tmp_path / "workbench.duckdb") as store:
        assert synthetic.fill(store, 5) == 20
        cur = store.cursor()
        assert cur.execute("SELECT count(*) FROM completions").fetchone()[0] == 20
        assert cur.execute("SELECT count(*) FROM ranking_ranks").fetchone()[0] == 80
        # each stored ranking's ranks are the ones its text says (ties included)
        for ranking, letters, ranks in cur.execute(
                "SELECT r.ranking, list(c.letter ORDER BY c.letter), list(rr.rank ORDER BY c.letter) FROM rankings r"
                " JOIN ranking_ranks rr ON rr.ranking_id = r.id JOIN completions c ON c.id = rr.completion_id"
                " GROUP BY r.id, r.ranking").fetchall():
            groups = parse_ranking(ranking, k=4).groups
            assert [next(n for n, group in enumerate(groups, 1) if letter in group) for letter in letters] == ranks
        # the next real row takes the next id
        assert cur.execute("SELECT nextval('comparison_id_seq')").fetchone()[0] == 6
        with pytest.raises(ValueError, match="empty store only"):
            synthetic.fill(store, 5)


def test_every_step_of_the_benchmark_runs_on_a_small_store(tmp_path):
    results = {step: detail for step, _, detail in measure(tmp_path, 6, list(STEPS))}
    assert set(results) == {"synthetic store", *STEPS}
    assert results["synthetic store"] == "24 rankings" and results["rankings"] == "24 rows"
    assert results["backup"] == results["restore"]
