"""Label Studio's JSON export of a Ranker or a Pairwise project.

Schema, as documented by Label Studio:
- the export: https://labelstud.io/guide/export.html and the task format
  https://labelstud.io/guide/task_format.html (a JSON array of tasks, each with `data`
  and `annotations`; an annotation has `completed_by`, `was_cancelled` and `result`, a
  list of `{from_name, to_name, type, value}`);
- Ranker: https://labelstud.io/tags/ranker.html (`type: "ranker"`; `value.ranker` is
  `{<ranker name>: [item ids, best first]}`, or with Bucket tags `{<bucket>: [item ids]}`
  per bucket; the items are the task's List data, objects with `id`, `title`, `body`);
- Pairwise: https://labelstud.io/tags/pairwise.html and the template
  https://labelstud.io/templates/pairwise_comparison.html (`type: "pairwise"`,
  `value.selected` "left" or "right", the two texts in `data.text1` and `data.text2`).

How we read them: the prompt is the task's `data.prompt`. Without buckets the order is
strict; with buckets each bucket is one tie group, the buckets best first in the order
the export lists them (the order of the Bucket tags in the labeling config), and an item
left in no bucket (Label Studio's internal `_` column) makes the ranking incomplete.
A Pairwise choice ranks the selected text above the other. Cancelled annotations are
skipped. The annotator is `completed_by` (a user id, or the user's email where the
export holds the user object).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhf.collect import formats
from rlhf.collect.imports.record import (
    BadRecord, ToolRanking, describe, identifier, mapping, prompt_messages, records, sequence, text,
)

TOOL = "labelstudio"
_UNPLACED = "_"  # the Ranker's column of items put in no bucket
_PAIRWISE_SIDES = {"left": (1, 2), "right": (2, 1)}


def read(path: Path) -> Iterator[ToolRanking]:
    tasks = formats.json_document(path)
    if not isinstance(tasks, list):
        raise formats.FormatError(path, None, f"a Label Studio JSON export is a list of tasks, got {describe(tasks)}")
    return records(path, enumerate(tasks, start=1), "task", lambda task, where: _task(path, task, where))


def _task(path: Path, task: Any, where: int) -> Iterator[ToolRanking]:
    task = mapping(task, "the task")
    data = mapping(task.get("data"), "the task's data")
    annotations = sequence(task.get("annotations"), "the task's annotations")
    for number, annotation in enumerate(annotations, start=1):
        annotation = mapping(annotation, f"annotation {number}")
        if annotation.get("was_cancelled"):
            continue
        annotator = _annotator(annotation.get("completed_by"), number)
        completions, ranks = _ranking(data, annotation, number)
        yield ToolRanking(str(path), where, "task", prompt_messages(data.get("prompt"), "data.prompt"),
                          completions, annotator, ranks)


def _annotator(completed_by: Any, number: int) -> str:
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("email") or completed_by.get("id")
    return identifier(completed_by, f"annotation {number}'s completed_by")


def _ranking(data: dict, annotation: dict, number: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    results = [mapping(result, f"annotation {number}'s result") for result in
               sequence(annotation.get("result"), f"annotation {number}'s result")]
    rankings = [result for result in results if result.get("type") in ("ranker", "pairwise")]
    if len(rankings) != 1:
        raise BadRecord(f"annotation {number} must hold one ranker or pairwise result, it holds {len(rankings)}")
    result = rankings[0]
    value = mapping(result.get("value"), f"annotation {number}'s {result['type']} value")
    if result["type"] == "pairwise":
        return _pairwise(data, value, number)
    return _ranker(data, result, value, number)


def _pairwise(data: dict, value: dict, number: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    selected = value.get("selected")
    if selected not in _PAIRWISE_SIDES:
        raise BadRecord(f"annotation {number}'s pairwise choice must be \"left\" or \"right\", got {describe(selected)}")
    completions = (text(data.get("text1"), "data.text1"), text(data.get("text2"), "data.text2"))
    return completions, _PAIRWISE_SIDES[selected]


def _ranker(data: dict, result: dict, value: dict, number: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    items = _list_items(data)
    groups = mapping(value.get("ranker"), f"annotation {number}'s ranker value")
    if list(groups) == [result.get("from_name")]:  # no buckets: one list, best first
        order = sequence(groups[result["from_name"]], f"annotation {number}'s ranking")
        groups = {str(position): [item] for position, item in enumerate(order)}
    unplaced = groups.pop(_UNPLACED, None) or []
    if unplaced:
        raise BadRecord(f"annotation {number} left {', '.join(map(str, unplaced))} in no bucket: every item needs a rank")
    rank_of: dict[str, int] = {}
    for rank, (bucket, ids) in enumerate(groups.items(), start=1):
        for item in sequence(ids, f"annotation {number}'s bucket {bucket!r}"):
            item = identifier(item, f"an item id in bucket {bucket!r}")
            if item not in items:
                raise BadRecord(f"annotation {number} ranks item {item!r}, which the task's list does not hold")
            if item in rank_of:
                raise BadRecord(f"annotation {number} ranks item {item!r} twice")
            rank_of[item] = rank
    missing = [item for item in items if item not in rank_of]
    if missing:
        raise BadRecord(f"annotation {number} does not rank {', '.join(missing)}: every item needs a rank")
    return tuple(items.values()), tuple(rank_of[item] for item in items)


def _list_items(data: dict) -> dict[str, str]:
    """The texts of the task's one list of items (the List tag's data), by item id."""
    lists = [value for value in data.values()
             if isinstance(value, list) and value and all(isinstance(item, dict) and "id" in item for item in value)]
    if len(lists) != 1:
        raise BadRecord(f"the task's data must hold one list of items with ids (the Ranker's List), it holds {len(lists)}")
    items: dict[str, str] = {}
    for position, item in enumerate(lists[0], start=1):
        item_id = identifier(item["id"], f"item {position}'s id")
        if item_id in items:
            raise BadRecord(f"the task's list holds the item id {item_id!r} twice")
        items[item_id] = text(item.get("body"), f"item {item_id!r}'s body")
    return items
