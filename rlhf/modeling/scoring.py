"""Scoring with a trained reward model, and evaluating it on preference pairs.

A reward model directory (written by `rlhf.train.reward`) holds full weights of a scalar
head sequence classifier, its tokenizer, and `reward.json` with the `offset` that makes
rewards mean 0 on the base policy's completions. A completion is scored as the chat-
templated conversation "prompt messages + one assistant turn", exactly as in training
(`encode_conversation`), and the offset is subtracted.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterator, Sequence

import pandas as pd
import torch
from scipy.stats import binomtest

from rlhf.preference import combination as combined
from rlhf.preference.messages import Message, as_messages, plain
from rlhf.modeling import loading
from rlhf.modeling.loading import read_reward_info
from storage.scores import EQUAL_SCORE  # two scores closer than this are "scored equal" (a model tie)

def completion_text(completion: Any) -> str:
    """A completion as text: a string, or a conversational completion (a list of assistant
    messages, as TRL's online trainers pass them) joined."""
    if isinstance(completion, str):
        return completion
    return "".join(m["content"] for m in plain(completion))


def encode_conversation(tokenizer, prompt: Sequence[Message], completion: str) -> list[int]:
    """Token ids of the prompt conversation followed by the completion as an assistant turn,
    through the chat template (as TRL's RewardTrainer tokenizes conversational pairs)."""
    messages = [*as_messages(prompt), {"role": "assistant", "content": completion}]
    return list(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"])


def padded_batches(sequences: Sequence[Sequence[int]], pad_token_id: int, batch_size: int, device
                   ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor]]:
    """Token sequences sorted by length and right-padded batch by batch (a classifier reads
    the last non-pad token): (the batch's indices into `sequences`, input_ids [B, T],
    attention_mask [B, T]) on `device`."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        longest = max(len(sequences[i]) for i in chunk)
        input_ids = torch.full((len(chunk), longest), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), longest), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids = torch.as_tensor(list(sequences[i]), dtype=torch.long)
            input_ids[row, :len(ids)] = ids
            attention_mask[row, :len(ids)] = 1
        yield chunk, input_ids.to(device), attention_mask.to(device)


def score_ids(model, sequences: Sequence[Sequence[int]], pad_token_id: int, batch_size: int = 8) -> list[float]:
    """Raw scalar rewards of token sequences, in the order given (the model is put in eval mode)."""
    if not sequences:
        return []
    model.eval()
    scores: list[float] = [0.0] * len(sequences)
    with torch.inference_mode():
        for chunk, input_ids, attention_mask in padded_batches(sequences, pad_token_id, batch_size,
                                                               next(model.parameters()).device):
            logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
            for row, i in enumerate(chunk):
                scores[i] = float(logits[row, 0].float())
    return scores


class RewardScorer:
    """A reward model loaded once: `score(prompts, completions)` gives normalised rewards.

    Also usable as a TRL reward function (`scorer(prompts=..., completions=...)`), with
    prompts and completions as text or as conversations."""

    __name__ = "reward_model"   # TRL names reward functions by __name__ in its logs

    def __init__(self, path: Path, device: str | torch.device | None = None):
        self.path = Path(path)
        self.tokenizer = loading.load_tokenizer(self.path)
        self.model = loading.load_reward_model(self.path)
        self.model.config.pad_token_id = self.model.config.pad_token_id or self.tokenizer.pad_token_id
        self.device = torch.device(device or ("cuda" if loading.on_gpu() else "cpu"))
        self.model.to(self.device).eval()
        self.info = read_reward_info(self.path)
        self.offset = float(self.info.get("offset", 0.0))

    def encode(self, prompts: Sequence[Any], completions: Sequence[Any]) -> list[list[int]]:
        if len(prompts) != len(completions):
            raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
        return [encode_conversation(self.tokenizer, p, completion_text(c)) for p, c in zip(prompts, completions)]

    def score(self, prompts: Sequence[Any], completions: Sequence[Any], batch_size: int = 8,
              categories: Sequence[Any] | None = None) -> list[float]:
        """Rewards of each (prompt, completion), offset subtracted. prompts: chat messages
        (or text); completions: text; `categories`, which a combination's gate reads, change
        nothing for one reward model."""
        raw = score_ids(self.model, self.encode(prompts, completions), self.model.config.pad_token_id, batch_size)
        return [value - self.offset for value in raw]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float]:
        return self.score(prompts, completions)

    def flag_prompts(self, prompts: Sequence[Any], categories: Sequence[Any] | None) -> None:
        """Prompts' categories, for a combination's gate; one reward model needs none."""

    def score_parts(self, prompts: Sequence[Any], completions: Sequence[Any], batch_size: int = 8
                    ) -> tuple[list[float], dict[str, list[float]]]:
        """The rewards and each dimension's: one reward model has no dimensions apart."""
        return self.score(prompts, completions, batch_size), {}


def _prompt_key(prompt: Any) -> tuple:
    return tuple((m["role"], m["content"]) for m in as_messages(prompt))


class CombinedScorer:
    """A combination version (`rlhf.preference.combination`): its reward models loaded once,
    each completion scored by each, the scores combined (weighted, or gated as Llama 2).
    Usable wherever a `RewardScorer` is (`score`, a TRL reward function, `model` and
    `tokenizer`: its first component's, from which PPO starts its value model).

    A gate needs to know which prompts are flagged unsafe: `flag_prompts` tells it their
    categories (PPO, GRPO, RLOO and evaluation do, from the prompt set); TRL's `category`
    column reaches `__call__` too. A prompt it was not told about is gated by the safety
    score's threshold alone."""

    __name__ = "reward_model"

    def __init__(self, path: Path, device: str | torch.device | None = None):
        self.path = Path(path)
        self.combination, directories = combined.read(self.path)
        self.scorers = {name: RewardScorer(directories[name], device) for name in self.combination.components}
        first = self.scorers[self.combination.components[0]]
        self.tokenizer, self.model, self.device = first.tokenizer, first.model, first.device
        self.info = {"combination": self.combination.as_dict()}
        self.offset = 0.0
        self._categories: dict[tuple, Any] = {}

    def flag_prompts(self, prompts: Sequence[Any], categories: Sequence[Any] | None) -> None:
        if categories is not None:
            self._categories.update({_prompt_key(p): c for p, c in zip(prompts, categories)})

    def component_scores(self, prompts: Sequence[Any], completions: Sequence[Any], batch_size: int = 8
                         ) -> dict[str, list[float]]:
        """Each component's rewards of each (prompt, completion), by version name."""
        return {name: scorer.score(prompts, completions, batch_size) for name, scorer in self.scorers.items()}

    def score_parts(self, prompts: Sequence[Any], completions: Sequence[Any], batch_size: int = 8,
                    categories: Sequence[Any] | None = None) -> tuple[list[float], dict[str, list[float]]]:
        """The combined rewards and each component's (what automatic evaluation reports per
        dimension); `categories` (one per prompt) gate as `flag_prompts` does."""
        if categories is None and self._categories:
            categories = [self._categories.get(_prompt_key(p)) for p in prompts]
        parts = self.component_scores(prompts, completions, batch_size)
        return combined.combine(self.combination, parts, combined.unsafe_flags(categories, self.combination)), parts

    def score(self, prompts: Sequence[Any], completions: Sequence[Any], batch_size: int = 8,
              categories: Sequence[Any] | None = None) -> list[float]:
        """The combined rewards of each (prompt, completion)."""
        return self.score_parts(prompts, completions, batch_size, categories)[0]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs) -> list[float]:
        return self.score(prompts, completions, categories=kwargs.get("category"))


def load_scorer(path: Path, device: str | torch.device | None = None) -> "RewardScorer | CombinedScorer":
    """The scorer of a reward version's directory: one reward model, or a combination of
    several. Every caller that scores with a reward version loads it here."""
    kind = CombinedScorer if combined.is_combination(path) else RewardScorer
    return kind(Path(path), device)


def evaluate_pairs(scorer: RewardScorer, frame: pd.DataFrame, batch_size: int = 8) -> dict[str, Any]:
    """How well the reward model orders preference pairs (`rlhf eval-reward`).

    `frame` is what `rlhf.collect.formats.read_preference_pairs` returns (messages, chosen,
    rejected); `pairs` counts its rows. A pair is right when chosen scores higher than
    rejected, wrong when lower; pairs the model scores equal (|difference| < 1e-6) count as
    `ties`, apart from both, and `accuracy` is right / (right + wrong) (NaN when there is
    neither), with its 95% Wilson interval `accuracy_low`..`accuracy_high` (scipy's
    `binomtest(...).proportion_ci`; NaN when there is neither). `mean_margin` is the mean of score(chosen) - score(rejected). The file formats
    have no tie notion; a frame with a boolean `tie` column (pairs a human called equal) has
    those pairs reported apart, as `human_ties` and `human_tie_mean_abs_diff`, and left out
    of everything else.
    """
    prompts = [as_messages(p) for p in frame["messages" if "messages" in frame.columns else "prompt"]]
    chosen = scorer.score(prompts, [completion_text(c) for c in frame["chosen"]], batch_size)
    rejected = scorer.score(prompts, [completion_text(c) for c in frame["rejected"]], batch_size)
    diffs = [c - r for c, r in zip(chosen, rejected)]
    human_tie = (frame["tie"].fillna(False).astype(bool).tolist() if "tie" in frame.columns
                 else [False] * len(frame))
    ordered = [d for d, tied in zip(diffs, human_tie) if not tied]
    right = sum(d >= EQUAL_SCORE for d in ordered)
    wrong = sum(d <= -EQUAL_SCORE for d in ordered)
    low, high = (binomtest(right, right + wrong).proportion_ci(0.95, method="wilson") if right + wrong
                 else (math.nan, math.nan))
    result: dict[str, Any] = {
        "pairs": len(frame),
        "accuracy": right / (right + wrong) if right + wrong else math.nan,
        "accuracy_low": float(low),
        "accuracy_high": float(high),
        "ties": len(ordered) - right - wrong,
        "mean_margin": sum(ordered) / len(ordered) if ordered else math.nan,
        "right": right,
        "wrong": wrong,
    }
    tied = [abs(d) for d, t in zip(diffs, human_tie) if t]
    if tied:
        result["human_ties"] = len(tied)
        result["human_tie_mean_abs_diff"] = sum(tied) / len(tied)
    return result
