"""Files brought into the store: prompt files, ranking files, external preference pairs and
other tools' rankings. Each file is read and checked whole (`formats`, `imports`) before
anything is written, then stored in one transaction, so a refused file changes nothing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlhf import auth
from rlhf.collect import formats, imports
from rlhf.collect.formats import FormatError
from rlhf.preference.messages import as_messages
from rlhf.preference.ranking import RankingError, parse_ranking
from storage import comparisons, feedback, prompts
from storage.db import Store


@dataclass(frozen=True)
class ToolImport:
    """What `Workbench.import_from` stored."""

    rankings: int
    comparisons: int
    users_created: list[str]
    prompt_set: str


def _set_name(path: str | Path, prompt_set: str | None) -> str:
    """The prompt set an import goes to: the one named, else the file's name up to its first dot."""
    return prompt_set or Path(path).name.split(".")[0]


def _add_prompts(cur, prompt_set: str, conversations: list[list[dict]], path: str | Path) -> list[int]:
    """Add the conversations to `prompt_set` (those already there are kept) and return the id
    of each, in order."""
    prompts.add_prompts(cur, prompt_set, conversations, source=str(path))
    return prompts.ids_by_fingerprint(cur, prompt_set, [prompts.fingerprint(m) for m in conversations])


def import_prompts(store: Store, path: str | Path, prompt_set: str | None = None) -> int:
    """Import a prompt file (see `formats.read_prompt_file`); returns how many were new."""
    frame = formats.read_prompt_file(path)
    conversations = [
        list(messages) if messages is not None else as_messages(text)
        for text, messages in zip(frame["prompt"], frame["messages"])
    ]
    with store.transaction() as cur:
        return prompts.add_prompts(cur, _set_name(path, prompt_set), conversations, source=str(path))


def import_rankings(store: Store, path: str | Path) -> int:
    """Import a JSONL file of {comparison_id, ranking, user}: every line is checked
    (comparison exists, ranking valid for its K, not already ranked by that user)
    before anything is stored."""
    frame = formats.read_ranking_file(path)
    cur = store.cursor()
    checked, seen = [], set()
    for row in frame.itertuples():
        found = comparisons.get(cur, int(row.comparison_id))
        if found is None:
            raise FormatError(path, row.line, f"there is no comparison {row.comparison_id}")
        if not row.user.strip():
            raise FormatError(path, row.line, "the user is empty")
        try:
            ranking = parse_ranking(row.ranking, found.k)
        except RankingError as error:
            raise FormatError(path, row.line, str(error).rstrip(".")) from None
        key = (found.id, row.user.strip())
        if key in seen or feedback.ranking_by(cur, *key):
            raise FormatError(path, row.line, f"{key[1]} has already ranked comparison {found.id}")
        seen.add(key)
        checked.append((found.id, key[1], ranking))
    with store.transaction() as tx:
        for comparison_id, user, ranking in checked:
            feedback.add_ranking(tx, comparison_id, user, ranking.canonical, ranking.ranks(), source="human")
    return len(checked)


def import_pairs(store: Store, path: str | Path, prompt_set: str | None = None,
                 skipped: list[FormatError] | None = None) -> int:
    """Import external preference pairs as two-completion comparisons ranked chosen over
    rejected (the chosen answer at a random letter), attributed to the file (source
    'import'), not to a person. With a `skipped` list, rows that cannot be used are
    collected there and the rest imported; without it the first such row stops the
    import and nothing is stored."""
    frame = formats.read_preference_pairs(path, skipped)
    prompt_set = _set_name(path, prompt_set)
    conversations = [list(messages) for messages in frame["messages"]]
    with store.transaction() as cur:
        prompt_ids = _add_prompts(cur, prompt_set, conversations, path)
        return comparisons.add_imported_pairs(
            cur, prompt_ids, list(frame["chosen"]), list(frame["rejected"]), annotator=f"import:{Path(path).name}"
        )


def import_from(store: Store, tool: str, path: str | Path, prompt_set: str | None = None,
                data: str | Path | None = None) -> ToolImport:
    """Import another tool's rankings (`rlhf.collect.imports.TOOLS`): each prompt and
    its K completions become one imported comparison (as `import_pairs` makes them),
    ranked by each annotator apart as `<tool>:<annotator>`, a user (role annotator, no
    password) created for each new name. Their source is 'human': people ranked them,
    in another tool. Everything is checked before anything is stored, in one
    transaction; a bad record is a FormatError with its place and reason."""
    found = imports.read(tool, path, data)
    planned = imports.plan(tool, path, found)
    prompt_set = _set_name(path, prompt_set)
    conversations = [messages for messages, _ in planned.items]
    with store.transaction() as cur:
        created = auth.add_imported_annotators(cur, planned.annotators)
        prompt_ids = _add_prompts(cur, prompt_set, conversations, path)
        ids = comparisons.add_imported(cur, prompt_ids, [texts for _, texts in planned.items])
        feedback.add_imported_rankings(
            cur, [ids[item] for item, _, _ in planned.rankings], [who for _, who, _ in planned.rankings],
            [ranking.ranks() for _, _, ranking in planned.rankings],
            [ranking.canonical for _, _, ranking in planned.rankings], source="human",
        )
    return ToolImport(len(planned.rankings), len(ids), created, prompt_set)
