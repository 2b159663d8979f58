"""The small named rules every layer refuses with: one wording, the caller's error class."""

from __future__ import annotations

import pytest

from rlhf.checks import require_prompt_set, require_whole, typed_whole
from rlhf.errors import UserError


class OwnError(UserError):
    pass


@pytest.mark.parametrize("value", [0, 11, 2.0, True, "3", None])
def test_a_value_that_is_not_a_whole_number_in_range_is_refused_in_the_callers_words(value):
    with pytest.raises(OwnError) as refused:
        require_whole("overlap", value, 1, 10, OwnError)
    assert str(refused.value) == f"overlap must be a whole number from 1 to 10, not {value!r}."


def test_a_whole_number_in_range_passes_and_an_open_range_says_so():
    assert require_whole("k", 10, 1, 10) == 10 and require_whole("N", 10**9) == 10**9
    with pytest.raises(UserError, match=r"^N must be a whole number of 1 or more, not -2\.$"):
        require_whole("N", -2)


@pytest.mark.parametrize("typed, seen", [(8, 8), (8.0, 8), ("8", 8), ("8.5", "8.5"), (8.5, 8.5), ("", ""),
                                         (True, True), (None, None), (float("inf"), float("inf"))])
def test_a_typed_number_becomes_an_int_only_when_it_is_whole(typed, seen):
    assert typed_whole(typed) == seen and type(typed_whole(typed)) is type(seen)


def test_an_unknown_prompt_set_is_named_with_the_known_ones():
    assert require_prompt_set("a", ["a", "b"]) == "a"
    with pytest.raises(OwnError, match=r"^There is no prompt set 'c' \(known sets: a, b\)\.$"):
        require_prompt_set("c", iter(["a", "b"]), OwnError)
    with pytest.raises(UserError, match=r"\(known sets: none\)"):
        require_prompt_set("c", [])
