"""Potato's annotation output of a `ranking` scheme, with the instances it was shown.

Schema, as documented by Potato:
- the ranking scheme, https://potatoannotator.readthedocs.io/ (docs/annotation-types/
  comparison/ranking.md in github.com/davidjurgens/potato): the order is stored as
  `{"<scheme>": {"rank_order": "B,D=A,C"}}`, best first, `,` between ranks and `=`
  between tied items; with `items_key` the items come from the instance's data, e.g.
  `{"id": "t001", "source": "...", "translations": ["...", "...", "..."]}`;
- the output, annotated_instances.jsonl in the output_annotation_dir (docs/export_formats.md):
  one line per annotator and instance, `{"user_id", "instance_id", "label_annotations":
  {<scheme>: {...}}, ...}`.

The output names items, not their texts, so the instances file goes with it (`--data`,
Potato's own data file, JSON Lines). How we read them: an instance's prompt is its `text`
(Potato's default text key) and its completions are its one list of texts (the scheme's
`items_key`); the items are named A, B, C, ... in that list's order, as in Potato's
example. The annotator is `user_id`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rlhf.collect import formats
from rlhf.collect.imports.record import (
    BadRecord, ToolRanking, identifier, mapping, prompt_messages, records, text,
)
from rlhf.preference.messages import Message
from rlhf.preference.ranking import MAX_K, MIN_K

TOOL = "potato"
_RANK_ORDER = "rank_order"
_Instance = tuple[tuple[Message, ...], tuple[str, ...]]


def read(path: Path, data: Path | None) -> Iterator[ToolRanking]:
    if data is None:
        raise formats.FormatError(path, None, "Potato's output names items, not their texts: give the instances"
                                              " file it was made from with --data")
    instances = dict(_instances(data))
    return records(path, formats.json_lines(path), "line", lambda line, where: _annotation(path, line, where, instances))


def _instances(data: Path) -> Iterator[tuple[str, _Instance]]:
    seen: set[str] = set()
    for line, record in formats.json_lines(data):
        try:
            key = identifier(record.get("id"), "the instance's id")
            if key in seen:
                raise BadRecord(f"the instance id {key!r} appears twice")
            seen.add(key)
            yield key, _instance(record)
        except BadRecord as problem:
            raise formats.FormatError(data, line, str(problem)) from None


def _instance(record: dict) -> _Instance:
    lists = [value for value in record.values() if isinstance(value, list) and value
             and all(isinstance(item, str) for item in value)]
    if len(lists) != 1:
        raise BadRecord(f"the instance must hold one list of texts to rank (the scheme's items_key), it holds {len(lists)}")
    return prompt_messages(record.get("text"), "the instance's text"), tuple(lists[0])


def _annotation(path: Path, line: dict, where: int, instances: dict[str, _Instance]) -> Iterator[ToolRanking]:
    instance_id = identifier(line.get("instance_id", line.get("id")), "instance_id")
    if instance_id not in instances:
        raise BadRecord(f"instance {instance_id!r} is not in the instances file")
    messages, completions = instances[instance_id]
    schemes = mapping(line.get("label_annotations"), "label_annotations")
    orders = {name: value[_RANK_ORDER] for name, value in schemes.items()
              if isinstance(value, dict) and _RANK_ORDER in value}
    if len(orders) != 1:
        raise BadRecord(f"label_annotations must hold one ranking (a rank_order), it holds {len(orders)}")
    (scheme, order), = orders.items()
    ranks = _ranks(text(order, f"{scheme}'s rank_order"), len(completions))
    yield ToolRanking(str(path), where, "line", messages, completions, identifier(line.get("user_id"), "user_id"), ranks)


def _ranks(order: str, k: int) -> tuple[int, ...]:
    """'B,D=A,C' as one rank per item in list order: (2, 1, 3, 2)."""
    if not MIN_K <= k <= MAX_K:
        raise BadRecord(f"the instance has {k} items to rank; a comparison holds {MIN_K} to {MAX_K}")
    letters = "ABCDEFGH"[:k]
    rank_of: dict[str, int] = {}
    for rank, group in enumerate(order.split(","), start=1):
        for item in group.split("="):
            item = item.strip().upper()
            if item not in letters:
                raise BadRecord(f"rank_order {order!r} names {item!r}, but the instance's {k} items are "
                                f"{', '.join(letters)}")
            if item in rank_of:
                raise BadRecord(f"rank_order {order!r} names {item} twice")
            rank_of[item] = rank
    missing = [item for item in letters if item not in rank_of]
    if missing:
        raise BadRecord(f"rank_order {order!r} does not rank {', '.join(missing)}: every item needs a rank")
    return tuple(rank_of[item] for item in letters)
