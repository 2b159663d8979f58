"""Several reward models as one reward: a weighted sum, or Llama 2's safety gate.

Pure maths and the one syntax that names a combination, no store and no torch;
`rlhf.modeling.scoring.CombinedScorer` scores with it and `rlhf models combine` registers
one as a reward version, which every caller of a reward model (PPO, GRPO, RLOO, the
queue's suggestions and 'uncertain' order, automatic evaluation) then scores with.

The syntax (`parse_combination`):

- weighted: ``helpfulness-3*0.7 + safety-4*0.3``: reward versions, each with an optional
  ``*weight`` (1 when left out), joined by ``+``; the reward is sum_i w_i r_i.
- gated: ``gate:safety=safety-4,helpfulness=helpfulness-3,threshold=-1.7``: the safety
  reward where the prompt is flagged unsafe (its category is ``unsafe_category``,
  ``safety`` unless the spec says ``category=...``) or the safety reward is below
  ``threshold``; the helpfulness reward everywhere else. ``threshold`` may be left out
  (then only the prompt's flag gates).

Every mistake is a `CombinationError` of one sentence.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from rlhf.errors import UserError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
GATE_PREFIX = "gate:"
GATE_KEYS = ("safety", "helpfulness", "threshold", "category")
COMBINATION_FILE = "combination.json"   # a combination version's directory holds this file alone
METHOD = "combination"                   # its method in `model_versions`
DEFAULT_UNSAFE_CATEGORY = "safety"   # the default prompt set's category of prompts that ask for harm
EXAMPLES = "e.g. 'helpfulness-3*0.7 + safety-4*0.3' or 'gate:safety=safety-4,helpfulness=helpfulness-3,threshold=-1.7'"


class CombinationError(UserError):
    """A combination that cannot be read, or names what cannot be combined."""


@dataclass(frozen=True)
class Combination:
    """A parsed combination. `kind` "weighted": `terms` are (version, weight); "gate":
    `safety` and `helpfulness` name the versions, `threshold` (None: the flag alone)
    and `unsafe_category` gate them."""

    kind: str
    terms: tuple[tuple[str, float], ...] = ()
    safety: str | None = None
    helpfulness: str | None = None
    threshold: float | None = None
    unsafe_category: str = DEFAULT_UNSAFE_CATEGORY

    @property
    def components(self) -> tuple[str, ...]:
        """The reward versions it reads, each once, in the order written."""
        names = [name for name, _ in self.terms] if self.kind == "weighted" else [self.safety, self.helpfulness]
        return tuple(dict.fromkeys(names))

    @property
    def canonical(self) -> str:
        """The combination written back in the syntax, one way."""
        if self.kind == "weighted":
            return " + ".join(f"{name}*{weight:g}" for name, weight in self.terms)
        parts = [f"safety={self.safety}", f"helpfulness={self.helpfulness}"]
        if self.threshold is not None:
            parts.append(f"threshold={self.threshold:g}")
        if self.unsafe_category != DEFAULT_UNSAFE_CATEGORY:
            parts.append(f"category={self.unsafe_category}")
        return GATE_PREFIX + ",".join(parts)

    def as_dict(self) -> dict:
        return {"kind": self.kind, "spec": self.canonical, "terms": [list(term) for term in self.terms],
                "safety": self.safety, "helpfulness": self.helpfulness, "threshold": self.threshold,
                "unsafe_category": self.unsafe_category}

    @classmethod
    def from_dict(cls, values: dict) -> "Combination":
        return cls(values["kind"], tuple((name, float(weight)) for name, weight in values.get("terms") or ()),
                   values.get("safety"), values.get("helpfulness"), values.get("threshold"),
                   values.get("unsafe_category") or DEFAULT_UNSAFE_CATEGORY)


def _name(text: str, what: str) -> str:
    name = text.strip()
    if not NAME.fullmatch(name):
        raise CombinationError(f"'{name}' is not a version name ({what}): {EXAMPLES}.")
    return name


def _number(text: str, what: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise CombinationError(f"{what} must be a number, not '{text.strip()}'.") from None
    if not math.isfinite(value):
        raise CombinationError(f"{what} must be a finite number, not '{text.strip()}'.")
    return value


def parse_combination(text: str) -> Combination:
    """The combination `text` names (the syntax in this module's docstring); a
    CombinationError of one sentence otherwise."""
    text = str(text or "").strip()
    if not text:
        raise CombinationError(f"Write a combination of reward versions, {EXAMPLES}.")
    if text.lower().startswith(GATE_PREFIX):
        return _gate(text[len(GATE_PREFIX):])
    terms = []
    for part in text.split("+"):
        name, star, weight = part.partition("*")
        if not part.strip():
            raise CombinationError(f"'{text}' has an empty term around '+': {EXAMPLES}.")
        name = _name(name, "a weighted term is VERSION or VERSION*WEIGHT")
        value = _number(weight, f"The weight of {name}") if star else 1.0
        if value == 0:
            raise CombinationError(f"The weight of {name} is 0: leave {name} out instead.")
        terms.append((name, value))
    names = [name for name, _ in terms]
    if len(set(names)) != len(names):
        twice = next(name for name in names if names.count(name) > 1)
        raise CombinationError(f"{twice} appears twice: give each reward version one weight.")
    if len(terms) < 2:
        raise CombinationError(f"A combination joins at least two reward versions with '+', {EXAMPLES}.")
    return Combination("weighted", tuple(terms))


def _gate(body: str) -> Combination:
    values: dict[str, str] = {}
    for part in body.split(","):
        key, equals, value = part.partition("=")
        key = key.strip().lower()
        if not equals or key not in GATE_KEYS:
            raise CombinationError(f"'{part.strip()}' is not a part of a gate: write key=value with key one of"
                                   f" {', '.join(GATE_KEYS)}, {EXAMPLES}.")
        if key in values:
            raise CombinationError(f"The gate sets {key} twice.")
        values[key] = value.strip()
    missing = [key for key in ("safety", "helpfulness") if key not in values]
    if missing:
        raise CombinationError(f"A gate names both reward versions, safety= and helpfulness=; {missing[0]} is missing.")
    safety, helpfulness = _name(values["safety"], "safety="), _name(values["helpfulness"], "helpfulness=")
    if safety == helpfulness:
        raise CombinationError("A gate's safety and helpfulness reward versions must differ.")
    threshold = _number(values["threshold"], "The gate's threshold") if "threshold" in values else None
    category = values.get("category", DEFAULT_UNSAFE_CATEGORY)
    if not category:
        raise CombinationError("The gate's category (of the prompts flagged unsafe) must not be empty.")
    return Combination("gate", (), safety, helpfulness, threshold, category)


def combine(combination: Combination, scores: Mapping[str, Sequence[float]],
            unsafe: Sequence[bool] | None = None) -> list[float]:
    """The combined reward of each completion from each component's rewards
    (`scores[version][i]`) and, for a gate, whether completion i's prompt is flagged
    unsafe (`unsafe`; None: no prompt is known to be).

    Weighted: r = sum_v w_v r_v(i). Gated, as Llama 2's reward for PPO (Touvron et al.
    2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models", section 3.2.3, the
    equation for R_c, with the helpfulness and safety reward models of section 3.2.2):

        R_c(g | p) = R_s(g | p)   if IS_SAFETY(p) or R_s(g | p) < threshold
                     R_h(g | p)   otherwise

    Llama 2's threshold, 0.15, is on its reward models' sigmoid scale; the workbench's
    rewards are logits shifted to mean 0 on the base policy, where 0.15 is about -1.73.
    (Llama 2 then whitens logit(R_c) and subtracts the KL penalty; the trainers here do
    their own normalising and KL.)
    """
    lengths = {len(scores[name]) for name in combination.components}
    if len(lengths) > 1:
        raise ValueError(f"the components scored different numbers of completions: {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    if combination.kind == "weighted":
        return [sum(weight * float(scores[name][i]) for name, weight in combination.terms) for i in range(n)]
    flagged = list(unsafe) if unsafe is not None else [False] * n
    if len(flagged) != n:
        raise ValueError(f"{len(flagged)} unsafe flags for {n} completions")
    safety, helpful = scores[combination.safety], scores[combination.helpfulness]
    gate = combination.threshold
    return [float(safety[i]) if flagged[i] or (gate is not None and safety[i] < gate) else float(helpful[i])
            for i in range(n)]


def unsafe_flags(categories: Sequence[str | None] | None, combination: Combination) -> list[bool] | None:
    """Each prompt's IS_SAFETY from its category (None where categories are unknown)."""
    if categories is None:
        return None
    return [category == combination.unsafe_category for category in categories]


# -- a combination version's directory ----------------------------------------------------

def is_combination(directory: Path) -> bool:
    """Whether a version directory is a combination of reward versions."""
    return (Path(directory) / COMBINATION_FILE).is_file()


def write(directory: Path, combination: Combination, component_dirs: Mapping[str, Path]) -> None:
    """`combination.json` into a new `directory`: the combination and each component's
    directory, relative to it (so that a home moved whole still works)."""
    directory = Path(directory)
    directory.mkdir(parents=True)
    relative = {name: os.path.relpath(Path(component_dirs[name]).resolve(), directory.resolve())
                for name in combination.components}
    (directory / COMBINATION_FILE).write_text(json.dumps({**combination.as_dict(), "components": relative}, indent=2))


def read(directory: Path) -> tuple[Combination, dict[str, Path]]:
    """A combination version's combination and its components' directories."""
    directory = Path(directory)
    values = json.loads((directory / COMBINATION_FILE).read_text())
    return Combination.from_dict(values), {name: (directory / path).resolve()
                                           for name, path in values["components"].items()}
