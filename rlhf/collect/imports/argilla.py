"""Argilla 2.x datasets with a RankingQuestion: `rg.Dataset.to_disk` folders or Parquet.

Schema, as documented by Argilla:
- `Dataset.to_disk(path)` writes a folder with `records.json`, a JSON list of records
  `{id, fields, metadata, suggestions, responses, vectors, _server_id}`, where
  `responses` is `{<question>: [{value, user_id}, ...]}`; Parquet (from
  `dataset.records.to_datasets()`) holds the same records flattened: one column per field,
  `<question>.responses`, `<question>.responses.users` and `<question>.responses.status`
  (https://docs.argilla.io/latest/how_to_guides/import_export/ and the SDK's
  `argilla/records/_io/_generic.py`, `_json.py`, `datasets/_io/_disk.py`);
- a RankingQuestion's response (https://docs.argilla.io/latest/reference/argilla/settings/questions/;
  the value's layout in the guide "Work with suggestions and responses",
  docs/_source/practical_guides/create_update_dataset/suggestions_and_responses.md, and
  in the SDK's argilla/responses.py): the server keeps `[{"value": <option>, "rank": <n>},
  ...]`, which is what ties need; the SDK's own `UserResponse.from_model` turns it into
  the bare list of options, best first, and so loses ties.

How we read them: both forms are taken; with `rank` values they are kept as they are, so
equal ranks stay ties. The options name the record's fields that hold the completions
(the way Argilla's ranking examples set up `response1`, `response2`, ...) and the prompt is
the field `prompt`. The ranking question is found by its answers: the one question whose
answers are lists of the record's field names. A response with a status other than
`submitted` (a draft, a discarded record) is no ranking and is skipped. The annotator is
the response's `user_id`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rlhf.collect import formats
from rlhf.collect.imports.record import (
    BadRecord, ToolRanking, describe, identifier, mapping, prompt_messages, records, sequence, text,
)

TOOL = "argilla"
RECORDS_FILE = "records.json"  # what to_disk writes next to its .argilla/ settings
_SUBMITTED = "submitted"


def read(path: Path) -> Iterator[ToolRanking]:
    if path.is_dir():
        source = path / RECORDS_FILE
        document = formats.json_document(source)
        if not isinstance(document, list):
            raise formats.FormatError(source, None, f"Argilla's records.json is a list of records, got {describe(document)}")
        return records(source, enumerate(document, start=1), "record", lambda r, where: _nested(source, r, where))
    if path.suffix.lower() != ".parquet":
        raise formats.FormatError(path, None, "an Argilla dataset is a folder written by rg.Dataset.to_disk or a"
                                              " .parquet file")
    return records(path, formats.parquet_rows(path), "record", lambda r, where: _flattened(path, r, where))


def _nested(path: Path, record: Any, where: int) -> Iterator[ToolRanking]:
    record = mapping(record, "the record")
    fields = mapping(record.get("fields"), "the record's fields")
    responses = mapping(record.get("responses") or {}, "the record's responses")
    answers = {question: [_answer(answer, question) for answer in sequence(given, f"the {question} responses")]
               for question, given in responses.items()}
    return _rankings(path, where, fields, answers)


def _answer(answer: Any, question: str) -> tuple[Any, Any, Any]:
    answer = mapping(answer, f"a {question} response")
    return answer.get("value"), answer.get("user_id"), answer.get("status")


def _flattened(path: Path, row: dict, where: int) -> Iterator[ToolRanking]:
    answers = {}
    for column in row:
        if column.endswith(".responses"):
            values = row[column] or []
            users = row.get(f"{column}.users") or []
            statuses = row.get(f"{column}.status") or [None] * len(values)
            if not len(values) == len(users) == len(statuses):
                raise BadRecord(f"{column} holds {len(values)} answers for {len(users)} users")
            answers[column.removesuffix(".responses")] = list(zip(values, users, statuses))
    fields = {name: value for name, value in row.items() if "." not in name}
    return _rankings(path, where, fields, answers)


def _rankings(path: Path, where: int, fields: dict, answers: dict[str, list]) -> Iterator[ToolRanking]:
    ranked = [question for question, given in answers.items() if any(_looks_ranked(v, fields) for v, _, _ in given)]
    if len(ranked) > 1:
        raise BadRecord(f"more than one question holds rankings ({', '.join(ranked)}); import one dataset per question")
    if not ranked:
        return
    question = ranked[0]
    messages = prompt_messages(fields.get("prompt"), "the prompt field")
    for value, user, status in answers[question]:
        if status is not None and status != _SUBMITTED:
            continue
        rank_of = dict(zip(*_options_and_ranks(value, fields, question)))
        # the fields in the record's order, so every annotator's ranking of them is one comparison
        shown = [name for name in fields if name in rank_of]
        completions = tuple(text(fields[name], f"the field {name!r}") for name in shown)
        yield ToolRanking(str(path), where, "record", messages, completions,
                          identifier(user, f"the {question} response's user_id"),
                          tuple(rank_of[name] for name in shown))


def _looks_ranked(value: Any, fields: dict) -> bool:
    """A ranking answer: {value, rank} items (the server's form), or options that all name
    the record's fields (the SDK's form)."""
    if not isinstance(value, list) or not value:
        return False
    if all(isinstance(item, dict) and "value" in item for item in value):
        return True
    return all(isinstance(item, str) and item in fields for item in value)


def _options_and_ranks(value: Any, fields: dict, question: str) -> tuple[list[str], tuple[int, ...]]:
    with_ranks = [item for item in sequence(value, f"a {question} response's value") if isinstance(item, dict)]
    options = [item.get("value") if isinstance(item, dict) else item for item in value]
    for option in options:
        if not isinstance(option, str) or option not in fields:
            raise BadRecord(f"the {question} ranking names {option!r}, which is not a field of the record")
    if len(set(options)) != len(options):
        raise BadRecord(f"the {question} ranking names an option twice")
    ranks = [item.get("rank") for item in with_ranks]
    if len(with_ranks) < len(value) or all(rank is None for rank in ranks):
        return options, tuple(range(1, len(value) + 1))  # the SDK's form: best first, no ties
    for option, rank in zip(options, ranks):
        if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
            raise BadRecord(f"the option {option!r} has rank {describe(rank)}; ranks are whole numbers from 1")
    return options, tuple(ranks)
