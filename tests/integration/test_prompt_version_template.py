"""A prompt version over the real default model: SmolLM2's chat template gives the
version's system prompt in place of its own default one, and the template's text reaches
the user turn (the tokenizer alone: no weights are loaded)."""

from __future__ import annotations

from rlhf.modeling import hard_prompt
from rlhf.modeling.generate import render_prompts
from rlhf.modeling.loading import load_tokenizer
from rlhf.modeling.models import Policy


def test_smollm2_is_given_the_versions_prompt_instead_of_its_default(real_model_dir, tmp_path):
    version = tmp_path / "terse"
    hard_prompt.write(version, hard_prompt.HardPrompt(real_model_dir, "Answer in under fifty words.",
                                                      "Question: {prompt}"))
    prompt = hard_prompt.read(version)
    tokenizer = load_tokenizer(version)   # the parent's, found through the prompt file
    user = [{"role": "user", "content": "Name three rivers."}]
    [plain] = render_prompts(Policy(None, tokenizer, "base"), [user])
    [given] = render_prompts(Policy(None, tokenizer, "terse", prompt.system_prompt, prompt.template), [user])
    assert "named SmolLM" in plain and "named SmolLM" not in given
    assert given == ("<|im_start|>system\nAnswer in under fifty words.<|im_end|>\n"
                     "<|im_start|>user\nQuestion: Name three rivers.<|im_end|>\n<|im_start|>assistant\n")
