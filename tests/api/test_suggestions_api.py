"""The reward-model suggestion through the API: handed out with the item, and the queue
settings that turn it off and choose the order (the service itself: tests/unit/test_suggestions.py)."""

from __future__ import annotations

import pytest

from helpers import add_comparisons, connect, register, text_scores
from rlhf.auth import create_user
from rlhf.collect.suggestions import score_comparisons
from storage import prompts


def _api_setup(wb) -> None:
    create_user(wb.store, "ana", "annotator", "ana-secret-pw")
    create_user(wb.store, "rita", "researcher", "rita-secret-pw")
    with wb.store.transaction() as cur:
        prompts.add_prompts(cur, "loop", [[{"role": "user", "content": f"loop {i}"}] for i in range(2)], source="test")
    made = add_comparisons(wb, 2, prompt_set="loop")
    register(wb, "rm", "reward")
    score_comparisons(wb.store, "rm", made, text_scores)  # every comparison scored: nothing for the server to do


def test_the_api_hands_out_the_suggestion_and_takes_the_new_settings(serve_workbench):
    served = serve_workbench(_api_setup, queue={"suggest": True, "prompt_sets": ["loop"]})
    ana = connect(served.url, ("ana", "ana-secret-pw"))
    item = ana.predict(api_name="/next_comparison")
    assert item["suggestion"]["ranking"] == "B > A = C > D" and item["suggestion"]["reward_version"] == "rm"

    rita = connect(served.url, ("rita", "rita-secret-pw"))
    settings = rita.predict(suggest=False, selection="uncertain", reward_models=["rm"],
                            sources=[{"version": "active", "count": 2}], api_name="/queue_settings")
    assert (settings["suggest"], settings["selection"], settings["reward_models"]) == (False, "uncertain", ["rm"])
    assert settings["sources"] == [{"version": "active", "count": 2}] and settings["k"] == 2
    ana.predict(item["handout"], "A > B > C > D", api_name="/submit_ranking")
    following = ana.predict(api_name="/next_comparison")
    assert following["handout"] is not None and "suggestion" not in following
    with pytest.raises(Exception, match="selection must be one of"):
        rita.predict(selection="best", api_name="/queue_settings")
    assert rita.predict(sources=[], api_name="/queue_settings")["sources"] is None
