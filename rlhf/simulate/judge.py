"""An LLM as annotator (:class:`LLMJudge`: a chat model asked for a ranking in our grammar,
with the log-odds of "Yes" as its fall-back) and the win rate of one policy over another
as such a judge sees it (:func:`judge_winrate`).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from typing import Any

from rlhf.preference.messages import Message
from rlhf.preference.ranking import Ranking, RankingError, letters, parse_ranking
from rlhf.simulate.annotator import Annotator


_RANKING_IN_TEXT = re.compile(r"[A-H](?:\s*[>=]\s*[A-H])+")


def find_ranking(answer: str, k: int) -> Ranking | None:
    """The first valid ranking of ``k`` completions in a model's answer: the whole answer,
    its first line, or any run like ``B > A = C`` inside it; None when there is none."""
    stripped = answer.strip()
    candidates = [stripped, stripped.split("\n", 1)[0], *_RANKING_IN_TEXT.findall(answer)]
    for candidate in candidates:
        try:
            return parse_ranking(candidate, k)
        except RankingError:
            continue
    return None


def find_top_pick(answer: str, k: int) -> str | None:
    """The one shown letter that a model's answer names as a standalone capital
    ("The best is B."); None when it names none or several."""
    named = set(re.findall(rf"(?<![A-Za-z])[{letters(k)}](?![A-Za-z])", answer))
    return named.pop() if len(named) == 1 else None


class LLMJudge(Annotator):
    """A chat model asked to rank the completions in our grammar (weak with a small model).

    The judge sees the conversation and the completions labelled "Answer A", "Answer B", ...
    and is asked to reply with only a ranking like ``B > A = C``; it decodes greedily.
    When no valid ranking can be found in its answer (:func:`find_ranking`), each
    completion is scored on its own instead: the judge is shown the question and that one
    answer, asked "Is this a good answer? Reply Yes or No.", and the score is the log-odds
    log P("Yes") - log P("No") of its first reply token; if the answer did name one
    completion alone as its pick (:func:`find_top_pick`, as small models do: "The answer
    is A."), that one goes first and the scores order the rest. So it always returns a
    valid ranking. ``last_method`` says how the last ranking was made ("parsed",
    "top_pick" or "yes_no"), ``last_answer`` holds the judge's text, and ``counts``
    tallies the three.

    Args:
        policy: a loaded :class:`rlhf.modeling.models.Policy` (``.model``, ``.tokenizer``).
        name (str): the annotator's name (``judge:PATH`` when parsed from a spec).
        max_chars (int): each completion is cut to this many characters in the judge's prompt.
    """

    def __init__(self, policy: Any, name: str = "judge", max_chars: int = 1500, **noise):
        super().__init__(**noise)
        self.policy, self.base_name, self.max_chars = policy, name, max_chars
        self.last_answer: str = ""
        self.last_method: str | None = None
        self.counts = {"parsed": 0, "top_pick": 0, "yes_no": 0}

    @staticmethod
    def _question(prompt: list[Message]) -> str:
        if len(prompt) == 1:
            return prompt[0]["content"]
        return "\n".join(f"{message['role']}: {message['content']}" for message in prompt)

    def _cut(self, text: str) -> str:
        return text if len(text) <= self.max_chars else text[: self.max_chars] + " [...]"

    def judge_prompt(self, prompt: list[Message], completions: list[str]) -> list[Message]:
        """The conversation the judge is asked to rank in."""
        shown = letters(len(completions))
        answers = "\n\n".join(f"Answer {letter}:\n{self._cut(text)}" for letter, text in zip(shown, completions))
        example = " > ".join(shown[:2]) + (" = " + " > ".join(shown[2:]) if len(shown) > 2 else "")
        return [{"role": "user", "content": (
            f"Rank these answers to the question, best first.\n\nQuestion:\n{self._question(prompt)}\n\n"
            f"{answers}\n\nReply with only the ranking: the letters {', '.join(shown)}, each once, "
            f"with '>' meaning better than and '=' meaning equally good, for example: {example}"
        )}]

    def clean_ranking(self, prompt: list[Message], completions: list[str]) -> Ranking:
        from rlhf.modeling.generate import generate_tokens
        from rlhf.modeling.sampling import SamplingParams

        params = SamplingParams(temperature=0.0, max_new_tokens=4 * len(completions) + 16)
        generated = generate_tokens(self.policy, [self.judge_prompt(prompt, completions)], params, k=1)
        response = generated.response_ids[0][generated.response_mask[0].bool()]
        self.last_answer = self.policy.tokenizer.decode(response, skip_special_tokens=True)
        ranking = find_ranking(self.last_answer, len(completions))
        if ranking is not None:
            self.last_method = "parsed"
        else:
            scores = self.yes_no_scores(prompt, completions)
            pick = find_top_pick(self.last_answer, len(completions))
            if pick is not None:  # above every score
                scores[letters(len(completions)).index(pick)] = max(scores) + 1.0 + self.tie_margin
            self.last_method = "yes_no" if pick is None else "top_pick"
            ranking = self.by_scores(scores)
        self.counts[self.last_method] += 1
        return ranking

    def yes_no_scores(self, prompt: list[Message], completions: list[str]) -> list[float]:
        """log P("Yes") - log P("No") of the judge's first reply token, per completion. The
        question is rendered as every generation renders one (`generate.render_prompts`):
        a judge that is a prompt version is given its system prompt here too."""
        import torch

        from rlhf.modeling.generate import render_prompts

        tokenizer, model = self.policy.tokenizer, self.policy.model
        yes, no = (tokenizer.encode(word, add_special_tokens=False)[0] for word in ("Yes", "No"))
        scores = []
        with torch.inference_mode():
            for text in completions:
                messages = [{"role": "user", "content": (
                    f"Question:\n{self._question(prompt)}\n\nAnswer:\n{self._cut(text)}\n\n"
                    "Is this a good answer? Reply Yes or No."
                )}]
                [rendered] = render_prompts(self.policy, [messages])  # a prompt version's system prompt too
                ids = tokenizer(rendered, return_tensors="pt", add_special_tokens=False)["input_ids"]
                logits = model(input_ids=ids.to(model.device), use_cache=False).logits[0, -1].float()
                log_probs = torch.log_softmax(logits, dim=-1)
                scores.append(float(log_probs[yes] - log_probs[no]))
        return scores


def judge_winrate(
    annotator: Annotator,
    prompts: Sequence[Any],
    completions_a: Sequence[str],
    completions_b: Sequence[str],
    randomise_order: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """How often ``annotator`` ranks each prompt's completion from A above the one from B.

    Each pair is shown in a random order (seeded by ``seed``) unless ``randomise_order`` is
    False, so that an annotator preferring the first or second position favours neither side.

    Returns:
        dict: ``n``, ``wins``, ``ties``, ``losses`` (counts for A) and ``win_rate``, the
        share of wins with ties as half (``nan`` for no prompts).
    """
    if not len(prompts) == len(completions_a) == len(completions_b):
        raise ValueError(
            f"Got {len(prompts)} prompts, {len(completions_a)} completions from A and "
            f"{len(completions_b)} from B: give one of each per prompt.")
    order = random.Random(seed)
    wins = ties = losses = 0
    for prompt, a, b in zip(prompts, completions_a, completions_b):
        swapped = randomise_order and order.random() < 0.5
        ranks = annotator.ranking(prompt, [b, a] if swapped else [a, b]).ranks()
        rank_a, rank_b = (ranks["B"], ranks["A"]) if swapped else (ranks["A"], ranks["B"])
        if rank_a < rank_b:
            wins += 1
        elif rank_a == rank_b:
            ties += 1
        else:
            losses += 1
    n = wins + ties + losses
    return {"n": n, "wins": wins, "ties": ties, "losses": losses,
            "win_rate": (wins + 0.5 * ties) / n if n else float("nan")}
