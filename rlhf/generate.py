"""Sampling K completions for a batch of prompts in one `generate` call.

Prompts are rendered with the tokenizer's chat template and left-padded, so one
forward pass serves every prompt of a batch and all K samples of each
(each prompt's row repeated K times).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from rlhf.models import Policy
from rlhf.sampling import MAX_K, MIN_K, SamplingParams


@dataclass(frozen=True)
class Sample:
    text: str
    num_tokens: int  # generated tokens up to and including EOS
    finish_reason: str  # 'eos' or 'length'


class NucleusSampling(LogitsProcessor):
    """Temperature plus top-p sampling, done inside a logits processor so that greedy
    decoding carries it out: the returned scores are -inf everywhere but the drawn token.

    Why not `do_sample=True`: on the CPU, sorting a 49k vocabulary and drawing from it
    with `torch.multinomial` cost about as much per step as the forward pass of a 135M model. Here the nucleus is searched among
    the `candidates` most likely tokens (`topk`, exact whenever they hold top_p of the
    mass, else a full sort), and the draw is the Gumbel-max trick on those alone:
    argmax(logits + Gumbel noise) is a sample from softmax(logits). Same distribution
    as transformers' TemperatureLogitsWarper + TopPLogitsWarper + multinomial; its own
    generator makes a seed reproducible.
    """

    def __init__(self, temperature: float, top_p: float, generator: torch.Generator, candidates: int = 1024):
        self.temperature, self.top_p, self.generator, self.candidates = temperature, top_p, generator, candidates

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """scores: (batch, vocab) next-token logits -> (batch, vocab), 0 at the draw, -inf elsewhere."""
        logits = scores.float() / self.temperature
        log_total = logits.logsumexp(dim=-1, keepdim=True)
        top_logits, top_ids = logits.topk(min(self.candidates, logits.shape[-1]), dim=-1)
        if self.top_p < 1.0 and (top_logits - log_total).exp().sum(dim=-1).min() < self.top_p:
            top_logits, top_ids = logits.sort(dim=-1, descending=True)
        elif self.top_p >= 1.0:
            top_logits, top_ids = logits, torch.arange(logits.shape[-1], device=logits.device).expand_as(logits)
        probs = (top_logits - log_total).exp()
        mass_before = probs.cumsum(dim=-1) - probs
        # the most likely token always qualifies; with top_p = 1 every token does (a float32
        # running sum can reach 1 before the tail and would otherwise cut it off)
        in_nucleus = mass_before < self.top_p if self.top_p < 1.0 else torch.ones_like(probs, dtype=torch.bool)
        gumbel = -torch.empty_like(top_logits).exponential_(generator=self.generator).log()
        choice = (top_logits.masked_fill(~in_nucleus, float("-inf")) + gumbel).argmax(dim=-1, keepdim=True)
        drawn = top_ids.gather(-1, choice)
        return torch.full_like(scores, float("-inf")).scatter_(-1, drawn, 0.0)


def sampling_processors(params: SamplingParams, device: torch.device) -> LogitsProcessorList:
    if params.temperature <= 0:
        return LogitsProcessorList()
    generator = torch.Generator(device=device)
    if params.seed is not None:
        generator.manual_seed(params.seed)
    else:
        generator.seed()  # fresh entropy, without re-seeding torch's global generator
    return LogitsProcessorList([NucleusSampling(params.temperature, params.top_p, generator)])


def render_prompts(policy: Policy, conversations: list[list[dict]]) -> list[str]:
    return [
        policy.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        for messages in conversations
    ]


@torch.inference_mode()
def sample(
    policy: Policy,
    conversations: list[list[dict]],
    k: int = 4,
    params: SamplingParams = SamplingParams(),
    batch_prompts: int = 8,
) -> list[list[Sample]]:
    """K samples for each conversation: result[i][j] is sample j of conversation i.

    With a seed the result is reproducible for the same inputs and batch size.
    Conversations are processed `batch_prompts` at a time (batch rows = batch_prompts * k).
    """
    if not MIN_K <= k <= MAX_K:
        raise ValueError(f"K must be between {MIN_K} and {MAX_K}, not {k}.")
    tokenizer = policy.tokenizer
    tokenizer.padding_side = "left"
    eos_ids = _eos_ids(policy)
    processors = sampling_processors(params, policy.model.device)
    results: list[list[Sample]] = []
    for start in range(0, len(conversations), batch_prompts):
        texts = render_prompts(policy, conversations[start : start + batch_prompts])
        inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        # K rows per prompt, side by side (greedy `generate` refuses num_return_sequences > 1)
        inputs = {name: tensor.repeat_interleave(k, dim=0).to(policy.model.device) for name, tensor in inputs.items()}
        output = policy.model.generate(
            **inputs,
            do_sample=False,  # sampling happens in `processors`
            logits_processor=processors,
            temperature=None,
            top_p=None,
            top_k=None,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=eos_ids,
            pad_token_id=tokenizer.pad_token_id,
        )
        generated = output[:, inputs["input_ids"].shape[1] :]
        samples = [to_sample(tokenizer, row, eos_ids) for row in generated]
        results.extend(samples[i : i + k] for i in range(0, len(samples), k))
    return results


def _eos_ids(policy: Policy) -> list[int]:
    configured = policy.model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in ids if i is not None]
    return ids or [policy.tokenizer.eos_token_id]


def to_sample(tokenizer, row: torch.Tensor, eos_ids: list[int]) -> Sample:
    is_eos = torch.isin(row, torch.tensor(eos_ids, device=row.device))
    if is_eos.any():
        end = int(is_eos.nonzero()[0]) + 1
        return Sample(tokenizer.decode(row[: end - 1], skip_special_tokens=True).strip(), end, "eos")
    return Sample(tokenizer.decode(row, skip_special_tokens=True).strip(), len(row), "length")
