"""Potato's annotation output of a `ranking` scheme, with the instances it was shown.

Schema, as documented by Potato:
- the ranking scheme, https://potatoannotator.readthedocs.io/ (docs/annotation-types/
  comparison/ranking.md in github.com/davidjurgens/potato): the order is stored as
  `{"<scheme>": {"rank_order": "B,D=A,C"}}`, best first, `,` between ranks and `=`
  between tied items; with `items_key` the items come from the instance's data, e.g.
  `{"id": "t001", "source": "...", "translations": ["...", "...", "..."]}`;
- the output: each annotator's `annotation_output/<user>/annotated_instances.jsonl`, one
  line per instance, `{"id", "displayed_text", "label_annotations": {<scheme>: {...}},
  "span_annotations", "behavioral_data"}` (potato/flask_server.py, save_user_state); the
  newer docs show lines that name their annotator and instance, `{"user_id",
  "instance_id", "label_annotations", ...}`.

The output names items, not their texts, so the instances file goes with it (`--data`,
Potato's own data file, JSON Lines). How we read them: FILE is one annotated_instances.jsonl
or the whole output folder (every `<user>/annotated_instances.jsonl` in it). An
instance's prompt is its `text` (Potato's default text key) and its completions are its
one list of texts (the scheme's `items_key`); the items are named A, B, C, ... in that
list's order, as in Potato's example. The annotator is the line's `user_id`, else the
name of the annotator's folder the file is in (only when FILE is the output folder: a
lone file's folder may be the shared output folder, which names no one).
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
OUTPUT_FILE = "annotated_instances.jsonl"  # each annotator's, in annotation_output/<user>/
_RANK_ORDER = "rank_order"
_Instance = tuple[tuple[Message, ...], tuple[str, ...]]


def read(path: Path, data: Path | None) -> Iterator[ToolRanking]:
    if data is None:
        raise formats.FormatError(path, None, "Potato's output names items, not their texts: give the instances"
                                              " file it was made from with --data")
    instances = dict(_instances(data))
    if not path.is_dir():
        return _annotations(path, instances, None)
    files = sorted(path.glob(f"*/{OUTPUT_FILE}"))
    if not files:
        raise formats.FormatError(path, None, f"holds no <user>/{OUTPUT_FILE}; give Potato's output folder or one"
                                              " such file")
    return (ranking for file in files for ranking in _annotations(file, instances, file.parent.name))


def _annotations(path: Path, instances: dict[str, _Instance], folder_user: str | None) -> Iterator[ToolRanking]:
    return records(path, formats.json_lines(path), "line",
                   lambda line, where: _annotation(path, line, where, instances, folder_user))


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


def _annotation(path: Path, line: dict, where: int, instances: dict[str, _Instance],
                folder_user: str | None) -> Iterator[ToolRanking]:
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
    user = line.get("user_id", folder_user)
    if user is None:
        raise BadRecord("the line names no user_id; import Potato's output folder, whose <user> folders name them")
    yield ToolRanking(str(path), where, "line", messages, completions, identifier(user, "user_id"), ranks)


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
