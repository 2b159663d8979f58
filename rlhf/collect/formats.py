"""Reading the files users bring (prompts, rankings, preference pairs, pretraining corpora)
and writing exports.

This module knows files, not the database. Every reader returns a DataFrame with a `line`
column, so that checks made later (a ranking against its comparison's K, say) can still
point at the source line, and every problem is a FormatError naming the file and, when one
record is at fault, its line. Readers are all-or-nothing: the first bad line stops the read,
unless the caller collects bad rows instead (`skipped`, for imports of published data).
A gzipped file is decompressed as a stream and refused past `READ_LIMITS`.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import json
import math
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rlhf.preference.messages import Message
from rlhf.settings import setting

PathLike = str | os.PathLike[str]
Record = dict[str, Any]
T = TypeVar("T")

ROLES = ("user", "assistant", "system")

_FORMAT_OF_SUFFIX = {".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
_PROMPT_SUFFIXES = (".csv", ".jsonl", ".json", ".parquet")
_RANKING_SUFFIXES = (".jsonl", ".json")
_PAIR_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
_TABLE_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz")
_CORPUS_SUFFIXES = (".txt", ".md", ".jsonl", ".json", ".parquet")
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_CHUNK = 1 << 20

_HH_TURN = re.compile(r"(?:\A\s*|\n\n)(Human|Assistant):")
_HH_HUMAN_TURN = re.compile(r"\n\nHuman:")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}
_RANKING_FIELDS: dict[str, type] = {"comparison_id": int, "ranking": str, "user": str}


class FormatError(ValueError):
    """A file that cannot be used, in one plain sentence: '<file>, line <n>: <reason>.'

    `line` is None when the problem is the whole file (empty, unknown type, unreadable).
    `unit` names what `line` counts where a file has no lines to speak of: the records of
    one JSON array or of a Parquet table ('record 3').
    """

    def __init__(self, path: PathLike, line: int | None, reason: str, unit: str = "line") -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        self.unit = unit
        where = self.path if line is None else f"{self.path}, {unit} {line}"
        super().__init__(f"{where}: {reason}.")

    def __reduce__(self) -> tuple[type[FormatError], tuple[str, int | None, str, str]]:
        # Exceptions are pickled through their args, which here is only the message; this
        # error can cross a process boundary (a worker, a datasets map with num_proc).
        return type(self), (self.path, self.line, self.reason, self.unit)


class BadRecord(Exception):
    """One record's problem; the caller adds the file and line to make a FormatError."""


@dataclass(frozen=True)
class ReadLimits:
    """What one file read may make the process hold, whatever the file claims."""

    max_decompressed_bytes: int = setting(512 * 2**20, "the most bytes a gzipped file may decompress to; past it the"
                                                       " file is refused (a gzip bomb of a few kilobytes can otherwise"
                                                       " fill the memory)")


READ_LIMITS = ReadLimits()

Skipped = list[FormatError]


# --- public readers -------------------------------------------------------------------


def read_prompt_file(path: PathLike) -> pd.DataFrame:
    """Prompts from CSV, JSONL or Parquet (each optionally gzipped).

    Columns: `prompt` (the text; for a conversation, its last user turn), `messages` (the
    conversation as role/content dicts, None for a plain prompt) and `line`. Exact
    duplicates are dropped, keeping the first.
    """
    rows = _parse_rows(Path(path), _PROMPT_SUFFIXES, _prompt_from_record)
    seen: set[tuple[str, str]] = set()
    unique_rows = []
    for line, (prompt, messages) in rows:
        key = (prompt, json.dumps(messages))
        if key not in seen:
            seen.add(key)
            unique_rows.append((line, (prompt, messages)))
    return _frame(unique_rows, ["prompt", "messages"])


def read_ranking_file(path: PathLike) -> pd.DataFrame:
    """Rankings from JSONL (optionally gzipped): comparison_id, ranking, user, line.

    Only the types are checked here; the ranking grammar depends on the comparison's K
    and is checked where that is known, using `line` to point back at the file.
    """
    rows = _parse_rows(Path(path), _RANKING_SUFFIXES, _ranking_from_record)
    return _frame(rows, list(_RANKING_FIELDS))


def read_preference_pairs(path: PathLike, skipped: Skipped | None = None) -> pd.DataFrame:
    """External preference data: TRL standard, conversational or implicit-prompt, or HH-RLHF.

    Columns: `prompt` (last user turn), `messages` (the prompt conversation, ending with a
    user turn), `chosen`, `rejected` (the two answers as text, either may be empty: saying
    nothing can be the preferred answer) and `line`. HH-RLHF transcripts are split as TRL's
    own preparation does (see `_split_hh`).

    With a `skipped` list, a row that cannot be used is appended to it (as the FormatError
    that would have stopped the read, with its line and reason) and the other rows are
    read; a problem with the whole file still stops the read.
    """
    rows = _parse_rows(Path(path), _PAIR_SUFFIXES, _pair_from_record, skipped)
    return _frame(rows, ["prompt", "messages", "chosen", "rejected"])


# --- tables: exports and snapshots ----------------------------------------------------


def write_table(df: pd.DataFrame, path: PathLike) -> Path:
    """Write `df` as Parquet (.parquet) or JSON Lines (.jsonl, .jsonl.gz); returns the path.

    JSONL keeps nested lists and dicts as JSON and non-ASCII text as UTF-8, so that pandas
    or `datasets.load_dataset("json")` read back the same structure.
    """
    path = Path(path)
    suffix = _table_suffix(path)
    if suffix == ".parquet":
        table = pa.Table.from_pandas(df, preserve_index=False)
        _replace_atomically(path, lambda partial: pq.write_table(table, partial))
    else:
        records = df.to_dict(orient="records")
        opener = gzip.open if suffix == ".jsonl.gz" else open
        _replace_atomically(path, lambda partial: _write_jsonl(records, partial, opener))
    return path


def read_table(path: PathLike) -> pd.DataFrame:
    """The inverse of write_table: nested values come back as plain lists and dicts."""
    path = Path(path)
    suffix = _table_suffix(path)
    data = _read_bytes(path)
    if suffix == ".parquet":
        return _pandas_keeping_nesting(_parquet_table(path, data))
    return pd.DataFrame([record for _, record in _jsonl_records(path, data)])


def _table_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in _TABLE_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    raise FormatError(
        path, None, f"unsupported file type; supported: {', '.join(_TABLE_SUFFIXES)}"
    )


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    # Readers (a training worker, an external pipeline) must never see a half-written file.
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    try:
        write(partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _write_jsonl(records: list[Record], path: Path, opener: Callable[..., Any]) -> None:
    with opener(path, "wt", encoding="utf-8", newline="\n") as out:
        for record in records:
            out.write(json.dumps(_jsonable(record), ensure_ascii=False, allow_nan=False))
            out.write("\n")


def _jsonable(value: Any) -> Any:
    """Plain JSON values for what pandas hands out: numpy arrays, numpy scalars, NaN, times."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return value


def _pandas_keeping_nesting(table: pa.Table) -> pd.DataFrame:
    # Arrow's own conversion turns nested lists into numpy arrays; plain lists and dicts
    # compare and serialise like the JSON they came from.
    return pd.DataFrame(
        {
            name: pd.Series(column.to_pylist(), dtype=object)
            if pa.types.is_nested(column.type)
            else column.to_pandas()
            for name, column in zip(table.column_names, table.columns)
        }
    )


def read_corpus_file(path: PathLike, max_bytes: int) -> pd.DataFrame:
    """A pretraining corpus: plain text (.txt, .md: the whole file is one document), JSON
    Lines with a `text` field, or Parquet with a `text` column (a document per line or
    row); each optionally gzipped. All or nothing: a record without text, or with blank
    text, stops the read at its line; so does a corpus whose text runs past `max_bytes`
    (UTF-8) or that holds no text at all.

    Columns: `document` (0, 1, ... in file order), `text`, `line` (where it starts)."""
    path = Path(path)
    name = path.name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix not in _CORPUS_SUFFIXES:
        raise FormatError(path, None, f"unsupported corpus type '{suffix or name}'; supported: "
                          f"{', '.join(_CORPUS_SUFFIXES)} (each may be .gz)")
    try:
        size = path.stat().st_size
    except OSError as error:
        raise FormatError(path, None, f"cannot be read ({error.strerror or error})") from None
    if size > max_bytes:
        raise FormatError(path, None, f"is {_size(size)}, more than the {_size(max_bytes)} a corpus may hold; split it"
                          " or train on part of it")
    data = _read_bytes(path)
    if suffix in (".txt", ".md"):
        text = _text(path, data.removeprefix(codecs.BOM_UTF8))
        rows = [(1, text)] if text.strip() else []
    else:
        if suffix == ".parquet":
            table = _parquet_table(path, data)
            if "text" not in table.column_names:
                raise FormatError(path, None, f"has no text column (its columns: {', '.join(table.column_names)})")
            records = enumerate(({"text": text} for text in table.column("text").to_pylist()), start=1)
        else:
            records = _jsonl_records(path, data)
        rows = []
        for line, record in records:
            if "text" not in record:
                found = ", ".join(str(key) for key in record) or "none"
                raise FormatError(path, line, f"has no text field (its fields: {found})",
                                  "record" if suffix == ".parquet" else "line")
            try:
                rows.append((line, checked_text(record["text"], "text")))
            except BadRecord as problem:
                raise FormatError(path, line, str(problem), "record" if suffix == ".parquet" else "line") from None
    if not rows:
        raise FormatError(path, None, "the corpus holds no text")
    total = sum(len(text.encode("utf-8")) for _, text in rows)
    if total > max_bytes:
        raise FormatError(path, None, f"holds {_size(total)} of text, more than the {_size(max_bytes)} a corpus may"
                          " hold; split it or train on part of it")
    frame = pd.DataFrame({"document": range(len(rows)), "text": [text for _, text in rows]})
    frame["line"] = pd.Series([line for line, _ in rows], dtype="int64")
    return frame


# --- whole files for the tool importers (rlhf/collect/imports/) -----------------------


def json_lines(path: PathLike) -> Iterator[tuple[int, Record]]:
    """Each object of a JSON Lines file (optionally gzipped) with its line; the first
    line that is not a JSON object stops the read with its line and reason."""
    path = Path(path)
    return _jsonl_records(path, _read_limited(path))


def json_document(path: PathLike) -> Any:
    """The one JSON value a file holds (optionally gzipped), within `READ_LIMITS`."""
    path = Path(path)
    text = _text(path, _read_limited(path).removeprefix(codecs.BOM_UTF8))
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise FormatError(path, error.lineno, f"not valid JSON ({error.msg} at column {error.colno})") from None


def parquet_rows(path: PathLike) -> Iterator[tuple[int, Record]]:
    """Each row of a Parquet file as a dict, numbered from 1, within `READ_LIMITS`."""
    path = Path(path)
    return _parquet_records(path, _read_limited(path))


def _read_limited(path: Path) -> bytes:
    """The file's bytes, refusing a plain file past the same cap a gzipped one has, so a
    tool's export is never held whole in memory beyond what one import may hold."""
    limit = READ_LIMITS.max_decompressed_bytes
    try:
        size = path.stat().st_size
    except OSError as error:
        raise FormatError(path, None, f"cannot be read ({error.strerror or error})") from None
    if size > limit:
        raise FormatError(path, None, f"is {_size(size)}, more than the {_size(limit)} one import may hold; split it")
    return _read_bytes(path)


# --- from a file to (line, record) ----------------------------------------------------


def _parse_rows(
    path: Path,
    suffixes: tuple[str, ...],
    parse: Callable[[Record], T],
    skipped: Skipped | None = None,
) -> list[tuple[int, T]]:
    rows = []
    for line, record in _records(path, suffixes, skipped):
        try:
            rows.append((line, parse(record)))
        except BadRecord as problem:
            _refuse(FormatError(path, line, str(problem)), skipped)
    if not rows and skipped:
        raise FormatError(
            path, None, f"none of its rows can be used ({len(skipped)} skipped; the first, "
            f"line {skipped[0].line}: {skipped[0].reason})"
        )
    if not rows:
        raise FormatError(path, None, "the file has no rows")
    return rows


def _refuse(error: FormatError, skipped: Skipped | None) -> None:
    """Stop the read at a bad row, or, when the caller collects them, note it and go on."""
    if skipped is None:
        raise error
    skipped.append(error)


def _frame(rows: list[tuple[int, tuple[Any, ...]]], columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame([values for _, values in rows], columns=columns)
    frame["line"] = pd.Series([line for line, _ in rows], dtype="int64")
    return frame


def _records(
    path: Path, suffixes: tuple[str, ...], skipped: Skipped | None = None
) -> Iterator[tuple[int, Record]]:
    name = path.name.lower().removesuffix(".gz")
    suffix = Path(name).suffix
    if suffix not in suffixes:
        supported = ", ".join(suffixes)
        raise FormatError(
            path,
            None,
            f"unsupported file type '{suffix or name}'; supported: {supported} (each may be .gz)",
        )
    read = {"csv": _csv_records, "jsonl": _jsonl_records, "parquet": _parquet_records}
    return read[_FORMAT_OF_SUFFIX[suffix]](path, _read_bytes(path), skipped)


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as source:
            # Decided by content, not name: uploads and downloads often gain or lose the .gz.
            if source.read(len(_GZIP_MAGIC)) == _GZIP_MAGIC:
                source.seek(0)
                return _gunzip(path, source, READ_LIMITS.max_decompressed_bytes)
            source.seek(0)
            return source.read()
    except OSError as error:
        raise FormatError(path, None, f"cannot be read ({error.strerror or error})") from None


def _gunzip(path: Path, source: io.BufferedReader, limit: int) -> bytes:
    """The decompressed bytes, read a chunk at a time so that a file which would decompress
    past `limit` is refused once it gets there, without ever holding more."""
    chunks, size = [], 0
    try:
        with gzip.GzipFile(fileobj=source) as stream:
            while chunk := stream.read(min(_GZIP_CHUNK, limit + 1 - size)):
                size += len(chunk)
                if size > limit:
                    raise FormatError(
                        path, None, f"decompresses to more than {_size(limit)}, the most one import "
                        "may hold; decompress it and import the plain file, or split it"
                    )
                chunks.append(chunk)
    except (OSError, EOFError, zlib.error) as error:
        raise FormatError(path, None, f"not a readable gzip file ({error})") from None
    return b"".join(chunks)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= scale:
            return f"{count / scale:g} {unit}"
    return f"{count} bytes"


def _text(path: Path, data: bytes, first_line: int = 1) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = first_line + data.count(b"\n", 0, error.start)
        raise FormatError(path, line, "not UTF-8 text") from None


def _jsonl_records(
    path: Path, data: bytes, skipped: Skipped | None = None
) -> Iterator[tuple[int, Record]]:
    # Split the bytes, not the text: str.splitlines would also break on U+2028 and other
    # separators that JSON strings may contain raw.
    raw_lines = data.removeprefix(codecs.BOM_UTF8).split(b"\n")
    for line, raw in enumerate(raw_lines, start=1):
        try:
            value = _json_object(path, raw, line)
        except FormatError as error:
            _refuse(error, skipped)
            continue
        if value is not None:
            yield line, value


def _json_object(path: Path, raw: bytes, line: int) -> Record | None:
    """One JSON Lines line as an object; None for a blank line."""
    text = _text(path, raw, line)
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        reason = f"not valid JSON ({error.msg} at column {error.colno})"
        raise FormatError(path, line, reason) from None
    if not isinstance(value, dict):
        raise FormatError(path, line, f"expected a JSON object, got {describe(value)}")
    return value


def _csv_records(
    path: Path, data: bytes, skipped: Skipped | None = None
) -> Iterator[tuple[int, Record]]:
    text = _text(path, data.removeprefix(codecs.BOM_UTF8))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    row_start = 1  # a quoted field may span lines; a row is numbered by its first line
    try:
        for row in reader:
            line, row_start = row_start, reader.line_num + 1
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [name.strip() for name in row]
                continue
            if len(row) != len(header):
                reason = f"row has {len(row)} fields but the header has {len(header)}"
                _refuse(FormatError(path, line, reason), skipped)
                continue
            yield line, dict(zip(header, row))
    except csv.Error as error:
        raise FormatError(path, row_start, f"not readable as CSV ({error})") from None


def _parquet_records(
    path: Path, data: bytes, skipped: Skipped | None = None
) -> Iterator[tuple[int, Record]]:
    # `skipped` goes unused: Parquet's schema leaves no row unreadable on its own
    table = _parquet_table(path, data)
    records = (record for batch in table.to_batches() for record in batch.to_pylist())
    return enumerate(records, start=1)


def _parquet_table(path: Path, data: bytes) -> pa.Table:
    try:
        return pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as error:
        raise FormatError(path, None, f"not a readable Parquet file ({error})") from None


# --- from a record to values ----------------------------------------------------------


def _prompt_from_record(record: Record) -> tuple[str, list[Message] | None]:
    if _present(record, "messages"):
        messages = _checked_prompt(record["messages"], "messages")
    elif _present(record, "prompt"):
        if not isinstance(record["prompt"], list):
            return checked_text(record["prompt"], "prompt"), None
        messages = _checked_prompt(record["prompt"], "prompt")  # TRL conversational
    elif _present(record, "chosen") and _present(record, "rejected"):
        messages = _split_pair(record)[0]
    else:
        raise BadRecord(_unrecognised("prompt, messages, or chosen and rejected", record))
    return messages[-1]["content"], messages


def _ranking_from_record(record: Record) -> tuple[int, str, str]:
    missing = [field for field in _RANKING_FIELDS if field not in record]
    if missing:
        raise BadRecord(f"missing {', '.join(missing)}")
    for field, kind in _RANKING_FIELDS.items():
        value = record[field]
        if not isinstance(value, kind) or isinstance(value, bool):
            wanted = "a whole number" if kind is int else "text"
            raise BadRecord(f"{field} must be {wanted}, got {describe(value)}")
    return record["comparison_id"], record["ranking"], record["user"]


def _pair_from_record(record: Record) -> tuple[str, list[Message], str, str]:
    if not (_present(record, "chosen") and _present(record, "rejected")):
        raise BadRecord(_unrecognised("chosen and rejected (with or without prompt)", record))
    messages, chosen, rejected = _split_pair(record)
    if chosen.strip() == rejected.strip():
        raise BadRecord("chosen and rejected are identical")
    return messages[-1]["content"], messages, chosen, rejected


def _split_pair(record: Record) -> tuple[list[Message], str, str]:
    """The prompt conversation and the two answers, whatever the layout.

    The answers are not checked here: a prompt file may reuse a pair whose answers would
    not make a valid comparison.
    """
    chosen, rejected = record["chosen"], record["rejected"]
    if _present(record, "prompt"):
        prompt = record["prompt"]
        if isinstance(prompt, list):
            return (
                _checked_prompt(prompt, "prompt"),
                _single_answer(chosen, "chosen"),
                _single_answer(rejected, "rejected"),
            )
        messages = [{"role": "user", "content": checked_text(prompt, "prompt")}]
        return messages, _text_answer(chosen, "chosen"), _text_answer(rejected, "rejected")
    if isinstance(chosen, str) and isinstance(rejected, str):
        return _split_hh(chosen, rejected)
    if isinstance(chosen, list) and isinstance(rejected, list):
        return _split_shared_prefix(
            _checked_turns(chosen, "chosen"), _checked_turns(rejected, "rejected")
        )
    if type(chosen) is not type(rejected):
        raise BadRecord(
            f"mismatched layouts: chosen is {describe(chosen)} "
            f"but rejected is {describe(rejected)}"
        )
    raise BadRecord(
        "without a prompt, chosen and rejected must be HH-RLHF transcripts or lists of "
        f"messages, got {describe(chosen)}"
    )


def _text_answer(value: Any, field: str) -> str:
    if isinstance(value, list):
        raise BadRecord(f"mismatched layouts: prompt is text but {field} is a list of messages")
    if not isinstance(value, str):
        raise BadRecord(f"{field} must be text, got {describe(value)}")
    return value


def _single_answer(value: Any, field: str) -> str:
    if isinstance(value, str):
        raise BadRecord(f"mismatched layouts: prompt is a list of messages but {field} is text")
    turns = _checked_turns(value, field)
    roles = [turn["role"] for turn in turns]
    if roles != ["assistant"]:
        raise BadRecord(
            f"{field} must be one assistant message, got roles: {', '.join(roles) or 'none'}"
        )
    return turns[0]["content"]


def _split_shared_prefix(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], str, str]:
    """Implicit prompt: the turns both conversations share, then one answer each."""
    # Each side keeps at least its last turn as the answer, so that identical
    # conversations still yield their prompt (the caller decides whether that is an error).
    limit = min(len(chosen), len(rejected)) - 1
    shared = 0
    while shared < limit and chosen[shared] == rejected[shared]:
        shared += 1
    if shared == 0:
        raise BadRecord("chosen and rejected share no prompt: they differ from turn 1")
    prompt = _checked_prompt(chosen[:shared], "the shared prompt")
    for field, turns in (("chosen", chosen), ("rejected", rejected)):
        roles = [turn["role"] for turn in turns[shared:]]
        if roles != ["assistant"]:
            raise BadRecord(
                f"after the {shared} shared prompt turns, {field} must hold one assistant "
                f"answer, but it holds: {', '.join(roles)}"
            )
    return prompt, chosen[-1]["content"], rejected[-1]["content"]


def _split_hh(chosen: str, rejected: str) -> tuple[list[Message], str, str]:
    """HH-RLHF's two transcripts split as TRL's own preparation does (its
    examples/datasets/hh-rlhf-helpful-base.py): the prompt is their common text up to the
    last "Assistant:" in it, and each answer is the rest of its transcript.

    Published rows are not always separated the standard way: an answer may hold an inline
    "Human:" or a second "Assistant:" turn the model wrote itself, which splitting into
    turns first would mistake for more dialogue. Such an answer stays whole, as the
    annotator saw it. Broken is a row whose transcripts go on to different Human turns:
    then the two answers do not answer one prompt.
    """
    _hh_messages(chosen, "chosen")   # both must be transcripts, without text before them
    _hh_messages(rejected, "rejected")
    common = os.path.commonprefix([chosen, rejected])
    answer_turns = [m for m in _HH_TURN.finditer(common) if m.group(1) == "Assistant"]
    if not answer_turns:
        raise BadRecord(
            "chosen and rejected share no prompt: they differ before their first Assistant: turn"
        )
    last = answer_turns[-1]
    prompt = _checked_prompt(_hh_messages(common[: last.start()], "the shared prompt"),
                             "the shared prompt")
    answers = []
    for field, transcript in (("chosen", chosen), ("rejected", rejected)):
        answer = transcript[last.end():]
        if _HH_HUMAN_TURN.search(answer):
            raise BadRecord(
                f"chosen and rejected differ before their last answer: after the shared prompt, "
                f"{field} goes on to another Human: turn"
            )
        answers.append(answer.strip())
    return prompt, answers[0], answers[1]


def _hh_messages(transcript: str, field: str) -> list[Message]:
    """An Anthropic HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as messages."""
    before, *parts = _HH_TURN.split(transcript)
    if not parts:
        raise BadRecord(f"{field} is not an HH-RLHF transcript (no Human:/Assistant: turns)")
    if before.strip():
        raise BadRecord(f"{field} has text before its first Human:/Assistant: turn")
    return [
        {"role": _HH_ROLES[speaker], "content": text.strip()}
        for speaker, text in zip(parts[::2], parts[1::2])
    ]


def _checked_prompt(value: Any, field: str) -> list[Message]:
    turns = _checked_turns(value, field)
    if not turns:
        raise BadRecord(f"{field} is empty")
    last = turns[-1]
    if last["role"] != "user":
        raise BadRecord(
            f"{field} must end with a user turn, but turn {len(turns)} is {last['role']}"
        )
    if not last["content"].strip():
        raise BadRecord(f"{field} turn {len(turns)}, the prompt, is empty")
    return turns


def _checked_turns(value: Any, field: str) -> list[Message]:
    if not isinstance(value, list):
        raise BadRecord(
            f"{field} must be a list of {{role, content}} messages, got {describe(value)}"
        )
    turns = []
    for number, turn in enumerate(value, start=1):
        where = f"{field} turn {number}"
        if not isinstance(turn, dict):
            raise BadRecord(
                f"{where} must be an object with role and content, got {describe(turn)}"
            )
        role, content = turn.get("role"), turn.get("content")
        if role not in ROLES:
            raise BadRecord(f"{where} has role {role!r}; expected one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise BadRecord(f"{where} content must be text, got {describe(content)}")
        turns.append({"role": role, "content": content})
    return turns


def checked_text(value: Any, field: str) -> str:
    """A text that must be there and not be blank."""
    if not isinstance(value, str):
        raise BadRecord(f"{field} must be text, got {describe(value)}")
    if not value.strip():
        raise BadRecord(f"{field} is empty")
    return value


def _present(record: Record, field: str) -> bool:
    return record.get(field) is not None


def _unrecognised(expected: str, record: Record) -> str:
    found = [str(field) for field, value in record.items() if value is not None]
    return f"no recognised fields: looked for {expected}; found {', '.join(found) or 'none'}"


def describe(value: Any) -> str:
    """A value named by its JSON type (or its value, for scalars), for refusals."""
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
