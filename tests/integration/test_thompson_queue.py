"""The queue's 'thompson' selection through the pre-generator and its real sampler child on
the tiny model: random picks until there are enough rankings, the ensemble's after, and the
candidates not shown kept in the store."""

from __future__ import annotations

from rlhf.collect.annotation import Annotation
from rlhf.collect.pregenerate import PreGenerator
from storage import queue

from helpers import RESEARCHER, add_comparisons, rows


def test_the_pregenerator_shows_k_of_m_and_keeps_the_rest_unshown(workbench):
    """Random picks (and a note saying so) until there are enough rankings, the ensemble's
    after; every candidate is stored once, shown or unshown, all in the sampler child."""
    annotation = Annotation(workbench)
    annotation.set_config(RESEARCHER, selection="thompson", candidates=5, k=3, max_new_tokens=6, ready_target=2,
                          gold_rate=0.0)
    generator = PreGenerator(annotation, batch_prompts=2)
    try:
        generator.fill_once()
        made = [r[0] for r in rows(workbench, "SELECT id FROM comparisons ORDER BY id")]
        assert len(made) == 1 and "too few" in generator.status()["note"]  # an empty queue starts with one prompt
        for comparison_id in made:
            assert workbench.comparison(comparison_id).k == 3
            kept = queue.unshown(workbench.store.cursor(), comparison_id)
            assert len(kept) == 2 and set(kept["chosen_by"]) == {"random"}
            assert kept["model_version"].tolist() == ["base", "base"]
            assert len(set(kept["position"])) == 2 and kept["position"].between(0, 4).all()

        for n, comparison_id in enumerate(add_comparisons(workbench, 20, k=3)):
            workbench.rank(comparison_id, "A > B > C" if n % 2 else "C > B > A", user="ana")
        annotation.set_config(RESEARCHER, ready_target=30)
        generator.fill_once()
        latest = rows(workbench, "SELECT max(id) FROM comparisons")[0][0]
        assert set(queue.unshown(workbench.store.cursor(), latest)["chosen_by"]) == {"thompson"}
        assert generator.status()["note"] is None
    finally:
        generator.stop()
