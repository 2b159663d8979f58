"""Prompts as versions (hard prompt tuning, `rlhf models add-prompt`): a policy version that
is its parent's weights plus a written system prompt, on the tiny random Llama."""

from __future__ import annotations

import json

import pytest

from app import cli
from app.job_views import model_list, models_table
from rlhf.errors import TrainingError
from rlhf.limits import LIMITS
from rlhf.modeling import hard_prompt
from rlhf.modeling.generate import SamplingParams, render_prompts, sample
from rlhf.modeling.loading import load_causal_lm, load_tokenizer
from rlhf.modeling.models import load_policy
from rlhf.jobs.service import JobError, JobRequest, Jobs
from helpers import add_comparisons, rows

FAST = SamplingParams(max_new_tokens=4, seed=7)
TERSE = "Answer in under fifty words."
HOSTILE = '<script>alert("x")</script><b>bold</b> **not markdown** <img src=x onerror=alert(1)>'


def versions(wb) -> list[tuple]:
    return rows(wb, "SELECT name, kind, parent, method FROM model_versions ORDER BY created_at, name")


def test_a_prompt_version_samples_with_its_system_prompt(workbench):
    version = workbench.add_prompt_version("terse", "base", TERSE)
    assert (version.kind, version.parent) == ("policy", "base")
    policy = load_policy(version.path)
    assert policy.system_prompt == TERSE
    user = [{"role": "user", "content": "Name three rivers."}]
    [rendered] = render_prompts(policy, [user])
    assert TERSE in rendered and rendered.index(TERSE) < rendered.index("Name three rivers.")

    [comparison_id] = workbench.generate(n=1, k=2, model_version="terse", params=FAST)
    stored = workbench.comparison(comparison_id)
    assert {c["model_version"] for c in stored.completions} == {"terse"}
    # what the base says given the system prompt itself, with the same seed: the same texts
    base = load_policy(workbench.model_version("base").path)
    assert base.system_prompt is None
    messages = [dict(m) for m in stored.messages]
    given = [s.text for s in sample(base, [[{"role": "system", "content": TERSE}, *messages]], k=2, params=FAST)[0]]
    assert [c["text"] for c in stored.completions] == given


def test_the_conversation_keeps_one_system_turn_first():
    user = [{"role": "user", "content": "hi"}]
    assert hard_prompt.conversation(None, user) == user
    assert hard_prompt.conversation("Be brief.", user) == [{"role": "system", "content": "Be brief."}, *user]
    own = [{"role": "system", "content": "You are a pirate."}, *user]
    assert hard_prompt.conversation("Be brief.", own) == [
        {"role": "system", "content": "Be brief.\n\nYou are a pirate."}, *user]


def test_a_prompt_version_over_a_prompt_version_gives_both(workbench):
    workbench.add_prompt_version("pirate", "base", "You are a pirate.")
    workbench.add_prompt_version("terse-pirate", "pirate", TERSE)
    policy = load_policy(workbench.model_version("terse-pirate").path)
    assert policy.system_prompt == f"You are a pirate.\n\n{TERSE}"
    assert load_tokenizer(workbench.model_version("terse-pirate").path).chat_template
    # the parent is kept relative to the version, so a home copied elsewhere still loads
    assert json.loads((workbench.home.model_dir("terse-pirate") / hard_prompt.PROMPT_FILE).read_text())["parent"] == (
        "../pirate")
    assert hard_prompt.read(workbench.home.model_dir("pirate")).parent == workbench.home.model_dir("base").resolve()


def test_the_models_list_shows_lineage_and_the_prompt(workbench, capsys):
    home = ["--home", str(workbench.home.root)]
    workbench.close()
    assert cli.main(["models", "add-prompt", "terse", *home, "--parent", "base", "--system-prompt", TERSE]) == 0
    assert "Registered terse: the weights of base" in capsys.readouterr().out
    assert cli.main(["models", *home, "--json"]) == 0
    listed = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert (listed["terse"]["parent"], listed["terse"]["method"], listed["terse"]["system_prompt"]) == (
        "base", "prompt", TERSE)
    assert listed["base"]["system_prompt"] == ""
    assert cli.main(["models", *home]) == 0
    table = capsys.readouterr().out
    assert "terse" in table and TERSE in table


def test_a_prompt_file_is_read_as_text(workbench, tmp_path, capsys):
    file = tmp_path / "persona.txt"
    file.write_text("You are a careful tutor.\nAsk one question back.\n", encoding="utf-8")
    home = ["--home", str(workbench.home.root)]
    workbench.close()
    assert cli.main(["models", "add-prompt", "tutor", *home, "--parent", "base", "--file", str(file)]) == 0
    assert hard_prompt.read(workbench.home.model_dir("tutor")).system_prompt == (
        "You are a careful tutor.\nAsk one question back.")


@pytest.mark.parametrize("argv, message", [
    (["ghost", "--parent", "nobody", "--system-prompt", TERSE], "There is no model version 'nobody'"),
    (["ghost", "--parent", "base", "--system-prompt", "   "], "The system prompt is empty"),
    (["ghost", "--parent", "base", "--system-prompt", "x" * (LIMITS.system_prompt_chars + 1)],
     f"at most {LIMITS.system_prompt_chars:,} are taken"),
    (["../ghost", "--parent", "base", "--system-prompt", TERSE], "A version name is letters, digits"),
    (["base", "--parent", "base", "--system-prompt", TERSE], "There is already a model version 'base'"),
    (["ghost", "--parent", "base", "--file", "/nonexistent/prompt.txt"], "Cannot read the system prompt"),
    (["ghost", "--parent", "base"], "Give the version a system prompt, a template, or both"),
    (["ghost", "--parent", "base", "--template", "Be brief."], "The template must say where the user's prompt goes"),
])
def test_bad_input_is_refused_in_one_sentence_with_nothing_changed(workbench, capsys, argv, message):
    before = versions(workbench)
    home = ["--home", str(workbench.home.root)]
    workbench.close()
    assert cli.main(["models", "add-prompt", *argv[:1], *home, *argv[1:]]) == 1
    error = capsys.readouterr().err
    assert error.startswith("rlhf: ") and message in error and error.count("\n") == 1
    with type(workbench)(workbench.home) as reopened:
        assert versions(reopened) == before
    assert not workbench.home.model_dir("ghost").exists()


def test_a_reward_model_is_no_parent(workbench, tiny_reward_dir):
    from helpers import register
    import shutil

    shutil.copytree(tiny_reward_dir, workbench.home.model_dir("judge"))
    register(workbench, "judge", "reward")
    with pytest.raises(Exception, match="'judge' is a reward model; the parent of a prompt version must be a policy"):
        workbench.add_prompt_version("ghost", "judge", TERSE)
    assert not workbench.home.model_dir("ghost").exists()


def test_hostile_prompt_text_is_stored_and_shown_as_text(workbench, capsys):
    workbench.add_prompt_version("hostile", "base", HOSTILE + "\x1b[2J")
    assert hard_prompt.read(workbench.home.model_dir("hostile")).system_prompt == HOSTILE + "\x1b[2J"
    frame = workbench.models()
    assert frame.set_index("name").loc["hostile", "system_prompt"] == HOSTILE + "\x1b[2J"
    # the Train tab's table and the API carry the characters themselves (a gr.Dataframe of
    # str shows them as text), escaped nowhere, rendered nowhere
    assert models_table(frame).set_index("name").loc["hostile", "system_prompt"] == HOSTILE + "\x1b[2J"
    assert {r["name"]: r for r in model_list(frame)}["hostile"]["system_prompt"] == HOSTILE + "\x1b[2J"
    # the CLI's table: one line, the terminal escape as a space
    assert "\x1b" not in hard_prompt.one_line(HOSTILE + "\x1b[2J\nnext", 500)
    assert hard_prompt.one_line("a\nb\x1b[2J", 500) == "a b [2J"
    home = ["--home", str(workbench.home.root)]
    workbench.close()
    assert cli.main(["models", *home]) == 0
    assert "\x1b" not in capsys.readouterr().out
    # and the model is given it as the system turn's content, nothing else
    policy = load_policy(workbench.home.model_dir("hostile"))
    assert hard_prompt.conversation(policy.system_prompt, [{"role": "user", "content": "hi"}])[0] == {
        "role": "system", "content": HOSTILE + "\x1b[2J"}


def test_training_from_a_prompt_version_is_refused_before_anything_is_queued(workbench):
    workbench.add_prompt_version("terse", "base", TERSE)
    for comparison_id in add_comparisons(workbench, 2, k=3):
        workbench.rank(comparison_id, "A > B > C", "ana")
    jobs = Jobs(workbench.home, workbench.store)
    with pytest.raises(JobError, match="'terse' is a prompt version .* train from 'base'"):
        jobs.submit(JobRequest("dpo", base="terse", settings={"max_steps": 1}))
    assert rows(workbench, "SELECT count(*) FROM jobs") == [(0,)]
    with pytest.raises(TrainingError, match="is a prompt version"):
        load_causal_lm(workbench.home.model_dir("terse"))


def test_the_kl_of_a_prompt_version_is_measured_without_its_prompt_under_the_reference(workbench):
    from rlhf.modeling.measure import draw

    workbench.add_prompt_version("terse", "base", TERSE)
    terse, base = (load_policy(workbench.model_version(name).path) for name in ("terse", "base"))
    conversations = [[{"role": "user", "content": "Name three rivers."}], [{"role": "user", "content": "Hello?"}]]
    params = SamplingParams(max_new_tokens=4, seed=3, temperature=1.0, top_p=1.0)
    # the same weights: given the same prompt the reference would agree token by token
    alike = draw(terse, conversations, params, load_policy(workbench.model_version("terse").path))
    assert alike.ref_logprobs == pytest.approx(alike.logprobs, abs=1e-4)
    drawn = draw(terse, conversations, params, base)
    assert drawn.texts == alike.texts and drawn.logprobs == pytest.approx(alike.logprobs, abs=1e-4)
    assert all(abs(p - q) > 1e-3 for p, q in zip(drawn.logprobs, drawn.ref_logprobs))


def test_a_template_puts_the_users_prompt_inside_it(workbench):
    workbench.add_prompt_version("one-line", "base", template="Answer in one sentence: {prompt}")
    policy = load_policy(workbench.model_version("one-line").path)
    assert (policy.system_prompt, policy.template) == (None, "Answer in one sentence: {prompt}")
    [rendered] = render_prompts(policy, [[{"role": "user", "content": "Why {is} the sky blue?"}]])
    assert "Answer in one sentence: Why {is} the sky blue?" in rendered
    # over a version with a system prompt: both, its template inside the parent's
    workbench.add_prompt_version("terse", "base", TERSE, "Q: {prompt}")
    workbench.add_prompt_version("terse-line", "terse", template="{prompt} (one sentence)")
    policy = load_policy(workbench.model_version("terse-line").path)
    assert policy.system_prompt == TERSE
    assert hard_prompt.conversation(policy.system_prompt, [{"role": "user", "content": "hi"}], policy.template) == [
        {"role": "system", "content": TERSE}, {"role": "user", "content": "Q: hi (one sentence)"}]
    listed = workbench.models().set_index("name")
    assert listed.loc["terse-line", "template"] == "{prompt} (one sentence)"
    assert listed.loc["one-line", "system_prompt"] == "" and listed.loc["base", "template"] == ""


def test_the_train_tab_adds_a_prompt_version_and_shows_its_text_as_text(workbench):
    from types import SimpleNamespace

    import gradio as gr

    from app.tabs import train
    from rlhf.auth import create_user
    from helpers import app_context, password

    create_user(workbench.store, "rita", "researcher", password("rita"))
    ctx, request = app_context(workbench), SimpleNamespace(username="rita")
    note, table, base, promote = train.add_prompt_version(ctx, "hostile", "base", HOSTILE, "", request)
    assert note == "Registered hostile: the weights of base with the prompt given."
    assert table.set_index("name").loc["hostile", "system_prompt"] == HOSTILE
    assert "hostile" in base["choices"] and "hostile" in promote["choices"]
    before = versions(workbench)
    with pytest.raises(gr.Error, match="The system prompt is empty"):
        train.add_prompt_version(ctx, "empty", "base", "  ", None, request)
    with pytest.raises(gr.Error, match="There is no model version 'nobody'"):
        train.add_prompt_version(ctx, "orphan", "nobody", TERSE, None, request)
    assert versions(workbench) == before


def test_side_by_side_and_the_arena_answer_with_the_prompt(workbench):
    from rlhf.modeling.measure import answer
    from rlhf.modeling.model_cache import ModelCache

    workbench.add_prompt_version("terse", "base", TERSE)
    cache, messages = ModelCache(), [{"role": "user", "content": "Name three rivers."}]
    paths = [workbench.model_version(name).path for name in ("terse", "base")]
    [(prompted, *_)] = answer(cache, paths[:1], messages, FAST)
    [(given, *_)] = answer(cache, paths[1:], [{"role": "system", "content": TERSE}, *messages], FAST)
    assert prompted == given


def test_a_prompt_versions_completion_logprobs_are_its_parents_given_the_system_prompt(workbench):
    """`policy_logprobs` (the guard's held-out margins) gives a prompt version's prompt as it
    generates from it (`hard_prompt.conversation`): equal to the parent's log-probs of the
    same completions with the system turn (and the template) written in, not without."""
    from rlhf.modeling.logprobs import completion_logprobs, policy_logprobs

    workbench.add_prompt_version("terse", "base", TERSE, "Q: {prompt}")
    terse, base = (load_policy(workbench.model_version(name).path) for name in ("terse", "base"))
    prompts = [[{"role": "user", "content": "Name three rivers."}], "Hello?"]
    completions = ["The Nile, the Amazon and the Rhine.", "Hi there."]
    prompted = policy_logprobs(terse, prompts, completions)
    written = [[{"role": "system", "content": TERSE}, {"role": "user", "content": "Q: Name three rivers."}],
               [{"role": "system", "content": TERSE}, {"role": "user", "content": "Q: Hello?"}]]
    assert prompted == pytest.approx(completion_logprobs(base.model, base.tokenizer, written, completions), abs=1e-4)
    assert prompted == pytest.approx(completion_logprobs(base.model, base.tokenizer, prompts, completions,
                                                         system_prompt=TERSE, template="Q: {prompt}"), abs=1e-4)
    without = completion_logprobs(base.model, base.tokenizer, prompts, completions)
    assert all(abs(p - q) > 1e-3 for p, q in zip(prompted, without))
    assert policy_logprobs(base, prompts, completions) == pytest.approx(without, abs=1e-6)


def test_a_judge_that_is_a_prompt_version_scores_with_its_system_prompt(workbench):
    """The judge's yes/no fall-back renders its question as its generation does: a judge
    loaded from a prompt version is given the system prompt before the question."""
    from rlhf.simulate.judge import LLMJudge

    workbench.add_prompt_version("terse", "base", TERSE)
    terse, base = (load_policy(workbench.model_version(name).path) for name in ("terse", "base"))
    seen: list[str] = []

    def spy(module, args, kwargs):
        seen.append(base.tokenizer.decode(kwargs["input_ids"][0]))

    prompt, answers = [{"role": "user", "content": "Name three rivers."}], ["The Nile.", "Paris."]
    hooks = [model.register_forward_pre_hook(spy, with_kwargs=True) for model in {id(p.model): p.model
                                                                                  for p in (terse, base)}.values()]
    try:
        plain = LLMJudge(base).yes_no_scores(prompt, answers)
        plain_seen, seen[:] = list(seen), []
        prompted = LLMJudge(terse).yes_no_scores(prompt, answers)
    finally:
        for hook in hooks:
            hook.remove()
    assert len(plain_seen) == len(seen) == 2
    assert all(TERSE not in text for text in plain_seen)
    assert all(TERSE in text and text.index(TERSE) < text.index("Name three rivers.") for text in seen)
    assert all(abs(p - q) > 1e-4 for p, q in zip(plain, prompted))


def test_a_prompt_version_shares_its_parents_weights_in_the_model_cache(workbench):
    """No second copy of the weights: a prompt version (and one over it) is its parent's
    cached model with its texts, and takes no place of its own in the cache."""
    from rlhf.modeling.model_cache import ModelCache

    workbench.add_prompt_version("terse", "base", TERSE)
    workbench.add_prompt_version("terse-line", "terse", template="{prompt} (one sentence)")
    cache = ModelCache(capacity=1)
    terse = cache.policy(workbench.model_version("terse").path)
    base = cache.policy(workbench.model_version("base").path)
    nested = cache.policy(workbench.model_version("terse-line").path)
    assert terse.model is base.model is nested.model and terse.tokenizer is base.tokenizer
    assert [kind for kind, _ in cache.loaded()] == ["policy"]
    assert cache.loaded()[0][1].resolve() == workbench.model_version("base").path.resolve()
    assert (terse.system_prompt, base.system_prompt, nested.system_prompt) == (TERSE, None, TERSE)
    assert nested.template == "{prompt} (one sentence)"
    [rendered] = render_prompts(terse, [[{"role": "user", "content": "hi"}]])
    assert TERSE in rendered and TERSE not in render_prompts(base, [[{"role": "user", "content": "hi"}]])[0]
