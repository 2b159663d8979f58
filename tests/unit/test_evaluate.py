"""Automatic evaluation of one version against another (`rlhf.compare.evaluate`, `rlhf compare`)
on the tiny random Llama: a version against itself is an exact tie with no KL, the
log-probabilities are the ones the samples were drawn from, the figures are stored, and
the command prints them (or refuses in one sentence)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from app.cli import main
from rlhf.compare import evaluate, summaries
from app import job_views
from rlhf.modeling.measure import EvaluationError, kl_k1, win_counts
from rlhf.modeling.logprobs import completion_logprobs, sequence_logprobs
from rlhf.preference.messages import as_messages
from rlhf.modeling.generate import Generated, _eos_ids, mask_through_first_eos
from rlhf.home import BASE_VERSION
from rlhf.modeling.models import load_policy
from rlhf.collect.workbench import Workbench
from rlhf.versions import VersionError
from storage import evaluations


TINY = dict(n=3, max_new_tokens=6)  # seconds, not minutes


# -- fixtures ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def home(evaluation_home):
    return evaluation_home


@pytest.fixture(scope="module")
def cache():
    return evaluate.ModelCache()


# -- the maths ------------------------------------------------------------------------------


def test_k1_and_win_counts():
    mean, stderr = kl_k1([-1.0, -2.0, -3.0], [-2.0, -2.0, -2.0])  # differences 1, 0, -1
    assert mean == 0.0 and stderr == pytest.approx(math.sqrt(1.0 / 3))
    assert kl_k1([-1.0], [-1.5])[0] == 0.5 and math.isnan(kl_k1([-1.0], [-1.5])[1])
    assert math.isnan(kl_k1([], [])[0])
    counts = win_counts([1.0, 0.5, 0.2, 0.3], [0.0, 0.5, 0.4, 0.3 + 1e-9])
    assert counts == {"wins": 1, "ties": 2, "losses": 1, "win_rate": 0.5}
    assert win_counts([2.0, 2.0], [1.0, 3.0])["win_rate"] == 0.5
    assert math.isnan(win_counts([], [])["win_rate"])


def test_log_probabilities_are_those_the_samples_were_drawn_from(tiny_model_dir):
    """Left padding changes nothing, and the sums match generate's own logits at the same
    temperature, token by token."""
    policy = load_policy(tiny_model_dir)
    tokenizer = policy.tokenizer
    tokenizer.padding_side = "left"
    conversations = [[{"role": "user", "content": "Hi"}],
                     [{"role": "user", "content": "Tell me a much longer story about a cat and a dog, please."}]]
    texts = [tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    assert inputs["attention_mask"][0].sum() < inputs["attention_mask"][1].sum()  # the first row is padded
    torch.manual_seed(0)
    out = policy.model.generate(**inputs, do_sample=True, temperature=0.7, top_p=1.0, top_k=None, max_new_tokens=8,
                                output_logits=True, return_dict_in_generate=True,
                                pad_token_id=tokenizer.pad_token_id, eos_token_id=_eos_ids(policy))
    length = inputs["input_ids"].shape[1]
    response = out.sequences[:, length:]
    mask, has_eos = mask_through_first_eos(response, _eos_ids(policy))
    expected = torch.log_softmax(torch.stack(out.logits, 1).float() / 0.7, -1).gather(2, response.unsqueeze(-1))
    expected = (expected.squeeze(-1) * mask).sum(1)
    generated = Generated(out.sequences[:, :length], inputs["attention_mask"], response, mask, has_eos)
    assert torch.allclose(sequence_logprobs(policy.model, generated, 0.7), expected, atol=1e-4)
    # the padded row alone, without padding, gives the same sum
    alone = Generated(out.sequences[:1, :length][:, inputs["attention_mask"][0].bool()],
                      inputs["attention_mask"][:1, inputs["attention_mask"][0].bool()], response[:1], mask[:1],
                      has_eos[:1])
    assert torch.allclose(sequence_logprobs(policy.model, alone, 0.7), expected[:1], atol=1e-4)


def test_a_given_completion_is_measured_as_one_unpadded_forward_pass_measures_it(tiny_model_dir):
    """completion_logprobs (what DPO's margins read) pads prompts left and completions right
    into the same computation as sampled ones: each sum is the one a single unpadded pass
    over the chat-templated conversation gives for the completion's tokens."""
    policy = load_policy(tiny_model_dir)
    prompts = ["Hi", [{"role": "user", "content": "Tell me a much longer story about a cat and a dog, please."}]]
    completions = ["Hello there, friend.", "No."]
    measured = completion_logprobs(policy.model, policy.tokenizer, prompts, completions, batch_size=2)
    for prompt, completion, got in zip(prompts, completions, measured):
        conversation = as_messages(prompt) + as_messages(completion, "assistant")
        start = len(policy.tokenizer.apply_chat_template(as_messages(prompt), tokenize=True, return_dict=True,
                                                         add_generation_prompt=True)["input_ids"])
        ids = torch.tensor([policy.tokenizer.apply_chat_template(conversation, tokenize=True,
                                                                 return_dict=True)["input_ids"]])
        with torch.no_grad():
            logits = policy.model(input_ids=ids).logits[0, :-1].float()
        picked = torch.log_softmax(logits, -1).gather(1, ids[0, 1:].unsqueeze(-1)).squeeze(-1)
        assert got == pytest.approx(picked[start - 1:].sum().item(), abs=1e-3) and got < 0


# -- evaluate ---------------------------------------------------------------------------------


def test_a_version_against_itself_is_an_exact_tie_with_no_kl(home, cache):
    with Workbench(home) as wb:
        result = evaluate.evaluate(wb, BASE_VERSION, BASE_VERSION, "default", reward_version="rm", cache=cache,
                                   created_by="tester", **TINY)
        assert (result["wins"], result["ties"], result["losses"], result["win_rate"]) == (0, 3, 0, 0.5)
        assert result["mean_reward_a"] == result["mean_reward_b"] and math.isfinite(result["mean_reward_a"])
        assert result["kl_a"] == 0.0 and result["kl_b"] == 0.0
        assert result["mean_length_a"] == result["mean_length_b"] and 1 <= result["mean_length_a"] <= 6
        assert (result["n"], result["prompt_set"], result["reference"], result["reward_version"]) == \
            (3, "default", BASE_VERSION, "rm")
        stored = evaluations.get(wb.store.cursor(), result["id"])
        assert (stored["version_a"], stored["version_b"], stored["reward_version"], stored["prompt_set"], stored["n"],
                stored["created_by"]) == (BASE_VERSION, BASE_VERSION, "rm", "default", 3, "tester")
        assert stored["metrics"]["win_rate"] == 0.5 and stored["metrics"]["kl_a"] == 0.0
        assert stored["metrics"]["max_new_tokens"] == 6 and stored["metrics"]["reference"] == BASE_VERSION


def test_kl_is_measured_from_the_reference_on_each_versions_own_samples(home, cache):
    """`copy` holds base's weights under another name, so its KL from base is computed
    (not short-cut) and is zero; `other` has different weights and a positive KL. With the
    same seed, swapping the sides swaps the figures."""
    with Workbench(home) as wb:
        forward = evaluate.evaluate(wb, "copy", "other", "default", reward_version="rm", cache=cache, **TINY)
        backward = evaluate.evaluate(wb, "other", "copy", "default", reward_version="rm", cache=cache, **TINY)
        stored = evaluations.list_evaluations(wb.store.cursor())
        table = job_views.models_table(wb.models(), summaries.version_summaries(wb)).set_index("name")
        wb.promote("copy")  # a version named by stored evaluations can still change status
        wb.promote(BASE_VERSION)
    assert abs(forward["kl_a"]) < 1e-4 and forward["kl_b"] > 0.1
    assert forward["wins"] + forward["ties"] + forward["losses"] == 3
    assert backward["win_rate"] == pytest.approx(1 - forward["win_rate"])
    assert (backward["kl_a"], backward["mean_reward_a"]) == pytest.approx((forward["kl_b"], forward["mean_reward_b"]))
    figures = summaries.per_version(stored)
    newest = figures[figures["evaluation"] == backward["id"]].set_index("version")
    assert newest.loc["other", "kl"] == pytest.approx(forward["kl_b"])
    assert newest.loc["copy", "win_rate"] == pytest.approx(forward["win_rate"])
    latest = summaries.latest_per_version(stored).set_index("version")  # what the models table shows
    assert latest.loc["other", "evaluation"] == backward["id"] and latest.loc["other", "opponent"] == "copy"
    line = summaries.summary_line(latest.loc["other"].to_dict() | {"version": "other"})
    assert line.startswith(f"reward {backward['mean_reward_a']:.3g} · KL {backward['kl_a']:.3g} · ")
    assert line.endswith(f"win {backward['win_rate']:.2f} vs copy (eval #{backward['id']})")
    assert table.loc["other", "evaluation"] == line and table.loc["rm", "evaluation"] == ""


def test_without_a_workbench_models_are_directories_and_nothing_is_stored(home, cache):
    result = evaluate.evaluate(None, home.model_dir("copy"), home.model_dir(BASE_VERSION), ["Hello", "Name a colour."],
                               reward_version=home.model_dir("rm"), reference=home.model_dir(BASE_VERSION),
                               cache=cache, n=5, max_new_tokens=4)
    assert result["id"] is None and result["n"] == 2 and result["prompt_set"] is None
    assert result["win_rate"] == 0.5 and abs(result["kl_a"]) < 1e-4
    with pytest.raises(EvaluationError, match="give the prompts themselves"):
        evaluate.evaluate(None, home.model_dir("copy"), home.model_dir("copy"), "default")


@pytest.mark.parametrize("change, words", [
    (dict(version_b="nope"), "There is no model version 'nope' (known versions: base, copy, other, rm)."),
    (dict(version_b="rm"), "'rm' is a reward model; the version compared must be a policy version."),
    (dict(reward_version="other"), "'other' is a policy version; the reward version must be a reward model."),
    (dict(prompts="nowhere"), "There is no prompt set 'nowhere' (known sets: default)."),
    (dict(n=0), "N must be a whole number of 1 or more, not 0."),
    (dict(temperature=0.0), "The temperature must be above 0"),
])
def test_a_bad_evaluation_is_refused_in_one_sentence_and_stores_nothing(home, change, words):
    arguments = dict(version_a=BASE_VERSION, version_b="copy", prompts="default", **TINY) | change
    with Workbench(home) as wb:
        before = evaluations.count(wb.store.cursor())
        with pytest.raises((EvaluationError, VersionError)) as refused:
            evaluate.evaluate(wb, **arguments)
        assert evaluations.count(wb.store.cursor()) == before
    assert words in str(refused.value) and "\n" not in str(refused.value)


# -- rlhf compare -------------------------------------------------------------------------------


def run_cli(home, capsys, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--home", str(home.root)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_rlhf_compare_prints_and_stores_the_figures(home, capsys):
    code, out, err = run_cli(home, capsys, "compare", "copy", BASE_VERSION, "--n", "2", "--max-new-tokens", "4",
                             "--reward", "rm")
    assert code == 0, err
    assert "copy vs base on 2 prompts of prompt set 'default' (reward model rm; KL from base" in out
    assert "win rate of copy over base: 0.500 (0 wins, 2 ties, 0 losses)" in out
    assert "mean reward" in out and "KL" in out
    stored_id = int(out.strip().splitlines()[-1].split("evaluation ")[1].split(" ")[0])

    code, out, err = run_cli(home, capsys, "compare", "other", BASE_VERSION, "--n", "2", "--max-new-tokens", "4",
                             "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["id"] == stored_id + 1 and result["reward_version"] == "rm"  # the newest reward model
    assert result["version_a"] == "other" and result["kl_a"] > 0 and result["kl_b"] == 0.0
    with Workbench(home) as wb:
        stored = evaluations.get(wb.store.cursor(), result["id"])
    assert stored["created_by"] == "cli" and stored["metrics"]["kl_a"] == pytest.approx(result["kl_a"])


@pytest.mark.parametrize("argv, sentence", [
    (("compare", "base", "nope"), "rlhf: There is no model version 'nope' (known versions: base, copy, other, rm)."),
    (("compare", "base", "copy", "--reward", "copy"), "rlhf: 'copy' is a policy version; the reward version must be a reward model."),
    (("compare", "base", "copy", "--prompts", "nowhere"), "rlhf: There is no prompt set 'nowhere' (known sets: default)."),
])
def test_rlhf_compare_refuses_in_one_sentence(home, capsys, argv, sentence):
    code, out, err = run_cli(home, capsys, *argv)
    assert (code, out, err.strip()) == (1, "", sentence)


