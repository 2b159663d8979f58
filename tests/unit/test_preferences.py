"""Rankings to training rows: preference pairs, tied pairs and unpaired (KTO) examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rlhf.preference.pairs import (
    PAIR_COLUMNS,
    TIED_COLUMNS,
    UNPAIRED_COLUMNS,
    preference_pairs,
    prompt_messages,
    tied_pairs,
    unpaired_examples,
)
from rlhf.preference.ranking import RankingError

COMPLETIONS = ["alpha", "bravo", "charlie", "delta"]
PROMPT = [{"role": "user", "content": "Name a letter."}]


def user_turn(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def said(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def rankings_frame(*rows: dict) -> pd.DataFrame:
    """Ranking rows with defaults for the columns a test does not care about."""
    defaults = {
        "ranking_id": 1,
        "comparison_id": 10,
        "prompt": "Name a letter.",
        "completions": COMPLETIONS,
        "user": "ann",
    }
    return pd.DataFrame([defaults | row for row in rows])


# --- prompt_messages ---------------------------------------------------------------------


def test_prompt_text_becomes_one_user_turn():
    assert prompt_messages({"prompt": "Hi?"}) == user_turn("Hi?")
    assert prompt_messages({"prompt": "Hi?", "messages": None}) == user_turn("Hi?")
    assert prompt_messages(pd.Series({"prompt": "Hi?", "messages": np.nan})) == user_turn("Hi?")
    assert prompt_messages({"prompt": "Hi?", "messages": []}) == user_turn("Hi?")


def test_messages_replace_the_prompt_and_keep_only_role_and_content():
    conversation = [
        {"role": "system", "content": "Be brief.", "name": None},
        {"role": "user", "content": "Hi?", "name": None},
    ]
    expected = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    assert prompt_messages({"prompt": "ignored", "messages": conversation}) == expected
    # Parquet gives lists back as numpy arrays.
    assert prompt_messages({"prompt": "ignored", "messages": np.array(conversation)}) == expected


# --- preference_pairs --------------------------------------------------------------------


def test_four_way_ranking_with_a_tie_gives_five_pairs_with_rank_distance_margins():
    pairs = preference_pairs(rankings_frame({"ranking": "C > B = D > A"}))
    assert list(pairs.columns) == PAIR_COLUMNS
    assert [
        (row.chosen[0]["content"], row.rejected[0]["content"], row.margin)
        for row in pairs.itertuples()
    ] == [
        ("charlie", "bravo", 1.0),
        ("charlie", "delta", 1.0),
        ("charlie", "alpha", 2.0),
        ("bravo", "alpha", 1.0),
        ("delta", "alpha", 1.0),
    ]
    first = pairs.iloc[0].to_dict()
    assert first == {
        "prompt": PROMPT,
        "chosen": said("charlie"),
        "rejected": said("bravo"),
        "margin": 1.0,
        "comparison_id": 10,
        "ranking_id": 1,
        "user": "ann",
    }
    assert pairs["margin"].dtype == float


def test_best_vs_worst_pairs_only_the_end_groups():
    pairs = preference_pairs(
        rankings_frame({"ranking": "A = C > B > D"}), selection="best_vs_worst"
    )
    assert [
        (row.chosen[0]["content"], row.rejected[0]["content"], row.margin)
        for row in pairs.itertuples()
    ] == [("alpha", "delta", 2.0), ("charlie", "delta", 2.0)]


def test_full_tie_gives_no_pairs():
    frame = rankings_frame({"ranking": "A = B = C = D"})
    assert preference_pairs(frame).empty
    assert preference_pairs(frame, selection="best_vs_worst").empty


def test_annotators_stay_apart_and_messages_are_the_prompt():
    conversation = [{"role": "system", "content": "Be brief."}, *user_turn("Pick.")]
    frame = rankings_frame(
        {"ranking_id": 1, "user": "ann", "ranking": "B > A", "completions": ["x", "y"]},
        {
            "ranking_id": 2,
            "user": "bob",
            "ranking": "A > B",
            "completions": ["x", "y"],
            "messages": conversation,
        },
    )
    pairs = preference_pairs(frame)
    assert pairs[["ranking_id", "user"]].to_dict("records") == [
        {"ranking_id": 1, "user": "ann"},
        {"ranking_id": 2, "user": "bob"},
    ]
    assert pairs["chosen"].tolist() == [said("y"), said("x")]
    assert pairs["prompt"].tolist() == [PROMPT, conversation]


def test_unknown_selection_is_rejected():
    with pytest.raises(ValueError, match="selection must be one of all, best_vs_worst"):
        preference_pairs(rankings_frame({"ranking": "A > B > C > D"}), selection="top")


def test_ranking_that_does_not_fit_its_completions_raises():
    with pytest.raises(RankingError, match="'E' is not one of the shown completions A–D."):
        preference_pairs(rankings_frame({"ranking": "E > A > B > C > D"}))


# --- tied_pairs --------------------------------------------------------------------------


def test_tied_pairs_lists_each_tie_once():
    ties = tied_pairs(rankings_frame({"ranking": "B = C = D > A"}))
    assert list(ties.columns) == TIED_COLUMNS
    assert ties.to_dict("records") == [
        {
            "prompt": PROMPT,
            "completion_a": said(a),
            "completion_b": said(b),
            "comparison_id": 10,
            "ranking_id": 1,
            "user": "ann",
        }
        for a, b in [("bravo", "charlie"), ("bravo", "delta"), ("charlie", "delta")]
    ]


def test_strict_ranking_has_no_tied_pairs():
    assert tied_pairs(rankings_frame({"ranking": "D > C > B > A"})).empty


# --- unpaired_examples -------------------------------------------------------------------


def labelled(examples: pd.DataFrame) -> list[tuple[str, bool, str]]:
    return [
        (row.completion[0]["content"], row.label, row.user) for row in examples.itertuples()
    ]


def test_top_is_desirable_bottom_undesirable_middle_dropped():
    examples = unpaired_examples(rankings_frame({"ranking": "C > B = D > A"}))
    assert list(examples.columns) == UNPAIRED_COLUMNS
    assert examples.iloc[0].to_dict() == {
        "prompt": PROMPT,
        "completion": said("charlie"),
        "label": True,
        "comparison_id": 10,
        "ranking_id": 1,
        "user": "ann",
    }
    assert labelled(examples) == [("charlie", True, "ann"), ("alpha", False, "ann")]


def test_tied_top_and_bottom_groups_all_count():
    examples = unpaired_examples(rankings_frame({"ranking": "A = D > B = C"}))
    assert labelled(examples) == [
        ("alpha", True, "ann"),
        ("delta", True, "ann"),
        ("bravo", False, "ann"),
        ("charlie", False, "ann"),
    ]


def test_full_tie_gives_no_unpaired_examples():
    assert unpaired_examples(rankings_frame({"ranking": "A = B = C = D"})).empty


def test_explicit_labels_override_and_add_rows():
    frame = rankings_frame(
        {"ranking_id": 1, "user": "ann", "ranking": "C > B = D > A"},
        {"ranking_id": 2, "user": "bob", "ranking": "A = B = C = D"},
    )
    labels = pd.DataFrame(
        [
            # ann ranked C best but marks it bad: the mark wins.
            {"comparison_id": 10, "letter": "C", "good": False, "user": "ann"},
            # B was in ann's middle group: the mark adds a row.
            {"comparison_id": 10, "letter": "b", "good": True, "user": "ann"},
            # bob's full tie gave nothing, his mark still counts, with his ranking's id.
            {"comparison_id": 10, "letter": "D", "good": False, "user": "bob"},
            # carol's ranking is not among these rankings, so neither is her mark.
            {"comparison_id": 10, "letter": "A", "good": True, "user": "carol"},
            # an unmarked completion is not a label.
            {"comparison_id": 10, "letter": "A", "good": None, "user": "ann"},
            # a comparison that is not among the rankings cannot be shown, so is skipped.
            {"comparison_id": 99, "letter": "A", "good": True, "user": "ann"},
        ]
    )
    examples = unpaired_examples(frame, labels)
    assert labelled(examples) == [
        ("charlie", False, "ann"),
        ("alpha", False, "ann"),
        ("bravo", True, "ann"),
        ("delta", False, "bob"),
    ]
    assert examples["ranking_id"].tolist() == [1, 1, 1, 2]
    assert examples["label"].map(type).eq(bool).all()


def test_label_for_a_letter_that_was_not_shown_raises():
    labels = pd.DataFrame([{"comparison_id": 10, "letter": "F", "good": True, "user": "ann"}])
    with pytest.raises(RankingError, match="'F' is not one of the shown completions A–D."):
        unpaired_examples(rankings_frame({"ranking": "A > B > C > D"}), labels)


# --- empty input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "empty",
    [
        pd.DataFrame(),
        pd.DataFrame(
            columns=["ranking_id", "comparison_id", "prompt", "completions", "ranking", "user"]
        ),
    ],
)
def test_empty_input_gives_empty_frames_with_the_right_columns(empty):
    assert list(preference_pairs(empty).columns) == PAIR_COLUMNS
    assert list(tied_pairs(empty).columns) == TIED_COLUMNS
    assert list(unpaired_examples(empty).columns) == UNPAIRED_COLUMNS
    no_labels = pd.DataFrame(columns=["comparison_id", "letter", "good", "user"])
    assert unpaired_examples(empty, no_labels).empty
    assert preference_pairs(empty).empty and tied_pairs(empty).empty
