"""Simulated annotators: rules, combinations, noise, specs, win rates and the LLM judge."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf.errors import UserError
from rlhf.preference.ranking import MAX_K, MIN_K, parse_ranking
from rlhf.simulate.spec import AnnotatorSpecError, parse_annotator
from rlhf.simulate.annotator import Combined, RewardModelAnnotator
from rlhf.simulate.rules import Avoids, Longer, Mentions, Shorter
from rlhf.simulate.judge import LLMJudge, find_ranking, find_top_pick, judge_winrate

PROMPT = [{"role": "user", "content": "Can you help me?"}]


def test_length_rules_tie_equal_lengths():
    completions = ["aaa", "a", "aa", " a "]  # surrounding whitespace does not count
    assert Shorter().rank(PROMPT, completions) == "B = D > C > A"
    assert Longer().rank(PROMPT, completions) == "A > C > B = D"
    assert Shorter().rank("text prompts work too", ["xx", "yy"]) == "A = B"


def test_word_rules_count_whole_words_ignoring_case():
    completions = ["Please help, PLEASE.", "please", "nothing", "pleased to help"]
    assert Mentions(["please"]).count(completions[0]) == 2
    assert Mentions(["please"]).rank(PROMPT, completions) == "A > B > C = D"
    assert Mentions("please").rank(PROMPT, completions) == "A > B > C = D"  # one word as a string
    assert Mentions(["thank you", "thanks"]).rank(PROMPT, ["Thanks!", "thank you, thanks", "thank"]) == "B > A > C"
    assert Avoids(["sorry"]).rank(PROMPT, ["Sorry, so sorry", "sorry", "fine"]) == "C > B > A"
    with pytest.raises(ValueError, match="non-empty words"):
        Mentions([" "])


def test_tie_margin_ties_close_scores():
    completions = ["a", "aa", "aaaa"]
    assert Longer().rank(PROMPT, completions) == "C > B > A"
    assert Longer(tie_margin=1).rank(PROMPT, completions) == "C > A = B"
    assert Longer(tie_margin=2).rank(PROMPT, completions) == "A = B = C"  # ties chain


def test_combinations_scale_each_rule_before_weighing():
    completions = ["x please", "xxxxxxxxxxxx please", "x"]
    # Shorter scaled: 11/12, 0, 1; mentions: 1, 1, 0 -> A 1.92, B 1, C 1.
    combined = Shorter() + Mentions(["please"])
    assert combined.rank(PROMPT, completions) == "A > B = C"
    assert combined.name == "shorter+mentions:please"
    assert Combined([Shorter(), Mentions(["please"])]).rank(PROMPT, completions) == "A > B = C"
    # Mentions weighed three times: B (3) now beats C (1).
    weighted = Shorter() + 3 * Mentions(["please"])
    assert weighted.name == "shorter+3*mentions:please"
    assert weighted.rank(PROMPT, completions) == "A > B > C"
    assert (Longer() - Shorter()).name == "longer+-1*shorter"
    assert sum([Shorter(), Longer()]).rank(PROMPT, ["ab", "abc"]) == "A = B"
    assert (Shorter() * 2).rank(PROMPT, ["ab", "abc"]) == "A > B"
    with pytest.raises(ValueError, match="2 parts but 1 weights"):
        Combined([Shorter(), Longer()], [1.0])


def test_reward_model_annotator_ranks_by_any_scorer():
    class FakeScorer:
        def __init__(self):
            self.calls = []

        def score(self, prompts, completions):
            self.calls.append((prompts, completions))
            return [len(set(text)) for text in completions]  # distinct characters

    scorer = FakeScorer()
    annotator = RewardModelAnnotator(scorer, tie_margin=0.5)
    assert annotator.rank("Hi", ["aaaa", "abc", "cba"]) == "B = C > A"
    assert scorer.calls == [([[{"role": "user", "content": "Hi"}]] * 3, ["aaaa", "abc", "cba"])]
    assert (annotator + Shorter()).rank("Hi", ["aaaa", "abc", "cba"]) == "B = C > A"
    with pytest.raises(ValueError, match="no score"):
        RewardModelAnnotator(object())


def test_noise_is_reproducible_with_a_seed():
    completions = ["a", "bb", "ccc", "dddd", "eeeee"]
    first, second = (Shorter(flip_prob=0.3, tie_prob=0.2, seed=7) for _ in range(2))
    runs = [[annotator.rank(PROMPT, completions) for _ in range(100)] for annotator in (first, second)]
    assert runs[0] == runs[1]
    assert len(set(runs[0])) > 5  # the noise does change rankings
    other = [Shorter(flip_prob=0.3, tie_prob=0.2, seed=8).rank(PROMPT, completions) for _ in range(100)]
    assert other != runs[0]
    # with_noise gives a fresh generator: the same sequence again.
    fresh = first.with_noise(seed=7)
    assert [fresh.rank(PROMPT, completions) for _ in range(100)] == runs[0]


@pytest.mark.parametrize("flip_prob", [0.1, 0.3])
def test_flips_happen_at_the_stated_rate(flip_prob):
    annotator = Shorter(flip_prob=flip_prob, seed=0)
    trials = 4000
    flipped = sum(annotator.rank(PROMPT, ["short", "much longer"]) == "B > A" for _ in range(trials))
    sd = (flip_prob * (1 - flip_prob) / trials) ** 0.5
    assert abs(flipped / trials - flip_prob) < 4 * sd


def test_ties_happen_at_the_stated_rate():
    annotator = Longer(tie_prob=0.25, seed=1)
    trials = 4000
    tied = sum(annotator.rank(PROMPT, ["short", "much longer"]) == "A = B" for _ in range(trials))
    assert abs(tied / trials - 0.25) < 4 * (0.25 * 0.75 / trials) ** 0.5


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(alphabet="ab pls", max_size=12), min_size=MIN_K, max_size=MAX_K),
    flip=st.floats(0, 1), tie=st.floats(0, 1), margin=st.floats(0, 5), seed=st.integers(0, 2**31),
)
def test_every_ranking_is_valid_and_canonical(texts, flip, tie, margin, seed):
    annotator = (Shorter() + Mentions(["pls"])).with_noise(flip_prob=flip, tie_prob=tie, tie_margin=margin, seed=seed)
    ranking = annotator.rank(PROMPT, texts)
    assert parse_ranking(ranking, len(texts)).canonical == ranking


@pytest.mark.parametrize("spec, cls, name", [
    ("shorter", Shorter, "shorter"),
    ("Longer", Longer, "longer"),
    ("mentions:please, thanks", Mentions, "mentions:please,thanks"),
    ("avoids:sorry@flip=0.1", Avoids, "avoids:sorry@flip=0.1"),
    ("shorter+mentions:please", Combined, "shorter+mentions:please"),
    (" 2*shorter + 0.5*avoids:sorry,apologise @ tie=0.2, seed=3", Combined,
     "2*shorter+0.5*avoids:sorry,apologise@tie=0.2,seed=3"),
    ("longer@margin=10", Longer, "longer@margin=10"),
])
def test_parse_annotator_reads_specs_and_names_round_trip(spec, cls, name):
    annotator = parse_annotator(spec)
    assert isinstance(annotator, cls)
    assert annotator.name == name
    assert parse_annotator(annotator.name).name == name


def test_parse_annotator_sets_the_noise():
    annotator = parse_annotator("shorter@flip=0.25,tie=0.1,margin=2,seed=9")
    assert (annotator.flip_prob, annotator.tie_prob, annotator.tie_margin, annotator.seed) == (0.25, 0.1, 2.0, 9)
    same = Shorter(flip_prob=0.25, tie_prob=0.1, tie_margin=2, seed=9)
    completions = ["a", "bbb", "cc", "dddddd"]
    assert [annotator.rank(PROMPT, completions) for _ in range(50)] == [same.rank(PROMPT, completions) for _ in range(50)]


@pytest.mark.parametrize("spec, message", [
    ("nicer", "Unknown annotator 'nicer': use shorter, longer, mentions:WORDS"),
    ("mentions", "Unknown annotator 'mentions'"),
    ("shorter+kind", "Unknown annotator 'kind' in 'shorter\\+kind'"),
    ("", "names no rule"),
    ("shorter+", "names no rule"),
    ("shorter@speed=2", "Unknown option 'speed=2'"),
    ("shorter@flip=lots", "needs a number"),
    ("shorter@flip=1.5", "flip_prob is a probability between 0 and 1"),
    ("x*shorter", "'x' in annotator 'x\\*shorter' is not a number"),
    ("judge:models/base+shorter", "cannot be combined"),
])
def test_parse_annotator_refuses_bad_specs_in_one_sentence(spec, message):
    with pytest.raises(AnnotatorSpecError, match=message) as caught:
        parse_annotator(spec)
    assert isinstance(caught.value, UserError) and isinstance(caught.value, ValueError)
    text = str(caught.value)
    assert "\n" not in text and text.endswith(".")


def test_judge_winrate_counts_ties_as_half():
    prompts = ["p1", "p2", "p3", "p4"]
    a = ["short", "a much longer one", "same", "x"]
    b = ["longer one", "short", "SAME", "xxx"]
    for randomise in (True, False):
        result = judge_winrate(Shorter(), prompts, a, b, randomise_order=randomise)
        assert result == {"n": 4, "wins": 2, "ties": 1, "losses": 1, "win_rate": 0.625}
    assert judge_winrate(Shorter(), [], [], [])["n"] == 0
    with pytest.raises(ValueError, match="one of each per prompt"):
        judge_winrate(Shorter(), prompts, a, b[:2])


def test_judge_winrate_shuffles_sides_against_position_bias():
    class FirstIsBest(Shorter):
        def scores(self, prompt, completions):
            return [-position for position in range(len(completions))]

    prompts = [f"p{i}" for i in range(400)]
    assert judge_winrate(FirstIsBest(), prompts, ["a"] * 400, ["b"] * 400, randomise_order=False)["win_rate"] == 1.0
    shuffled = judge_winrate(FirstIsBest(), prompts, ["a"] * 400, ["b"] * 400)["win_rate"]
    assert 0.4 < shuffled < 0.6


def test_finding_a_ranking_in_a_judge_answer():
    assert find_ranking("B > A = C", 3).canonical == "B > A = C"
    assert find_ranking("The ranking is: C > A > B.\nBecause...", 3).canonical == "C > A > B"
    assert find_ranking("b>a", 2).canonical == "B > A"
    assert find_ranking("Answer A > Answer B", 2) is None
    assert find_ranking("A > B", 3) is None  # C missing
    assert find_top_pick("The answer to the question is A.", 3) == "A"
    assert find_top_pick("A or B", 3) is None
    assert find_top_pick("Definitely D", 3) is None  # not shown


def test_llm_judge_on_a_tiny_model_always_returns_a_valid_ranking(tiny_model_dir):
    from rlhf.modeling.models import load_policy

    judge = LLMJudge(load_policy(tiny_model_dir), flip_prob=0.1, seed=1)
    messages = judge.judge_prompt(PROMPT, ["Sure.", "No.", "Maybe."])
    assert "Answer C:\nMaybe." in messages[0]["content"] and "A > B = C" in messages[0]["content"]
    for completions in (["Sure, happy to.", "No."], ["Sure.", "No.", "Maybe later.", "What?"]):
        ranking = judge.rank(PROMPT, completions)
        assert parse_ranking(ranking, len(completions)).canonical == ranking
        assert judge.last_method in ("parsed", "top_pick", "yes_no")
    assert sum(judge.counts.values()) == 2
    scores = judge.yes_no_scores(PROMPT, ["Sure.", "No."])
    assert len(scores) == 2 and all(isinstance(score, float) for score in scores)
    result = judge_winrate(judge, ["Hi", "Hello"], ["Hello!", "Hi."], ["Go away.", "Hey"])
    assert result["n"] == 2 and 0.0 <= result["win_rate"] <= 1.0
