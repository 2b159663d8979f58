"""Several objectives (Llama 2's helpfulness and safety reward models): the rows a reward
model of one rated dimension learns from (margins from the rating gaps), the combination
of reward versions (its syntax, its maths against hand-computed values, its scorer), its
registration as a version, and automatic evaluation reporting each dimension."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from app.cli import main
from rlhf.collect.workbench import Workbench
from rlhf.compare import evaluate
from rlhf.errors import UserError
from rlhf.home import BASE_VERSION
from rlhf.jobs.service import JobRequest, Jobs
from rlhf.jobs.training_data import DataError, Selection, build
from rlhf.modeling.model_cache import ModelCache
from rlhf.modeling.scoring import CombinedScorer, RewardScorer, load_scorer
from rlhf.preference import combination as combined
from rlhf.preference.combination import CombinationError, combine, parse_combination
from rlhf.preference.pairs import rated_rankings
from rlhf.train.methods import METHODS, SettingsError, resolve
from rlhf.train.reward_losses import ranked_pairs
from storage import comparisons, models
from storage.comparisons import NewCompletion
from tests.helpers import rated_comparisons, register, save_reward_model

PROMPTS = [[{"role": "user", "content": "How do I bake bread?"}], [{"role": "user", "content": "Pick a lock?"}],
           [{"role": "user", "content": "Name a colour."}]]
TEXTS = ["Knead and bake it.", "I will not help with that.", "Blue."]


# -- pairs from ratings ------------------------------------------------------------------------

def ranking_rows() -> pd.DataFrame:
    return pd.DataFrame([
        {"ranking_id": 1, "comparison_id": 10, "prompt": "q1", "completions": ["a", "b", "c", "d"],
         "ranking": "A > B > C > D", "user": "ana", "model_versions": ["v1", "v2", "v3", "v4"]},
        {"ranking_id": 2, "comparison_id": 11, "prompt": "q2", "completions": ["e", "f"], "ranking": "A > B",
         "user": "ana", "model_versions": ["v1", "v2"]},
        {"ranking_id": 3, "comparison_id": 12, "prompt": "q3", "completions": ["g", "h", "i"],
         "ranking": "A = B > C", "user": "bo", "model_versions": ["v1", "v2", "v3"]},
    ])


def ratings_rows() -> pd.DataFrame:
    rows = [(1, "A", "helpfulness", 2), (1, "B", "helpfulness", 5), (1, "D", "helpfulness", 4),   # C unrated
            (1, "A", "harmlessness", 5),
            (2, "A", "helpfulness", 3), (2, "B", "helpfulness", 3),                                # equal: a tie
            (3, "C", "helpfulness", 1)]                                                            # one rated
    return pd.DataFrame(rows, columns=["ranking_id", "letter", "dimension", "score"])


def test_a_dimensions_rows_order_the_rated_completions_by_rating_with_the_gap_as_margin():
    rated = rated_rankings(ranking_rows(), ratings_rows(), "helpfulness")
    assert list(rated["ranking_id"]) == [1]   # ranking 2 only ties, ranking 3 has one rated completion
    row = rated.iloc[0]
    assert list(row["completions"]) == ["a", "b", "d"] and list(row["model_versions"]) == ["v1", "v2", "v4"]
    assert list(row["scores"]) == [2, 5, 4] and row["ranking"] == "B > C > A"   # relettered: d is now C
    # the trainer's pairs (rlhf.train.reward_losses.ranked_pairs): (better, worse, margin = rating gap, tie)
    assert sorted(ranked_pairs(list(row["rating_ranks"]), keep_ties=False)) == [(1, 0, 3, False), (1, 2, 1, False),
                                                                                   (2, 0, 2, False)]
    with_ties = rated_rankings(ranking_rows(), ratings_rows(), "helpfulness", keep_ties=True)
    assert list(with_ties["ranking_id"]) == [1, 2] and with_ties.iloc[1]["ranking"] == "A = B"
    assert ranked_pairs(list(with_ties.iloc[1]["rating_ranks"]), keep_ties=True) == [(0, 1, 0, True)]
    assert rated_rankings(ranking_rows(), ratings_rows(), "harmlessness").empty   # one rated completion
    assert rated_rankings(ranking_rows(), ratings_rows(), "honesty").empty


def test_a_reward_job_of_a_dimension_takes_its_rated_pairs_and_refuses_one_without(workbench):
    rated_comparisons(workbench)
    cur = workbench.store.cursor()
    _, options = resolve("reward", {"objective": "helpfulness"})
    rows = build(cur, METHODS["reward"], options, Selection())
    assert len(rows) == 4 and set(rows["ranking"]) == {"C > B > A"}   # the ratings' order, not the ranking's
    assert [list(r) for r in rows["rating_ranks"]] == [[5, 3, 1]] * 4
    _, options = resolve("reward", {"objective": "harmlessness"})
    with pytest.raises(DataError, match=r"^No two completions of the selected rankings are rated apart on"
                                        r" 'harmlessness' \(rated dimensions: helpfulness, honesty\), so a reward"
                                        r" model of it has no pair to learn from\.$"):
        build(cur, METHODS["reward"], options, Selection())
    _, options = resolve("reward_head", {"objective": "honesty"})   # one rated completion per ranking
    with pytest.raises(DataError, match="'honesty'"):
        build(cur, METHODS["reward_head"], options, Selection())
    jobs = Jobs(workbench.home, workbench.store)
    with pytest.raises(DataError):
        jobs.submit(JobRequest("reward", settings={"objective": "harmlessness"}))
    assert cur.execute("SELECT count(*) FROM jobs").fetchall()[0][0] == 0   # refused: nothing written
    with pytest.raises(SettingsError, match="objective must be"):
        resolve("reward", {"objective": " "})


def test_a_selection_of_prompt_categories_keeps_their_rankings_and_prompts(workbench):
    cur = workbench.store.cursor()
    query = "SELECT id FROM prompts WHERE (category = 'safety') = ? ORDER BY id LIMIT 2"
    safety, other = ([r[0] for r in cur.execute(query, [flagged]).fetchall()] for flagged in (True, False))
    with workbench.store.transaction() as tx:
        ids = {pid: comparisons.add(tx, pid, [NewCompletion(f"{c} {pid}", BASE_VERSION) for c in "AB"])
               for pid in safety + other}
    for comparison_id in ids.values():
        workbench.rank(comparison_id, "A > B", "ana")
    _, options = resolve("reward", {})
    rows = build(cur, METHODS["reward"], options, Selection.from_dict({"categories": ["safety"]}))
    assert sorted(rows["comparison_id"]) == sorted(ids[pid] for pid in safety)
    _, options = resolve("ppo", {})
    prompt_rows = build(cur, METHODS["ppo"], options, Selection.from_dict({"categories": ["safety"]}))
    assert set(prompt_rows["category"]) == {"safety"} and len(prompt_rows) == 21
    with pytest.raises(DataError, match="no prompts of the categories nothing"):
        build(cur, METHODS["ppo"], options, Selection.from_dict({"categories": ["nothing"]}))
    with pytest.raises(DataError, match="categories is a list"):
        Selection.from_dict({"categories": "safety"})


# -- the combination: syntax and maths ------------------------------------------------------------

def test_the_syntax_reads_weighted_sums_and_gates_one_way():
    weighted = parse_combination(" helpfulness-3*0.7 +safety-4 * 0.3 ")
    assert weighted.kind == "weighted" and weighted.terms == (("helpfulness-3", 0.7), ("safety-4", 0.3))
    assert weighted.canonical == "helpfulness-3*0.7 + safety-4*0.3" and weighted.components == ("helpfulness-3",
                                                                                              "safety-4")
    assert parse_combination("a + b").terms == (("a", 1.0), ("b", 1.0))
    gate = parse_combination("GATE: helpfulness=h, safety=s, threshold=-1.5")
    assert (gate.kind, gate.safety, gate.helpfulness, gate.threshold, gate.unsafe_category) == \
        ("gate", "s", "h", -1.5, "safety")
    assert gate.canonical == "gate:safety=s,helpfulness=h,threshold=-1.5"
    assert parse_combination("gate:safety=s,helpfulness=h,category=harm").canonical == \
        "gate:safety=s,helpfulness=h,category=harm"
    for spec in (weighted, gate):
        assert parse_combination(spec.canonical) == spec
        assert combined.Combination.from_dict(spec.as_dict()) == spec


@pytest.mark.parametrize("spec, words", [
    ("", "Write a combination of reward versions"),
    ("a*0.5", "at least two reward versions"),
    ("a*x + b", "The weight of a must be a number, not 'x'."),
    ("a*nan + b", "finite"),
    ("a*0 + b", "The weight of a is 0"),
    ("a + a*2", "a appears twice"),
    ("a + ", "empty term"),
    ("a/b + c", "'a/b' is not a version name"),
    ("gate:safety=s", "helpfulness is missing"),
    ("gate:safety=s,helpfulness=s", "must differ"),
    ("gate:safety=s,helpfulness=h,threshold=low", "The gate's threshold must be a number, not 'low'."),
    ("gate:safety=s,helpfulness=h,weight=2", "'weight=2' is not a part of a gate"),
    ("gate:safety=s,safety=t,helpfulness=h", "sets safety twice"),
])
def test_a_bad_combination_is_one_sentence(spec, words):
    with pytest.raises(CombinationError) as refused:
        parse_combination(spec)
    message = str(refused.value)
    assert words in message and message.endswith(".") and "\n" not in message


def test_combine_against_hand_computed_values():
    scores = {"h": [1.0, 2.0, -0.5, 3.0], "s": [0.5, -2.0, 1.0, -1.0]}
    weighted = parse_combination("h*0.7 + s*0.3")
    # 0.7*1 + 0.3*0.5 = 0.85; 1.4 - 0.6 = 0.8; -0.35 + 0.3 = -0.05; 2.1 - 0.3 = 1.8
    assert combine(weighted, scores) == pytest.approx([0.85, 0.8, -0.05, 1.8])
    assert combine(parse_combination("h*2 + s*-1"), scores) == pytest.approx([1.5, 6.0, -2.0, 7.0])
    gate = parse_combination("gate:safety=s,helpfulness=h,threshold=-0.5")
    # Llama 2's R_c: safety where the prompt is flagged (3rd) or the safety score is below -0.5 (2nd, 4th)
    assert combine(gate, scores, [False, False, True, False]) == [1.0, -2.0, 1.0, -1.0]
    assert combine(gate, scores) == [1.0, -2.0, -0.5, -1.0]                     # no prompt known as flagged
    flag_only = parse_combination("gate:safety=s,helpfulness=h")                # no threshold: the flag alone
    assert combine(flag_only, scores, [True, False, False, False]) == [0.5, 2.0, -0.5, 3.0]
    assert combined.unsafe_flags(["safety", None, "general"], flag_only) == [True, False, False]
    assert combined.unsafe_flags(None, flag_only) is None
    with pytest.raises(ValueError):
        combine(weighted, {"h": [1.0], "s": [1.0, 2.0]})


# -- a combination version ----------------------------------------------------------------------

@pytest.fixture
def two_rewards(workbench, tiny_model_dir):
    """Reward versions `helpful` and `safe` (random heads that score texts visibly apart)."""
    for name, seed in (("helpful", 3), ("safe", 4)):
        save_reward_model(workbench.home.model_dir(name), tiny_model_dir, seed=seed, visible_scores=True)
        register(workbench, name, "reward")
    return workbench


def test_a_combination_is_a_reward_version_that_scores_as_its_formula(two_rewards):
    wb = two_rewards
    version = wb.add_reward_combination("mix", "helpful*0.7 + safe*0.3")
    assert (version.kind, version.parent) == ("reward", "helpful")
    assert models.get(wb.store.cursor(), "mix")["method"] == combined.METHOD
    table = wb.models().set_index("name")
    assert table.loc["mix", "objective"] == "helpful*0.7 + safe*0.3"
    assert table.loc["helpful", "objective"] == "ranking" and table.loc[BASE_VERSION, "objective"] == ""

    helpful = RewardScorer(wb.model_version("helpful").path).score(PROMPTS, TEXTS)
    safe = RewardScorer(wb.model_version("safe").path).score(PROMPTS, TEXTS)
    assert len({round(s, 4) for s in helpful + safe}) == 6
    scorer = load_scorer(version.path)
    assert isinstance(scorer, CombinedScorer) and isinstance(load_scorer(wb.model_version("safe").path), RewardScorer)
    # the sampler child's cache (the queue's suggestions and uncertain-first order, evaluations) loads it the same way
    assert isinstance(ModelCache().scorer(version.path), CombinedScorer)
    assert scorer.score(PROMPTS, TEXTS) == pytest.approx([0.7 * h + 0.3 * s for h, s in zip(helpful, safe)], abs=1e-5)
    assert scorer(prompts=PROMPTS, completions=TEXTS) == pytest.approx(scorer.score(PROMPTS, TEXTS))   # TRL's call
    combined_scores, parts = scorer.score_parts(PROMPTS, TEXTS)
    assert parts["helpful"] == pytest.approx(helpful, abs=1e-5) and parts["safe"] == pytest.approx(safe, abs=1e-5)

    threshold = sorted(safe)[1]   # the lowest safety score is below it, the others not
    gate = load_scorer(wb.add_reward_combination("gated", f"gate:safety=safe,helpfulness=helpful,"
                                                          f"threshold={threshold!r}").path)
    expected = [s if s < threshold else h for h, s in zip(helpful, safe)]
    assert gate.score(PROMPTS, TEXTS) == pytest.approx(expected, abs=1e-5)
    gate.flag_prompts(PROMPTS, [None, "safety", None])   # the second prompt is flagged unsafe: its safety score
    expected[1] = safe[1]
    assert gate.score(PROMPTS, TEXTS) == pytest.approx(expected, abs=1e-5)
    # TRL hands a reward function the dataset's columns: the category column gates as well
    assert gate(prompts=PROMPTS, completions=TEXTS, category=["safety"] * 3) == pytest.approx(safe, abs=1e-5)


def test_the_queue_scores_with_a_gate_that_reads_each_prompts_category(two_rewards):
    """Suggestions and the uncertain-first order score stored comparisons (`score_table`,
    `score_comparisons`, in the sampler child the same way): a gate takes the safety score of
    the comparisons whose prompt is in the unsafe category."""
    from rlhf.collect.suggestions import score_comparisons
    from storage import prompts, scores

    wb = two_rewards
    gate = wb.add_reward_combination("gated", "gate:safety=safe,helpfulness=helpful")   # the flag alone
    with wb.store.transaction() as cur:
        prompts.add_prompts(cur, "mixed", [PROMPTS[0], PROMPTS[1]], "test", categories=["general", "safety"])
        prompt_ids = prompts.ids_by_fingerprint(cur, "mixed", [prompts.fingerprint(p) for p in PROMPTS[:2]])
        made = [comparisons.add(cur, prompt_id, [NewCompletion(text, BASE_VERSION) for text in TEXTS])
                for prompt_id in prompt_ids]
    found = [wb.comparison(i) for i in made]
    assert [c.category for c in found] == ["general", "safety"]
    messages = [c.messages for c in found for _ in TEXTS]
    helpful = RewardScorer(wb.model_version("helpful").path).score(messages, TEXTS * 2)
    safe = RewardScorer(wb.model_version("safe").path).score(messages, TEXTS * 2)
    expected = helpful[:3] + safe[3:]
    assert list(wb.score("gated", made)["score"]) == pytest.approx(expected, abs=1e-5)
    scorer = load_scorer(gate.path)
    score_comparisons(wb.store, "gated", made,
                      lambda prompts, texts, categories: scorer.score(prompts, texts, categories=categories))
    assert list(scores.scores_frame(wb.store.cursor(), "gated", made)["score"]) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("name, spec, words", [
    ("mix", "helpful + nope", "There is no model version 'nope'"),
    ("mix", "helpful + base", "'base' is a policy version; each version of a combination must be a reward model."),
    ("mix", "helpful*", "must be a number"),
    ("bad/name", "helpful + safe", "A version name is letters"),
    ("helpful", "helpful + safe", "There is already a model version 'helpful'"),
    ("again", "mix2 + safe", "mix2 is itself a combination"),
])
def test_a_bad_combination_version_is_refused_and_writes_nothing(two_rewards, name, spec, words):
    wb = two_rewards
    wb.add_reward_combination("mix2", "helpful + safe")
    before = len(wb.models())
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)").replace("*", r"\*")):
        wb.add_reward_combination(name, spec)
    assert len(wb.models()) == before
    assert not wb.home.model_dir("mix").exists() and not wb.home.model_dir("again").exists()


def test_rlhf_models_combine_registers_and_lists_it(two_rewards, capsys):
    home = str(two_rewards.home.root)
    two_rewards.close()
    assert main(["models", "combine", "mix", "gate:safety=safe,helpfulness=helpful,threshold=-1.7",
                 "--home", home]) == 0
    assert "Registered mix: the reward gate:safety=safe,helpfulness=helpful,threshold=-1.7." in capsys.readouterr().out
    assert main(["models", "--home", home]) == 0
    listed = capsys.readouterr().out
    assert "objective" in listed and "gate:safety=safe" in listed
    assert main(["models", "combine", "mix3", "safe*2", "--home", home]) == 1
    assert "at least two reward versions" in capsys.readouterr().err


# -- automatic evaluation per dimension -------------------------------------------------------------

def test_an_evaluation_under_a_combination_reports_each_dimension(evaluation_home, tiny_model_dir):
    with Workbench(evaluation_home) as wb:
        save_reward_model(wb.home.model_dir("rm2"), tiny_model_dir, seed=5, visible_scores=True)
        register(wb, "rm2", "reward")
        wb.add_reward_combination("both", "rm*0.5 + rm2*2")
        result = evaluate.evaluate(wb, BASE_VERSION, "other", "default", reward_version="both", n=3,
                                   max_new_tokens=6, cache=evaluate.ModelCache())
        dimensions = result["dimensions"]
        assert set(dimensions) == {"rm", "rm2"}
        for side in "ab":
            parts = [dimensions[name][f"mean_reward_{side}"] for name in ("rm", "rm2")]
            assert all(math.isfinite(p) for p in parts)
            assert result[f"mean_reward_{side}"] == pytest.approx(0.5 * parts[0] + 2 * parts[1], abs=1e-5)
        assert 0 <= dimensions["rm2"]["win_rate"] <= 1
        from app.cli_compare import describe

        assert "  rm2: win rate" in describe(result)
        single = evaluate.evaluate(wb, BASE_VERSION, "other", "default", reward_version="rm", n=3, max_new_tokens=6,
                                   cache=evaluate.ModelCache())
        assert "dimensions" not in single


def test_the_train_tab_combines_reward_models_and_refuses_in_one_sentence(two_rewards):
    from types import SimpleNamespace

    import gradio as gr

    from app.tabs import train
    from rlhf.auth import create_user
    from tests.helpers import app_context, password

    create_user(two_rewards.store, "rita", "researcher", password("rita"))
    ctx, request = app_context(two_rewards), SimpleNamespace(username="rita")
    note, table, reward = train.add_reward_combination(ctx, "mix", "helpful*0.5 + safe*0.5", request)
    assert note == "Registered mix: the reward helpful*0.5 + safe*0.5."
    assert table.set_index("name").loc["mix", "objective"] == "helpful*0.5 + safe*0.5"
    assert "mix" in reward["choices"]
    before = len(two_rewards.models())
    with pytest.raises(gr.Error, match="is not a part of a gate"):
        train.add_reward_combination(ctx, "bad", "gate:safety=safe,helpfulness=helpful,nonsense", request)
    with pytest.raises(gr.Error, match="characters long"):
        train.add_reward_combination(ctx, "long", "helpful + " * 1000 + "safe", request)
    assert len(two_rewards.models()) == before


def test_online_methods_hand_the_prompts_category_to_a_combination():
    from rlhf.train.online import _prompts

    frame = pd.DataFrame({"prompt": ["Pick a lock?", "Bake bread?", "Pick a lock?"],
                          "category": ["safety", None, "safety"]})
    kept = _prompts(frame, ("category",))
    assert list(kept["category"]) == ["safety", ""] and list(kept.columns) == ["prompt", "category"]
    assert list(_prompts(frame).columns) == ["prompt"]
