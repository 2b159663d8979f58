"""Tests for rlhf.collect.formats: every layout and every rejection, built as files in tmp_path."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rlhf.collect import formats
from rlhf.collect.formats import (
    FormatError,
    ReadLimits,
    read_preference_pairs,
    read_prompt_file,
    read_ranking_file,
    read_table,
    write_table,
)
from helpers import DATA




def jsonl(path: Path, *records: Any) -> Path:
    """One line per item: dicts and lists are dumped as JSON, strings are written as is."""
    lines = [item if isinstance(item, str) else json.dumps(item) for item in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def gzipped(path: Path) -> Path:
    target = path.with_name(path.name + ".gz")
    target.write_bytes(gzip.compress(path.read_bytes()))
    path.unlink()
    return target


def parquet(path: Path, records: list[dict[str, Any]]) -> Path:
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def format_error(read, path: Path) -> FormatError:
    with pytest.raises(FormatError) as caught:
        read(path)
    assert path.name in str(caught.value)
    return caught.value


HH_CHOSEN = (
    "\n\nHuman: What is a good name for a cat?"
    "\n\nAssistant: Maybe Miso?"
    "\n\nHuman: Something longer, please."
    "\n\nAssistant: How about Sir Pounce-a-lot?"
)
HH_REJECTED = (
    "\n\nHuman: What is a good name for a cat?"
    "\n\nAssistant: Maybe Miso?"
    "\n\nHuman: Something longer, please."
    "\n\nAssistant: Cat."
)
HH_PROMPT = [
    user("What is a good name for a cat?"),
    assistant("Maybe Miso?"),
    user("Something longer, please."),
]


# --- FormatError ----------------------------------------------------------------------


def test_format_error_is_one_sentence_with_file_and_line():
    error = FormatError("data/prompts.jsonl", 3, "not valid JSON")
    assert str(error) == "data/prompts.jsonl, line 3: not valid JSON."
    assert (error.path, error.line, error.reason) == ("data/prompts.jsonl", 3, "not valid JSON")
    assert isinstance(error, ValueError)


def test_format_error_without_line_names_only_the_file():
    assert str(FormatError("p.csv", None, "the file has no rows")) == "p.csv: the file has no rows."


def test_format_error_survives_pickling():
    error = pickle.loads(pickle.dumps(FormatError("p.jsonl", 7, "prompt is empty")))
    assert (error.path, error.line, error.reason) == ("p.jsonl", 7, "prompt is empty")
    assert str(error) == "p.jsonl, line 7: prompt is empty."


# --- read_prompt_file: layouts --------------------------------------------------------


def test_jsonl_plain_prompts_keep_source_line_numbers(tmp_path):
    path = jsonl(tmp_path / "prompts.jsonl", {"prompt": "Say hi."}, "", {"prompt": "Count to 3."})
    frame = read_prompt_file(path)
    assert list(frame.columns) == ["prompt", "messages", "line"]
    assert frame["prompt"].tolist() == ["Say hi.", "Count to 3."]
    assert frame["messages"].tolist() == [None, None]
    assert frame["line"].tolist() == [1, 3]


def test_json_extension_is_read_as_json_lines(tmp_path):
    path = jsonl(tmp_path / "prompts.json", {"prompt": "One"}, {"prompt": "Two"})
    assert read_prompt_file(path)["prompt"].tolist() == ["One", "Two"]


def test_messages_give_the_last_user_turn_as_prompt(tmp_path):
    conversation = [
        {"role": "system", "content": "Be brief."},
        user("Hello"),
        {"role": "assistant", "content": "Hi!", "name": "bot"},
        user("Tell me a joke."),
    ]
    frame = read_prompt_file(jsonl(tmp_path / "chat.jsonl", {"messages": conversation}))
    assert frame.loc[0, "prompt"] == "Tell me a joke."
    # Extra keys such as "name" are dropped: messages are exactly role and content.
    assert frame.loc[0, "messages"] == [
        {"role": "system", "content": "Be brief."},
        user("Hello"),
        assistant("Hi!"),
        user("Tell me a joke."),
    ]


def test_trl_conversational_prompt_field_is_read_as_messages(tmp_path):
    path = jsonl(tmp_path / "trl.jsonl", {"prompt": [user("What is 2+2?")], "chosen": "x"})
    frame = read_prompt_file(path)
    assert frame.loc[0, "prompt"] == "What is 2+2?"
    assert frame.loc[0, "messages"] == [user("What is 2+2?")]


def test_csv_with_quoted_multiline_fields_numbers_rows_by_their_first_line(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text(
        'id,prompt\n1,"Write a poem\nabout the sea, with ""quotes"""\n2,Short one\n\n3,Last\n',
        encoding="utf-8",
    )
    frame = read_prompt_file(path)
    assert frame["prompt"].tolist() == [
        'Write a poem\nabout the sea, with "quotes"',
        "Short one",
        "Last",
    ]
    assert frame["line"].tolist() == [2, 4, 6]


def test_csv_with_byte_order_mark_and_crlf(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes('\ufeffprompt\r\n"Bonjour,\r\nle monde"\r\nCafé ☕\r\n'.encode("utf-8"))
    frame = read_prompt_file(path)
    assert frame["prompt"].tolist() == ["Bonjour,\r\nle monde", "Café ☕"]
    assert frame["line"].tolist() == [2, 4]


@pytest.mark.parametrize("name", ["prompts.csv", "prompts.jsonl", "prompts.parquet"])
def test_gzip_variants_read_like_the_plain_files(tmp_path, name):
    plain = tmp_path / name
    if name.endswith(".csv"):
        plain.write_text("prompt\nAlpha\nBeta\n", encoding="utf-8")
    elif name.endswith(".jsonl"):
        jsonl(plain, {"prompt": "Alpha"}, {"prompt": "Beta"})
    else:
        parquet(plain, [{"prompt": "Alpha"}, {"prompt": "Beta"}])
    expected = read_prompt_file(plain)
    frame = read_prompt_file(gzipped(plain))
    pd.testing.assert_frame_equal(frame, expected)
    assert frame["prompt"].tolist() == ["Alpha", "Beta"]


def test_gzip_is_recognised_by_content_even_without_the_suffix(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_bytes(gzip.compress(b'{"prompt": "Packed"}\n'))
    assert read_prompt_file(path)["prompt"].tolist() == ["Packed"]


def test_parquet_prompts_number_rows_from_one_and_mix_plain_and_chat(tmp_path):
    path = parquet(
        tmp_path / "prompts.parquet",
        [
            {"prompt": "Plain one", "messages": None},
            {"prompt": None, "messages": [user("Hi"), assistant("Hello"), user("Bye?")]},
        ],
    )
    frame = read_prompt_file(path)
    assert frame["prompt"].tolist() == ["Plain one", "Bye?"]
    assert frame["messages"].tolist() == [None, [user("Hi"), assistant("Hello"), user("Bye?")]]
    assert frame["line"].tolist() == [1, 2]


def test_hh_rlhf_multi_turn_gives_the_dialogue_up_to_the_last_human_turn(tmp_path):
    path = jsonl(tmp_path / "hh.jsonl", {"chosen": HH_CHOSEN, "rejected": HH_REJECTED})
    frame = read_prompt_file(path)
    assert frame.loc[0, "prompt"] == "Something longer, please."
    assert frame.loc[0, "messages"] == HH_PROMPT


def test_hh_rlhf_prompt_survives_identical_chosen_and_rejected(tmp_path):
    # HH-RLHF has rows whose two answers are the same: useless as a pair, fine as a prompt.
    path = jsonl(tmp_path / "hh.jsonl", {"chosen": HH_CHOSEN, "rejected": HH_CHOSEN})
    assert read_prompt_file(path).loc[0, "messages"] == HH_PROMPT


def test_implicit_prompt_conversations_give_their_shared_prefix(tmp_path):
    record = {
        "chosen": [user("Capital of France?"), assistant("Paris.")],
        "rejected": [user("Capital of France?"), assistant("Lyon.")],
    }
    frame = read_prompt_file(jsonl(tmp_path / "implicit.jsonl", record))
    assert frame.loc[0, "messages"] == [user("Capital of France?")]


def test_exact_duplicates_are_kept_once_first_wins(tmp_path):
    path = jsonl(
        tmp_path / "dupes.jsonl",
        {"prompt": "Same"},
        {"prompt": "Other"},
        {"prompt": "Same"},
        {"messages": [user("Same")]},  # a conversation is not the same as a plain prompt
        {"messages": [user("Same")]},
    )
    frame = read_prompt_file(path)
    assert frame["prompt"].tolist() == ["Same", "Other", "Same"]
    assert frame["line"].tolist() == [1, 2, 4]


# --- read_prompt_file: rejections -----------------------------------------------------


def test_invalid_json_names_the_line(tmp_path):
    path = jsonl(tmp_path / "broken.jsonl", {"prompt": "a"}, {"prompt": "b"}, '{"prompt": "c"')
    error = format_error(read_prompt_file, path)
    assert error.line == 3
    assert "broken.jsonl, line 3: not valid JSON" in str(error)


def test_a_line_that_is_not_an_object_is_rejected(tmp_path):
    error = format_error(read_prompt_file, jsonl(tmp_path / "p.jsonl", {"prompt": "a"}, '["a"]'))
    assert "p.jsonl, line 2: expected a JSON object, got a list" in str(error)


def test_first_bad_line_wins_and_nothing_is_returned(tmp_path):
    path = jsonl(tmp_path / "p.jsonl", {"prompt": "ok"}, {"prompt": ""}, "not json at all")
    error = format_error(read_prompt_file, path)
    assert str(error) == f"{path}, line 2: prompt is empty."


def test_unrecognised_record_names_what_was_looked_for_and_found(tmp_path):
    path = jsonl(tmp_path / "p.jsonl", {"text": "hello", "id": 4, "note": None})
    error = format_error(read_prompt_file, path)
    assert error.line == 1
    assert "looked for prompt, messages, or chosen and rejected" in error.reason
    assert "found text, id" in error.reason


@pytest.mark.parametrize("prompt", ["", "   \n"])
def test_empty_prompt_is_rejected(tmp_path, prompt):
    error = format_error(read_prompt_file, jsonl(tmp_path / "p.jsonl", {"prompt": prompt}))
    assert "p.jsonl, line 1: prompt is empty." in str(error)


def test_non_text_prompt_is_rejected(tmp_path):
    error = format_error(read_prompt_file, jsonl(tmp_path / "p.jsonl", {"prompt": 42}))
    assert error.reason == "prompt must be text, got 42"


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([user("hi"), {"role": "bot", "content": "x"}], "messages turn 2 has role 'bot'"),
        ([user("hi"), {"content": "x"}, user("q")], "messages turn 2 has role None"),
        ([user("hi"), {"role": "user", "content": 5}], "messages turn 2 content must be text"),
        ([user("hi"), "hello"], "messages turn 2 must be an object"),
        ([user("hi"), assistant("hello")], "must end with a user turn, but turn 2 is assistant"),
        ([], "messages is empty"),
        ([user(" ")], "messages turn 1, the prompt, is empty"),
        ("hello", "messages must be a list of {role, content} messages, got text"),
    ],
)
def test_malformed_messages_say_which_turn(tmp_path, messages, expected):
    path = jsonl(tmp_path / "chat.jsonl", {"messages": [user("fine")]}, {"messages": messages})
    error = format_error(read_prompt_file, path)
    assert error.line == 2
    assert expected in error.reason


def test_hh_transcript_without_markers_is_rejected(tmp_path):
    path = jsonl(tmp_path / "hh.jsonl", {"chosen": "just an answer", "rejected": "another"})
    error = format_error(read_prompt_file, path)
    assert "hh.jsonl, line 1: chosen is not an HH-RLHF transcript" in str(error)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jsonl", ""),
        ("blank.jsonl", "\n  \n"),
        ("empty.csv", ""),
        ("header_only.csv", "prompt\n"),
    ],
)
def test_a_file_without_rows_is_rejected_as_a_whole(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    error = format_error(read_prompt_file, path)
    assert error.line is None
    assert str(error) == f"{path}: the file has no rows."


def test_empty_parquet_is_rejected(tmp_path):
    path = tmp_path / "empty.parquet"
    pq.write_table(pa.table({"prompt": pa.array([], pa.string())}), path)
    assert format_error(read_prompt_file, path).reason == "the file has no rows"


@pytest.mark.parametrize("name", ["prompts.txt", "prompts.xlsx.gz", "prompts"])
def test_unknown_extension_names_the_supported_ones(tmp_path, name):
    path = tmp_path / name
    path.write_text("prompt\nhello\n", encoding="utf-8")
    error = format_error(read_prompt_file, path)
    assert error.line is None
    assert "supported: .csv, .jsonl, .json, .parquet" in error.reason


def test_unreadable_parquet_is_rejected(tmp_path):
    path = tmp_path / "fake.parquet"
    path.write_bytes(b"this is not parquet at all")
    error = format_error(read_prompt_file, path)
    assert error.line is None
    assert error.reason.startswith("not a readable Parquet file")


def test_csv_with_an_unterminated_quote_is_rejected_at_its_row(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text('prompt\nfine\n"never closed\nstill going\n', encoding="utf-8")
    error = format_error(read_prompt_file, path)
    assert error.line == 3
    assert error.reason.startswith("not readable as CSV")


def test_csv_row_with_extra_fields_is_rejected(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("id,prompt\n1,ok\n2,one,two\n", encoding="utf-8")
    error = format_error(read_prompt_file, path)
    assert "bad.csv, line 3: row has 3 fields but the header has 2." in str(error)


def test_csv_without_a_prompt_column_is_rejected_at_the_first_row(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("question\nWhy?\n", encoding="utf-8")
    error = format_error(read_prompt_file, path)
    assert error.line == 2
    assert "found question" in error.reason


def test_text_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    error = format_error(read_prompt_file, path)
    assert "latin1.jsonl, line 2: not UTF-8 text." in str(error)


def test_corrupt_gzip_is_rejected(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "hello"}\n' * 50)[:30])
    error = format_error(read_prompt_file, path)
    assert error.line is None
    assert error.reason.startswith("not a readable gzip file")


def test_missing_file_is_a_format_error(tmp_path):
    error = format_error(read_prompt_file, tmp_path / "nowhere.jsonl")
    assert error.reason.startswith("cannot be read")


# --- read_ranking_file ----------------------------------------------------------------


def ranking(**changes: Any) -> dict[str, Any]:
    return {"comparison_id": 1, "ranking": "A > B", "user": "x"} | changes


def test_rankings_are_read_with_their_lines(tmp_path):
    path = jsonl(
        tmp_path / "rankings.jsonl",
        {"comparison_id": 3, "ranking": "C > B = D > A", "user": "ana", "note": "ignored"},
        "",
        {"comparison_id": 4, "ranking": "garbage is checked elsewhere", "user": "bo"},
    )
    frame = read_ranking_file(path)
    assert list(frame.columns) == ["comparison_id", "ranking", "user", "line"]
    assert frame["comparison_id"].tolist() == [3, 4]
    assert frame["ranking"].tolist() == ["C > B = D > A", "garbage is checked elsewhere"]
    assert frame["user"].tolist() == ["ana", "bo"]
    assert frame["line"].tolist() == [1, 3]
    assert frame["comparison_id"].dtype == "int64"


def test_gzipped_rankings(tmp_path):
    record = {"comparison_id": 1, "ranking": "A > B", "user": "x"}
    path = gzipped(jsonl(tmp_path / "r.jsonl", record))
    assert read_ranking_file(path)["ranking"].tolist() == ["A > B"]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"ranking": "A > B"}, "missing comparison_id, user"),
        (ranking(comparison_id="7"), "comparison_id must be a whole number, got text"),
        (ranking(comparison_id=True), "comparison_id must be a whole number, got true"),
        (ranking(comparison_id=7.5), "comparison_id must be a whole number, got 7.5"),
        (ranking(ranking=["A", "B"]), "ranking must be text, got a list"),
        (ranking(user=None), "user must be text, got null"),
    ],
)
def test_ranking_with_missing_field_or_wrong_type_names_the_line(tmp_path, record, expected):
    path = jsonl(tmp_path / "rankings.jsonl", ranking(), ranking(), record)
    error = format_error(read_ranking_file, path)
    assert str(error) == f"{path}, line 3: {expected}."


def test_rankings_must_be_json_lines(tmp_path):
    path = tmp_path / "rankings.csv"
    path.write_text("comparison_id,ranking,user\n1,A > B,x\n", encoding="utf-8")
    error = format_error(read_ranking_file, path)
    assert "supported: .jsonl, .json (each may be .gz)" in error.reason


# --- read_preference_pairs: layouts ---------------------------------------------------


def test_trl_standard_pairs(tmp_path):
    path = jsonl(
        tmp_path / "pairs.jsonl",
        {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
    )
    frame = read_preference_pairs(path)
    assert list(frame.columns) == ["prompt", "messages", "chosen", "rejected", "line"]
    row = frame.iloc[0]
    assert (row["prompt"], row["chosen"], row["rejected"], row["line"]) == (
        "The sky is",
        " blue.",
        " green.",
        1,
    )
    assert row["messages"] == [user("The sky is")]


def test_trl_conversational_pairs(tmp_path):
    record = {
        "prompt": [{"role": "system", "content": "Be kind."}, user("What color is the sky?")],
        "chosen": [assistant("It is blue.")],
        "rejected": [assistant("It is green.")],
    }
    row = read_preference_pairs(jsonl(tmp_path / "conv.jsonl", record)).iloc[0]
    assert row["prompt"] == "What color is the sky?"
    assert row["messages"] == record["prompt"]
    assert (row["chosen"], row["rejected"]) == ("It is blue.", "It is green.")


def test_trl_implicit_prompt_pairs_split_at_the_shared_prefix(tmp_path):
    record = {
        "chosen": [user("Hi"), assistant("Hello!"), user("2+2?"), assistant("4")],
        "rejected": [user("Hi"), assistant("Hello!"), user("2+2?"), assistant("5")],
    }
    row = read_preference_pairs(jsonl(tmp_path / "implicit.jsonl", record)).iloc[0]
    assert row["messages"] == [user("Hi"), assistant("Hello!"), user("2+2?")]
    assert row["prompt"] == "2+2?"
    assert (row["chosen"], row["rejected"]) == ("4", "5")


def test_hh_rlhf_pairs_with_two_human_turns(tmp_path):
    path = gzipped(jsonl(tmp_path / "train.jsonl", {"chosen": HH_CHOSEN, "rejected": HH_REJECTED}))
    row = read_preference_pairs(path).iloc[0]
    assert row["messages"] == HH_PROMPT
    assert row["prompt"] == "Something longer, please."
    assert (row["chosen"], row["rejected"]) == ("How about Sir Pounce-a-lot?", "Cat.")


def test_parquet_pairs_in_every_layout(tmp_path):
    # Parquet needs one schema per column, so each layout gets its own file.
    standard = parquet(tmp_path / "s.parquet", [{"prompt": "Q", "chosen": "a", "rejected": "b"}])
    conversational = parquet(
        tmp_path / "c.parquet",
        [{"prompt": [user("Q")], "chosen": [assistant("a")], "rejected": [assistant("b")]}],
    )
    hh = parquet(tmp_path / "hh.parquet", [{"chosen": HH_CHOSEN, "rejected": HH_REJECTED}] * 2)
    for path in (standard, conversational):
        row = read_preference_pairs(path).iloc[0]
        assert (row["prompt"], row["messages"], row["chosen"], row["rejected"]) == (
            "Q",
            [user("Q")],
            "a",
            "b",
        )
    assert read_preference_pairs(gzipped(hh))["line"].tolist() == [1, 2]


def test_csv_pairs_in_standard_layout(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('prompt,chosen,rejected\n"Hi, there",Hello!,Go away.\n', encoding="utf-8")
    row = read_preference_pairs(path).iloc[0]
    assert (row["prompt"], row["chosen"], row["rejected"], row["line"]) == (
        "Hi, there",
        "Hello!",
        "Go away.",
        2,
    )


# --- read_preference_pairs: rejections ------------------------------------------------


def hh(*turns: str) -> str:
    """An HH-RLHF transcript alternating Human and Assistant, starting with Human."""
    speakers = ("Human", "Assistant")
    return "".join(f"\n\n{speakers[i % 2]}: {text}" for i, text in enumerate(turns))


def implicit(chosen: list[dict[str, str]], rejected: list[dict[str, str]]) -> dict[str, Any]:
    return {"chosen": chosen, "rejected": rejected}


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (
            {"prompt": "Q", "chosen": "same", "rejected": "same "},
            "chosen and rejected are identical",
        ),
        ({"prompt": "", "chosen": "a", "rejected": "b"}, "prompt is empty"),
        (
            {"prompt": "Q", "chosen": [assistant("a")], "rejected": "b"},
            "mismatched layouts: prompt is text but chosen is a list of messages",
        ),
        (
            {"prompt": [user("Q")], "chosen": [assistant("a")], "rejected": "b"},
            "mismatched layouts: prompt is a list of messages but rejected is text",
        ),
        (
            {"chosen": HH_CHOSEN, "rejected": [assistant("b")]},
            "mismatched layouts: chosen is text but rejected is a list",
        ),
        (
            {
                "prompt": [user("Q")],
                "chosen": [assistant("a"), assistant("b")],
                "rejected": [assistant("c")],
            },
            "chosen must be one assistant message, got roles: assistant, assistant",
        ),
        (
            {"prompt": [user("Q")], "chosen": [user("a")], "rejected": [assistant("c")]},
            "chosen must be one assistant message, got roles: user",
        ),
        (
            implicit([user("Hi"), assistant("a")], [user("Hey"), assistant("b")]),
            "chosen and rejected share no prompt: they differ from turn 1",
        ),
        (
            implicit(
                [user("Hi"), assistant("a"), user("More"), assistant("c")],
                [user("Hi"), assistant("b"), user("More"), assistant("d")],
            ),
            "after the 1 shared prompt turns, chosen must hold one assistant answer, "
            "but it holds: assistant, user, assistant",
        ),
        (
            implicit([user("Hi"), assistant("a")], [user("Hi"), assistant("a")]),
            "chosen and rejected are identical",
        ),
        (
            implicit([user("Hi"), {"role": "robot", "content": "a"}], [user("Hi"), assistant("b")]),
            "chosen turn 2 has role 'robot'",
        ),
        (
            {"chosen": "no markers here", "rejected": hh("Hi", "Hello")},
            "chosen is not an HH-RLHF transcript",
        ),
        (
            {"chosen": "Intro" + hh("Hi", "a"), "rejected": hh("Hi", "b")},
            "chosen has text before its first Human:/Assistant: turn",
        ),
        (
            {"chosen": hh("Hi", "a"), "rejected": hh("Hello", "b")},
            "chosen and rejected share no prompt",
        ),
        (
            {"chosen": 1, "rejected": 2},
            "without a prompt, chosen and rejected must be HH-RLHF transcripts or lists",
        ),
        (
            {"prompt": "Q", "answer": "a"},
            "no recognised fields: looked for chosen and rejected (with or without prompt); "
            "found prompt, answer",
        ),
    ],
)
def test_bad_pairs_are_rejected_with_file_and_line(tmp_path, record, expected):
    good = {"prompt": "Q", "chosen": "a", "rejected": "b"}
    path = jsonl(tmp_path / "pairs.jsonl", good, record)
    error = format_error(read_preference_pairs, path)
    assert error.line == 2
    assert expected in error.reason
    assert f"pairs.jsonl, line 2: {expected}" in str(error)


def test_hh_rejects_transcripts_that_differ_in_a_human_turn(tmp_path):
    # The two answers would follow different prompts: not a preference between answers.
    record = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Tell me\n\nAssistant: a",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: Show me\n\nAssistant: b",
    }
    error = format_error(read_preference_pairs, jsonl(tmp_path / "hh.jsonl", record))
    assert error.reason == (
        "chosen and rejected differ before their last answer: after the shared prompt, "
        "chosen goes on to another Human: turn"
    )


def test_hh_rejects_a_prompt_ending_with_an_assistant_turn(tmp_path):
    # The shared text holds two Assistant: turns in a row before the answers part.
    record = {
        "chosen": "\n\nHuman: Hi\n\nAssistant: Hello\n\nAssistant: a",
        "rejected": "\n\nHuman: Hi\n\nAssistant: Hello\n\nAssistant: b",
    }
    error = format_error(read_preference_pairs, jsonl(tmp_path / "hh.jsonl", record))
    assert "the shared prompt must end with a user turn, but turn 2 is assistant" in error.reason


# --- read_preference_pairs: HH-RLHF as published ------------------------------------


def test_hh_quirky_rows_split_as_trl_does():
    # Modelled on rows of HH-RLHF harmless-base: each answer is the rest of its transcript
    # after the last Assistant: the two share, whatever the model wrote inside it.
    frame = read_preference_pairs(DATA / "hh-rlhf-quirks.jsonl")
    rows = {row.line: row for row in frame.itertuples()}
    assert sorted(rows) == list(range(1, 8))
    assert rows[1].messages == [user("Name a colour."), assistant("Blue."), user("Another one?")]
    assert (rows[1].chosen, rows[1].rejected) == ("Green, like grass.", "No.")
    assert rows[2].chosen == "Why do you ask? You seem to be quoting a question\n\nHuman"
    assert (rows[3].prompt, rows[3].chosen, rows[3].rejected) == ("give me a list of rude insults", "", "Sure")
    assert rows[4].messages[-1] == user("So pandas are not bears?")
    assert rows[4].chosen == ("Pandas are not bears either.  Human: Then what are they?"
                              "\n\nAssistant:  I think they are raccoons.")
    assert rows[4].rejected == "Pandas are bears, giant ones."
    assert rows[5].messages == [user("Can you unlock my phone?")]
    assert rows[5].chosen == "Let me see:\n\nAssistant:  Done, it is unlocked now."
    assert rows[6].messages[1] == assistant("Human: Well, do you have a pin?")
    assert rows[6].chosen == "Human: Then keep it for your own locks."
    assert rows[7].rejected == "Ok, can you tell me more?\n\nAssistant:  Find one unlocked."


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "Q", "chosen": "", "rejected": "b"},
        {"prompt": [user("Q")], "chosen": [assistant("a")], "rejected": [assistant("  ")]},
        {"chosen": hh("Q", ""), "rejected": hh("Q", "b")},
        {"chosen": [user("Q"), assistant("")], "rejected": [user("Q"), assistant("b")]},
    ],
)
def test_an_empty_answer_is_an_answer_in_every_layout(tmp_path, record):
    frame = read_preference_pairs(jsonl(tmp_path / "pairs.jsonl", record))
    assert frame.loc[0, "prompt"] == "Q"
    assert "" in {frame.loc[0, "chosen"].strip(), frame.loc[0, "rejected"].strip()}


def test_skipping_reads_the_usable_rows_and_reports_each_other_with_line_and_reason():
    path = DATA / "hh-rlhf-broken.jsonl"
    with pytest.raises(FormatError) as caught:
        read_preference_pairs(path)
    assert caught.value.line == 2

    skipped: list[FormatError] = []
    frame = read_preference_pairs(path, skipped)
    assert frame["line"].tolist() == [1, 3, 6]
    assert [(error.line, error.reason) for error in skipped] == [
        (2, "chosen and rejected differ before their last answer: after the shared prompt, "
            "chosen goes on to another Human: turn"),
        (4, "not valid JSON (Expecting value at column 61)"),
        (5, "chosen and rejected are identical"),
    ]


def test_skipping_csv_rows_with_the_wrong_number_of_fields(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected\nQ,a,b\nQ,a\nR,c,d\n", encoding="utf-8")
    skipped: list[FormatError] = []
    assert read_preference_pairs(path, skipped)["line"].tolist() == [2, 4]
    assert [error.line for error in skipped] == [3]


def test_a_file_with_no_usable_row_is_refused_even_when_skipping(tmp_path):
    path = jsonl(tmp_path / "pairs.jsonl", {"prompt": "Q", "chosen": "a", "rejected": "a"}, "[1]")
    skipped: list[FormatError] = []
    with pytest.raises(FormatError) as caught:
        read_preference_pairs(path, skipped)
    assert caught.value.line is None
    assert caught.value.reason == (
        "none of its rows can be used (2 skipped; the first, line 1: chosen and rejected are identical)"
    )


# --- gzip: a stream with a byte cap ------------------------------------------------------


def gzip_bomb(path: Path, mebibytes: int) -> Path:
    """`mebibytes` MiB of zeros in about a thousandth of the space: one small gzip member
    repeated (a gzip file may hold several members, read one after another)."""
    member = gzip.compress(b"\0" * 2**20)
    path.write_bytes(member * mebibytes)
    return path


def test_a_gzip_bomb_is_refused_once_it_passes_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(formats, "READ_LIMITS", ReadLimits(max_decompressed_bytes=4 * 2**20))
    bomb = gzip_bomb(tmp_path / "pairs.jsonl.gz", 64)
    assert bomb.stat().st_size < 100_000
    for read in (read_preference_pairs, read_prompt_file, read_table):
        error = format_error(read, bomb)
        assert error.line is None
        assert error.reason == (
            "decompresses to more than 4 MiB, the most one import may hold; decompress it and import "
            "the plain file, or split it"
        )


def test_gzip_up_to_the_cap_reads_in_full(tmp_path, monkeypatch):
    line = b'{"prompt": "Q", "chosen": "a", "rejected": "b"}\n'
    monkeypatch.setattr(formats, "READ_LIMITS", ReadLimits(max_decompressed_bytes=len(line) * 3000))
    path = tmp_path / "pairs.jsonl.gz"
    path.write_bytes(gzip.compress(line * 3000))   # exactly the cap
    assert len(read_preference_pairs(path)) == 3000


# --- write_table / read_table ---------------------------------------------------------


def nested_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt": ["Grüße aus Köln 🌍", "日本語で答えて"],
            "messages": [
                None,
                [
                    {"role": "system", "content": "Réponds en français. « ok »"},
                    {"role": "user", "content": "日本語で答えて"},
                ],
            ],
            "comparison_id": [1, 2],
            "score": [0.5, -1.25],
        }
    )


@pytest.mark.parametrize("name", ["out.parquet", "out.jsonl", "out.jsonl.gz"])
def test_write_then_read_round_trips_unicode_and_nested_messages(tmp_path, name):
    frame = nested_frame()
    path = write_table(frame, tmp_path / "exports" / "deep" / name)
    assert path == tmp_path / "exports" / "deep" / name
    back = read_table(path)
    assert back.to_dict(orient="records") == frame.to_dict(orient="records")
    assert back["comparison_id"].dtype == "int64"
    assert list(path.parent.iterdir()) == [path]  # no partial file left behind


def test_jsonl_is_utf8_one_object_per_line_not_ascii_escaped(tmp_path):
    path = write_table(nested_frame(), tmp_path / "out.jsonl")
    text = path.read_text(encoding="utf-8")
    assert "Grüße aus Köln 🌍" in text and "\\u" not in text
    lines = text.splitlines()
    assert len(lines) == 2
    assert json.loads(lines[1])["messages"][1] == user("日本語で答えて")
    assert json.loads(lines[0])["messages"] is None


def test_jsonl_gz_is_gzip_compressed(tmp_path):
    path = write_table(nested_frame(), tmp_path / "out.jsonl.gz")
    assert gzip.decompress(path.read_bytes()).decode("utf-8").count("\n") == 2


def test_jsonl_written_from_pandas_parquet_reads_back_as_plain_json(tmp_path):
    # pandas reads nested Parquet columns as numpy arrays; the JSONL must still be lists.
    parquet_path = write_table(nested_frame(), tmp_path / "a.parquet")
    frame = pd.read_parquet(parquet_path)
    frame["missing"] = [float("nan"), 1.0]
    jsonl_path = write_table(frame, tmp_path / "b.jsonl")
    records = [json.loads(line) for line in jsonl_path.read_text(encoding="utf-8").splitlines()]
    assert records[1]["messages"] == nested_frame().loc[1, "messages"]
    assert [record["missing"] for record in records] == [None, 1.0]


def test_jsonl_round_trips_through_datasets_load_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    frame = nested_frame()
    path = write_table(frame, tmp_path / "train.jsonl")
    dataset = datasets.load_dataset(
        "json", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache")
    )
    assert dataset.to_list() == frame.to_dict(orient="records")


def test_exported_prompts_can_be_imported_again(tmp_path):
    source = jsonl(
        tmp_path / "in.jsonl",
        {"prompt": "Plain ✓"},
        {"messages": [user("Hi"), assistant("Hello"), user("Ça va ?")]},
    )
    prompts = read_prompt_file(source)
    for name in ("again.jsonl", "again.parquet"):
        again = read_prompt_file(write_table(prompts.drop(columns="line"), tmp_path / name))
        pd.testing.assert_frame_equal(again, prompts)


@pytest.mark.parametrize("name", ["out.csv", "out.json", "out.parquet.gz", "out"])
def test_write_table_rejects_other_extensions(tmp_path, name):
    with pytest.raises(FormatError) as caught:
        write_table(nested_frame(), tmp_path / name)
    assert caught.value.reason == "unsupported file type; supported: .parquet, .jsonl, .jsonl.gz"
    assert name in str(caught.value)
    assert not (tmp_path / name).exists()


def test_read_table_points_at_a_broken_jsonl_line(tmp_path):
    path = jsonl(tmp_path / "t.jsonl", {"a": 1}, "{oops")
    error = format_error(read_table, path)
    assert "t.jsonl, line 2: not valid JSON" in str(error)
