"""Annotator specs: the strings that name a simulated annotator (`rlhf demo --annotator`).

Spec syntax (:func:`parse_annotator`, the CLI's ``--annotator``)::

    SPEC   := TERM ("+" TERM)* ["@" OPTION ("," OPTION)*]
    TERM   := [WEIGHT "*"] NAME [":" ARGS]
    NAME   := shorter | longer | mentions:WORD,WORD,... | avoids:WORD,...
              | atmost:CHARS | polite | markdown | refuses
              | reward:PATH | judge:PATH
    OPTION := flip=P | tie=P | margin=X | seed=N

for example ``shorter``, ``mentions:please,thanks``, ``shorter+2*mentions:please`` or
``avoids:sorry@flip=0.1,seed=3``. ``judge:PATH`` stands alone (a judge ranks, it does not
score); words and paths cannot contain ``+``, ``@`` or ``*`` (and words no ``,``). An
annotator's ``name`` is its spec, and parsing the name gives the same annotator back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rlhf.errors import UserError
from rlhf.simulate.annotator import Annotator, Combined, RewardModelAnnotator
from rlhf.simulate.judge import LLMJudge
from rlhf.simulate.rules import AtMost, Avoids, Longer, Markdown, Mentions, Polite, Refuses, Shorter

SPEC_NAMES = ("shorter", "longer", "mentions:WORDS", "avoids:WORDS", "atmost:CHARS", "polite", "markdown", "refuses",
              "reward:PATH", "judge:PATH")
PROPERTIES = {"polite": Polite, "markdown": Markdown, "refuses": Refuses}


SPEC_OPTIONS = {"flip": "flip_prob", "tie": "tie_prob", "margin": "tie_margin", "seed": "seed"}


class AnnotatorSpecError(UserError, ValueError):
    """An annotator spec that cannot be read; the message is one sentence saying why."""


def _parse_options(text: str, spec: str) -> dict[str, float]:
    options: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, equals, value = item.partition("=")
        key = key.strip().lower()
        if not equals or key not in SPEC_OPTIONS:
            raise AnnotatorSpecError(
                f"Unknown option '{item}' in annotator '{spec}': use "
                f"{', '.join(f'{option}=' for option in SPEC_OPTIONS)} after '@'.")
        try:
            number = int(value) if key == "seed" else float(value)
        except ValueError:
            raise AnnotatorSpecError(f"Option '{item}' in annotator '{spec}' needs a number.") from None
        options[SPEC_OPTIONS[key]] = number
    return options


def _parse_term(term: str, spec: str, model_path: Callable[[str], Path]) -> tuple[Annotator, float]:
    weight = 1.0
    head, star, rest = term.partition("*")
    if star:
        try:
            weight = float(head)
        except ValueError:
            raise AnnotatorSpecError(f"'{head.strip()}' in annotator '{spec}' is not a number to weigh a rule by.") from None
        term = rest
    name, colon, argument = (part.strip() for part in term.partition(":"))
    name = name.lower()
    words = [word.strip() for word in argument.split(",") if word.strip()]
    if name in ("shorter", "longer") and not colon:
        return (Shorter() if name == "shorter" else Longer()), weight
    if name in ("mentions", "avoids") and words:
        return (Mentions(words) if name == "mentions" else Avoids(words)), weight
    if name in PROPERTIES and not colon:
        return PROPERTIES[name](), weight
    if name == "atmost" and argument.isdigit() and int(argument) > 0:
        return AtMost(int(argument)), weight
    if name in ("reward", "judge") and argument:
        if name == "reward":
            from rlhf.modeling.scoring import load_scorer

            return RewardModelAnnotator(load_scorer(model_path(argument)), name=f"reward:{argument}"), weight
        from rlhf.modeling.models import load_policy

        return LLMJudge(load_policy(model_path(argument)), name=f"judge:{argument}"), weight
    where = "" if term.strip() == spec.strip() else f" in '{spec}'"
    raise AnnotatorSpecError(
        f"Unknown annotator '{term.strip()}'{where}: use {', '.join(SPEC_NAMES)}, "
        "joined with '+', optionally weighted as '2*NAME' and followed by '@flip=P,tie=P,margin=X,seed=N'.")


def parse_annotator(spec: str, model_path: Callable[[str], Path] | None = None) -> Annotator:
    """Build an annotator from a spec (syntax in the module docstring).

    Args:
        spec (str): e.g. ``"shorter+2*mentions:please@flip=0.1,seed=3"``.
        model_path: turns the PATH of ``reward:PATH`` and ``judge:PATH`` into a directory
            (for instance a model version's name into its directory under the home);
            by default PATH is a directory or hub id as written. Those two load a model.

    Raises:
        AnnotatorSpecError: a ``UserError`` and a ``ValueError``, one sentence naming what
            is known.
    """
    model_path = model_path or Path
    terms_text, _, options_text = (spec or "").partition("@")
    terms = terms_text.split("+")
    if not terms_text.strip() or not all(term.strip() for term in terms):
        raise AnnotatorSpecError(
            f"The annotator '{spec}' names no rule: use {', '.join(SPEC_NAMES)}, joined with '+'.")
    options = _parse_options(options_text, spec)
    if len(terms) > 1 and any(term.partition("*")[2 if "*" in term else 0].strip().lower().startswith("judge")
                              for term in terms):
        raise AnnotatorSpecError(f"A judge ranks on its own and cannot be combined with '+' in '{spec}'.")
    parts = [_parse_term(term, spec, model_path) for term in terms]
    try:
        if len(parts) == 1 and parts[0][1] == 1.0:
            return parts[0][0].with_noise(**options)
        return Combined([part for part, _ in parts], [weight for _, weight in parts], **options)
    except ValueError as error:
        raise AnnotatorSpecError(f"The annotator '{spec}' is not usable: {error}") from None
