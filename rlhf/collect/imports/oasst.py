"""OpenAssistant message trees (oasst `*.trees.jsonl`): rankings among sibling replies.

Schema, as documented by OpenAssistant:
- the dataset card, https://huggingface.co/datasets/OpenAssistant/oasst1 (and oasst2):
  one tree per line, `{message_tree_id, tree_state, prompt: <message>}`; a message has
  `message_id`, `parent_id`, `text`, `role` ("prompter" or "assistant"), `rank`,
  `deleted`, `replies` (its child messages); "nodes with more than one reply can have a
  `rank` field indicating the aggregated user preference (the most preferred message
  has rank 0)";
- the export schema, https://github.com/LAION-AI/Open-Assistant/blob/main/oasst-data/oasst_data/schemas.py:
  a message's `events` may hold `{"ranking": [{type, user_id, ranking,
  ranked_message_ids, ranking_parent_id, ...}]}`, one event per person who ranked its
  replies, `ranked_message_ids` best first.

How we read them: only rankings among assistant replies to a prompter message count
(those are completions of one prompt: the conversation down to that message). Where
the message keeps its ranking events, each event is one annotator's ranking,
attributed to its `user_id`; replies named there but missing from the tree (deleted
since) are left out. Where it keeps only the merged `rank` of its replies, that is one
ranking attributed to `consensus`. Deleted replies are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from rlhf.collect import formats
from rlhf.collect.formats import checked_text
from rlhf.collect.imports.record import (
    BadRecord, ToolRanking, describe, identifier, mapping, records, sequence, text,
)
from rlhf.preference.messages import Message

TOOL = "oasst"
CONSENSUS = "consensus"  # the annotator of a merged rank, which no one person gave
_ROLES = {"prompter": "user", "assistant": "assistant"}


def read(path: Path) -> Iterator[ToolRanking]:
    return records(path, formats.json_lines(path), "line", lambda tree, where: _tree(path, tree, where))


def _tree(path: Path, tree: dict, where: int) -> Iterator[ToolRanking]:
    root = mapping(tree.get("prompt"), "the tree's prompt")
    todo: list[tuple[dict, tuple[Message, ...]]] = [(root, ())]
    while todo:
        message, history = todo.pop()
        role = message.get("role")
        if role not in _ROLES:
            raise BadRecord(f"message {message.get('message_id')!r} has role {role!r}; expected prompter"
                            " or assistant")
        conversation = (*history, {"role": _ROLES[role], "content": _message_text(message, role)})
        replies = [mapping(reply, "a reply") for reply in sequence(message.get("replies") or [], "replies")]
        if role == "prompter":
            yield from _rankings(path, where, message, conversation, [r for r in replies if not r.get("deleted")])
        todo.extend((reply, conversation) for reply in reversed(replies))


def _message_text(message: dict, role: str) -> str:
    what = f"message {message.get('message_id')!r}'s text"
    return checked_text(message.get("text"), what) if role == "prompter" else text(message.get("text"), what)


def _rankings(path: Path, where: int, parent: dict, conversation: tuple[Message, ...],
              replies: list[dict]) -> Iterator[ToolRanking]:
    by_id = {identifier(reply.get("message_id"), "a reply's message_id"): reply for reply in replies
             if reply.get("role") == "assistant"}
    events = [mapping(event, "a ranking event")
              for event in sequence(mapping(parent.get("events") or {}, "events").get("ranking") or [], "ranking events")]
    if events:
        for event in events:
            ranked = [identifier(m, "a ranked message id") for m in sequence(event.get("ranked_message_ids"),
                                                                            "ranked_message_ids")]
            present = [message_id for message_id in ranked if message_id in by_id]
            if len(present) >= 2:
                user = identifier(event.get("user_id"), f"a ranking event of message {parent.get('message_id')!r}'s"
                                                        " user_id")
                # the replies in the tree's order, so every annotator's ranking of them is one comparison
                shown = [message_id for message_id in by_id if message_id in present]
                yield _ranking(path, where, conversation, [by_id[m] for m in shown], user,
                               [present.index(m) + 1 for m in shown])
        return
    ranked = [reply for reply in by_id.values() if reply.get("rank") is not None]
    if len(ranked) >= 2:
        for reply in ranked:
            rank = reply["rank"]
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 0:
                raise BadRecord(f"message {reply.get('message_id')!r} has rank {describe(rank)}; ranks are whole"
                                " numbers from 0, the best")
        yield _ranking(path, where, conversation, ranked, CONSENSUS, [reply["rank"] + 1 for reply in ranked])


def _ranking(path: Path, where: int, conversation: tuple[Message, ...], replies: list[dict], annotator: str,
             ranks: list[int]) -> ToolRanking:
    completions = tuple(_message_text(reply, "assistant") for reply in replies)
    return ToolRanking(str(path), where, "line", conversation, completions, annotator, tuple(ranks))
