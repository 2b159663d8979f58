"""Annotations made in other tools: Label Studio, Argilla, Potato, OpenAssistant.

One reader module per tool (`labelstudio`, `argilla`, `potato`, `oasst`), each knowing
only its tool's documented export and yielding the same `ToolRanking`; `plan` checks
them all the same way and groups them into comparisons, so that storing them is one
path (`Workbench.import_from`) whatever the tool. A tool is a module rather than a
class because each is a handful of functions over one schema, with nothing to keep.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from rlhf.collect.formats import FormatError, PathLike
from rlhf.collect.imports import argilla, labelstudio, oasst, potato
from rlhf.collect.imports.record import ToolRanking
from rlhf.limits import LIMITS
from rlhf.preference.messages import Message
from rlhf.preference.ranking import MAX_K, MIN_K, Ranking, RankingError, ranking_from_ranks

TOOLS = (labelstudio.TOOL, argilla.TOOL, potato.TOOL, oasst.TOOL)
TOOL_HELP = {
    labelstudio.TOOL: "Label Studio JSON export of a Ranker (with or without buckets) or Pairwise project",
    argilla.TOOL: "Argilla 2.x dataset with a RankingQuestion: a to_disk folder or a .parquet file",
    potato.TOOL: "Potato output folder (or one annotated_instances.jsonl) of a ranking scheme, with --data (its instances file)",
    oasst.TOOL: "OpenAssistant message trees (*.trees.jsonl), ranks among sibling assistant replies",
}


def read(tool: str, path: PathLike, data: PathLike | None = None) -> list[ToolRanking]:
    """Every ranking in one tool's export, read whole: a bad record stops it."""
    path = Path(path)
    if tool == potato.TOOL:
        return list(potato.read(path, Path(data) if data is not None else None))
    if data is not None:
        raise FormatError(data, None, f"--data goes with --from {potato.TOOL}; a {tool} export holds its texts")
    readers = {labelstudio.TOOL: labelstudio.read, argilla.TOOL: argilla.read, oasst.TOOL: oasst.read}
    if tool not in readers:
        raise FormatError(path, None, f"'{tool}' is not a tool we import from; choose {', '.join(TOOLS)}")
    return list(readers[tool](path))


@dataclass
class ImportPlan:
    """What an import stores: the comparisons (a prompt and its K completions, once each)
    and the rankings of them, each by `<tool>:<annotator>`."""

    items: list[tuple[list[Message], list[str]]] = field(default_factory=list)
    rankings: list[tuple[int, str, Ranking]] = field(default_factory=list)  # item index, annotator, ranking

    @property
    def annotators(self) -> list[str]:
        return list(dict.fromkeys(annotator for _, annotator, _ in self.rankings))


def plan(tool: str, path: PathLike, found: Iterable[ToolRanking]) -> ImportPlan:
    """Check every ranking (K, its ranks, the caps on text and names, one ranking per
    annotator and comparison) and group them: rankings of the same prompt and the same
    completions in the same order are one comparison. The first problem is a FormatError
    pointing at its record; nothing is planned past it."""
    result = ImportPlan()
    item_of: dict[str, int] = {}
    first_seen: dict[tuple[int, str], ToolRanking] = {}
    for ranking in found:
        annotator = f"{tool}:{ranking.annotator}"
        checked = _checked(ranking, annotator)
        key = json.dumps([ranking.messages, ranking.completions], ensure_ascii=False)
        if key not in item_of:
            item_of[key] = len(result.items)
            result.items.append(([dict(m) for m in ranking.messages], list(ranking.completions)))
        item = item_of[key]
        earlier = first_seen.setdefault((item, annotator), ranking)
        if earlier is not ranking:
            _refuse(ranking, f"{annotator} ranks the same prompt and completions a second time (first at "
                             f"{earlier.unit} {earlier.where})")
        result.rankings.append((item, annotator, checked))
    if not result.rankings:
        raise FormatError(path, None, f"holds no rankings a {tool} import can use")
    return result


def _checked(ranking: ToolRanking, annotator: str) -> Ranking:
    k = len(ranking.completions)
    if not MIN_K <= k <= MAX_K:
        _refuse(ranking, f"{k} completion{'' if k == 1 else 's'} to rank; a comparison holds {MIN_K} to {MAX_K}")
    if len(annotator) > LIMITS.name_chars:
        _refuse(ranking, f"the annotator's name is {len(annotator):,} characters long; at most {LIMITS.name_chars:,}"
                         " are taken")
    for turn, message in enumerate(ranking.messages, start=1):
        if len(message["content"]) > LIMITS.prompt_chars:
            _refuse(ranking, f"prompt turn {turn} is {len(message['content']):,} characters long; at most "
                             f"{LIMITS.prompt_chars:,} are taken")
    for letter, completion in zip("ABCDEFGH", ranking.completions):
        if len(completion) > LIMITS.text_chars:
            _refuse(ranking, f"completion {letter} is {len(completion):,} characters long; at most "
                             f"{LIMITS.text_chars:,} are taken")
    try:
        return ranking_from_ranks(list(ranking.ranks))
    except RankingError as error:
        _refuse(ranking, str(error).rstrip("."))


def _refuse(ranking: ToolRanking, reason: str) -> NoReturn:
    raise FormatError(ranking.path, ranking.where, reason, ranking.unit)
