"""The ranking grammar: parsing, canonical form, pairs and every error message."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rlhf.preference.ranking import (
    MAX_K,
    MIN_K,
    Pair,
    Ranking,
    RankingError,
    letter_index,
    letters,
    parse_ranking,
    ranking_from_ranks,
)

# --- letters -----------------------------------------------------------------------------


def test_letters_names_shown_completions_in_order():
    assert letters(2) == "AB"
    assert letters(4) == "ABCD"
    assert letters(8) == "ABCDEFGH"


@pytest.mark.parametrize("k", [-1, 0, 1, 9])
def test_letters_rejects_k_outside_two_to_eight(k):
    with pytest.raises(ValueError, match=f"between 2 and 8 completions, not {k}"):
        letters(k)


# --- canonical form ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "k", "canonical"),
    [
        ("C > B = D > A", 4, "C > B = D > A"),
        ("c>b=d>a", 4, "C > B = D > A"),
        ("C>D=B>A", 4, "C > B = D > A"),
        ("  c >  d=b  >a  ", 4, "C > B = D > A"),
        ("\tb\n>\ta", 2, "B > A"),
        ("a=b", 2, "A = B"),
        ("B = A", 2, "A = B"),
        ("h>g>f>e>d>c>b>a", 8, "H > G > F > E > D > C > B > A"),
        ("D = C = B = A > E", 5, "A = B = C = D > E"),
    ],
)
def test_parse_canonicalises_case_spacing_and_tie_order(text, k, canonical):
    assert parse_ranking(text, k).canonical == canonical


def test_ranking_views_of_the_design_example():
    ranking = parse_ranking("C > B = D > A", 4)
    assert ranking.groups == (("C",), ("B", "D"), ("A",))
    assert ranking.k == 4
    assert ranking.ranks() == {"C": 1, "B": 2, "D": 2, "A": 3}
    assert ranking.rank_list() == [3, 2, 1, 2]
    assert ranking.pairs() == [
        Pair("C", "B", 1),
        Pair("C", "D", 1),
        Pair("C", "A", 2),
        Pair("B", "A", 1),
        Pair("D", "A", 1),
    ]
    assert ranking.tied_pairs() == [("B", "D")]
    assert ranking.top == ("C",)
    assert ranking.bottom == ("A",)
    assert not ranking.is_full_tie


def test_full_tie_has_everything_on_top_and_nothing_at_the_bottom():
    ranking = parse_ranking("b = c = a", 3)
    assert ranking.is_full_tie
    assert ranking.top == ("A", "B", "C")
    assert ranking.bottom == ()
    assert ranking.pairs() == []
    assert ranking.tied_pairs() == [("A", "B"), ("A", "C"), ("B", "C")]


def test_ranking_sorts_groups_it_is_given_and_rejects_incomplete_ones():
    assert Ranking((("D", "B"), ("C", "A"))).canonical == "B = D > A = C"
    with pytest.raises(ValueError):
        Ranking((("A",), ("C",)))
    with pytest.raises(ValueError):
        Ranking((("A",), (), ("B",)))


# --- ranking_from_ranks ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ranks", "canonical"),
    [
        ([1, 1, 3, 4], "A = B > C > D"),
        ([3, 2, 1, 2], "C > B = D > A"),
        ([2, 1], "B > A"),
        ([5, 5], "A = B"),
        ([1, 10, 10, 4], "A > D > B = C"),
    ],
)
def test_ranking_from_ranks(ranks, canonical):
    assert ranking_from_ranks(ranks).canonical == canonical


@pytest.mark.parametrize(
    ("ranks", "k", "message"),
    [
        ([1, 2, 3], 4, "Got 3 ranks for 4 completions: give every shown completion one rank."),
        ([1, None, 2], None, "'B' has no rank: give every shown completion one rank."),
        ([1, 0], None, "'B' has rank 0, but ranks are whole numbers from 1 up."),
        ([-1, 1], None, "'A' has rank -1, but ranks are whole numbers from 1 up."),
        ([1, 1.5], None, "'B' has rank 1.5, but ranks are whole numbers from 1 up."),
        ([1, "2"], None, "'B' has rank '2', but ranks are whole numbers from 1 up."),
        ([True, 2], None, "'A' has rank True, but ranks are whole numbers from 1 up."),
    ],
)
def test_ranking_from_ranks_errors(ranks, k, message):
    with pytest.raises(RankingError) as error:
        ranking_from_ranks(ranks, k)
    assert str(error.value) == message


# --- every error and its message ---------------------------------------------------------


def wrong_separator(found: str) -> str:
    return (
        f"Found '{found}', but only '>' (better than) and '=' (tie) are allowed "
        "between completions."
    )


@pytest.mark.parametrize(
    ("text", "k", "message"),
    [
        # empty
        ("", 4, "The ranking is empty: order the completions A–D with '>' and '='."),
        ("   \t", 3, "The ranking is empty: order the completions A–C with '>' and '='."),
        # unknown letter
        ("A > B > C > D > E", 4, "'E' is not one of the shown completions A–D."),
        ("a > z", 2, "'Z' is not one of the shown completions A–B."),
        # non-letter token
        ("1 > 2", 2, "'1' is not a completion letter: use the letters A–B."),
        ("A > B > 42", 3, "'42' is not a completion letter: use the letters A–C."),
        ("A > é", 2, "'é' is not a completion letter: use the letters A–B."),
        # duplicate
        ("A > B = B", 2, "'B' appears more than once."),
        ("a > A", 2, "'A' appears more than once."),
        # missing, all of them listed
        ("B > C = D", 4, "'A' is missing: rank every shown completion."),
        ("B > D", 4, "'A' and 'C' are missing: rank every shown completion."),
        ("B", 4, "'A', 'C' and 'D' are missing: rank every shown completion."),
        # two operators in a row (an empty group)
        ("A > B > = C", 3, "Two operators in a row after 'B': put a completion between them."),
        ("A = > B", 2, "Two operators in a row after 'A': put a completion between them."),
        ("A > > B", 2, "Two operators in a row after 'A': put a completion between them."),
        # dangling operator
        ("> A > B", 2, "The ranking starts with '>': put a completion before it."),
        ("= A = B", 2, "The ranking starts with '=': put a completion before it."),
        ("A > B >", 3, "The ranking ends with '>': put a completion after it."),
        ("A = B =", 2, "The ranking ends with '=': put a completion after it."),
        # wrong separators
        ("A, B", 2, wrong_separator(",")),
        ("A >= B", 2, wrong_separator(">=")),
        ("A == B", 2, wrong_separator("==")),
        ("A >> B", 2, wrong_separator(">>")),
        ("A / B", 2, wrong_separator("/")),
        ("A - B", 2, wrong_separator("-")),
        ("A ≥ B", 2, wrong_separator("≥")),
        ("A_B", 2, wrong_separator("_")),
        (
            "A < B",
            2,
            "Found '<', but only '>' and '=' are allowed: write the better completion first, "
            "as in 'B > A' rather than 'A < B'.",
        ),
        (
            "A <= B",
            2,
            "Found '<=', but only '>' and '=' are allowed: write the better completion first, "
            "as in 'B > A' rather than 'A < B'.",
        ),
        # letters without an operator
        ("A B", 2, "'A' and 'B' need an operator between them: '>' or '='."),
        ("cb > a", 3, "'C' and 'B' need an operator between them: '>' or '='."),
    ],
)
def test_parse_error_messages(text, k, message):
    with pytest.raises(RankingError) as error:
        parse_ranking(text, k)
    assert str(error.value) == message


def test_first_problem_in_reading_order_is_reported():
    # Both a dangling '>' and a missing 'C': the dangling operator comes first.
    with pytest.raises(RankingError, match="ends with '>'"):
        parse_ranking("A > B >", 3)
    # An unknown letter before a duplicate.
    with pytest.raises(RankingError, match="'E' is not one of"):
        parse_ranking("E > A > A", 2)


def test_ranking_error_is_a_value_error():
    assert issubclass(RankingError, ValueError)


def test_letter_index_finds_shown_letters_and_rejects_others():
    assert [letter_index(letter, 4) for letter in "ABCD"] == [0, 1, 2, 3]
    for wrong in ["E", "a", "AB", ""]:
        with pytest.raises(RankingError, match="is not one of the shown completions A–D."):
            letter_index(wrong, 4)


# --- properties over random rankings -----------------------------------------------------


@st.composite
def groups_strategy(draw) -> tuple[tuple[str, ...], ...]:
    """A random valid ranking: the shown letters shuffled and cut into ordered groups."""
    k = draw(st.integers(MIN_K, MAX_K))
    order = draw(st.permutations(letters(k)))
    cuts = draw(st.sets(st.integers(1, k - 1)))
    bounds = [0, *sorted(cuts), k]
    return tuple(tuple(sorted(order[start:end])) for start, end in zip(bounds, bounds[1:]))


@st.composite
def messy_text(draw, groups: tuple[tuple[str, ...], ...]) -> str:
    """The ranking as a hurried annotator may type it: any case, spacing and tie order."""
    spaces = st.sampled_from(["", " ", "  ", "\t"])

    def letter(name: str) -> str:
        return draw(st.sampled_from([name, name.lower()]))

    def operator(symbol: str) -> str:
        return f"{draw(spaces)}{symbol}{draw(spaces)}"

    written_groups = []
    for group in groups:
        shuffled = draw(st.permutations(group))
        written_groups.append(operator("=").join(letter(name) for name in shuffled))
    text = written_groups[0]
    for written in written_groups[1:]:
        text += operator(">") + written
    return f"{draw(spaces)}{text}{draw(spaces)}"


@st.composite
def ranking_with_text(draw) -> tuple[tuple[tuple[str, ...], ...], str]:
    groups = draw(groups_strategy())
    return groups, draw(messy_text(groups))


@given(ranking_with_text())
def test_messy_text_parses_to_the_intended_groups(case):
    groups, text = case
    k = sum(len(group) for group in groups)
    ranking = parse_ranking(text, k)
    assert ranking.groups == groups
    assert re.fullmatch(r"[A-H]( [>=] [A-H])*", ranking.canonical)


@given(groups_strategy())
def test_canonical_form_is_idempotent(groups):
    ranking = Ranking(groups)
    again = parse_ranking(ranking.canonical, ranking.k)
    assert again.canonical == ranking.canonical
    assert again.groups == groups


@given(groups_strategy())
def test_pairs_follow_the_order(groups):
    ranking = Ranking(groups)
    ranks = ranking.ranks()
    pairs = ranking.pairs()
    for pair in pairs:
        assert ranks[pair.better] < ranks[pair.worse]
        assert pair.margin == ranks[pair.worse] - ranks[pair.better] >= 1
    assert all(
        not (pair.better in group and pair.worse in group) for pair in pairs for group in groups
    )
    assert len({(pair.better, pair.worse) for pair in pairs}) == len(pairs)
    k = ranking.k
    assert len(pairs) == k * (k - 1) // 2 - len(ranking.tied_pairs())


@given(groups_strategy())
def test_tied_pairs_are_exactly_the_pairs_within_groups(groups):
    ranking = Ranking(groups)
    ranks = ranking.ranks()
    tied = ranking.tied_pairs()
    assert all(first < second and ranks[first] == ranks[second] for first, second in tied)
    assert len(tied) == sum(len(group) * (len(group) - 1) // 2 for group in groups)


@given(groups_strategy())
def test_ranks_round_trip(groups):
    ranking = Ranking(groups)
    assert ranking_from_ranks(ranking.rank_list()) == ranking
    assert ranking_from_ranks(ranking.rank_list(), ranking.k) == ranking
    assert sorted(set(ranking.rank_list())) == list(range(1, len(groups) + 1))


@given(groups_strategy())
def test_top_and_bottom_are_the_end_groups(groups):
    ranking = Ranking(groups)
    assert ranking.top == groups[0]
    assert ranking.bottom == (() if len(groups) == 1 else groups[-1])
    assert ranking.is_full_tie == (len(groups) == 1)


@given(st.integers(MIN_K, MAX_K), st.lists(st.integers(1, 12), min_size=MIN_K, max_size=MAX_K))
def test_any_positive_ranks_give_a_ranking_that_keeps_their_order(k, ranks):
    ranks = (ranks * MAX_K)[:k]
    ranking = ranking_from_ranks(ranks)
    dense = ranking.rank_list()
    for i in range(k):
        for j in range(k):
            assert (ranks[i] < ranks[j]) == (dense[i] < dense[j])


_GRAMMAR_ALPHABET = "ABCDEFGHIJabcdez>=<,;/-_ .\t\n0123456789é≥"


@given(
    st.integers(MIN_K, MAX_K),
    st.text(alphabet=_GRAMMAR_ALPHABET, max_size=30) | st.text(max_size=30),
)
def test_junk_only_ever_raises_ranking_error(k, text):
    try:
        ranking = parse_ranking(text, k)
    except RankingError as error:
        message = str(error)
        assert message.endswith(".") and "\n" not in message
    else:
        assert ranking.k == k
        assert parse_ranking(ranking.canonical, k) == ranking
