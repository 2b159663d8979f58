"""The rows a training job learns from, cut from the store: the snapshot behind
`data.parquet`.

A selection narrows the rankings (prompt sets, prompt categories, annotators, dates, minimum agreement
between annotators of a comparison); each method then takes its own kind of row
(rlhf.train.methods.Method.data): whole rankings for the reward model, chosen/rejected
pairs for DPO, labelled single completions for KTO, demonstrations for SFT, prompts for
the online methods. A method that trains on a corpus (pretrain) takes no rankings: its rows
are the documents of the corpus file its request names (`corpus_rows`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd

from rlhf.collect.formats import FormatError, read_corpus_file
from rlhf.preference import pairs
from rlhf.errors import UserError
from rlhf.limits import LIMITS
from rlhf.preference.ranking import parse_ranking
from rlhf.train.methods import METHODS, Method
from storage import feedback, prompts


class DataError(UserError):
    """The selection gives the method nothing (or too little) to learn from."""


@dataclass
class Selection:
    prompt_sets: list[str] = field(default_factory=list)   # empty: every set
    annotators: list[str] = field(default_factory=list)    # empty: everybody
    rounds: list[int] = field(default_factory=list)        # empty: every round (comparisons' rounds)
    categories: list[str] = field(default_factory=list)    # empty: every prompt category (e.g. safety)
    since: str | None = None                                # ISO date, inclusive
    until: str | None = None                                # ISO date, inclusive
    min_agreement: float = 0.0  # comparisons ranked by several people whose mean pairwise agreement is lower are left out

    @classmethod
    def from_dict(cls, values: dict | None) -> "Selection":
        values = dict(values or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise DataError(f"Unknown data selection field(s): {', '.join(sorted(unknown))}.")
        selection = cls(**values)
        if isinstance(selection.categories, str) or not all(isinstance(c, str) and c for c in selection.categories):
            raise DataError("categories is a list of prompt categories, such as [\"safety\"].")
        if any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in selection.rounds):
            raise DataError(f"Rounds are numbers from 1, not {selection.rounds}.")
        if not 0 <= selection.min_agreement <= 1:
            raise DataError(f"min_agreement must be between 0 and 1, not {selection.min_agreement}.")
        for name in ("since", "until"):
            value = getattr(selection, name)
            if value:
                try:
                    pd.Timestamp(value)
                except ValueError:
                    raise DataError(f"{name} must be a date like 2026-11-23, not '{value}'.") from None
        return selection

    def as_dict(self) -> dict:
        return asdict(self)


def selected_rankings(cur, selection: Selection) -> pd.DataFrame:
    """The stored rankings the selection keeps, one row per annotator's ranking."""
    frame = feedback.rankings_frame(cur)
    keep = pd.Series(True, index=frame.index)
    if selection.prompt_sets:
        keep &= frame["prompt_set"].isin(selection.prompt_sets)
    if selection.annotators:
        keep &= frame["user"].isin(selection.annotators)
    if selection.rounds:
        keep &= frame["round"].isin(selection.rounds)
    if selection.categories:   # rankings of prompts flagged by their category, e.g. a safety reward model's
        keep &= frame["comparison_id"].map(prompts.category_by_comparison(cur)).isin(selection.categories)
    if selection.since:
        keep &= frame["created_at"] >= pd.Timestamp(selection.since)
    if selection.until:
        keep &= frame["created_at"] < pd.Timestamp(selection.until) + pd.Timedelta(days=1)
    frame = frame[keep]
    if selection.min_agreement > 0:
        frame = frame[frame["comparison_id"].map(_agreement_by_comparison(frame)) >= selection.min_agreement]
    return frame.reset_index(drop=True)


def _agreement_by_comparison(frame: pd.DataFrame) -> dict:
    """Mean pairwise agreement among the annotators of each comparison; 1 for one annotator."""
    from rlhf.preference.agreement import pairwise_agreement  # scipy: only when the selection asks for it

    agreement = {}
    for comparison_id, group in frame.groupby("comparison_id"):
        ranks = [list(r) for r in group["ranks"]]
        pairs = [pairwise_agreement(a, b) for a, b in combinations(ranks, 2)]
        agreement[comparison_id] = float(np.mean(pairs)) if pairs else 1.0
    return agreement


def build(cur, spec: Method, options: dict, selection: Selection, corpus: str | None = None) -> pd.DataFrame:
    """The method's training rows for this selection (or, for a corpus method, the corpus
    file's documents); DataError when there are too few."""
    corpus_methods = [name for name, m in METHODS.items() if m.data == "corpus"]
    if spec.data == "corpus":
        if selection != Selection():
            raise DataError(f"{spec.name} trains on its corpus, not on rankings: leave out the data selection"
                            " (prompt sets, annotators, rounds, dates, agreement).")
        return _enough(corpus_rows(spec, corpus), spec, "documents")
    if corpus:
        raise DataError(f"Only {' and '.join(corpus_methods)} trains on a corpus; {spec.name} trains on"
                        f" {'the prompts' if spec.data == 'prompts' else 'the rankings'}: leave the corpus out.")
    if spec.data == "prompts":
        table = prompts.in_sets(cur, selection.prompt_sets or None)
        if selection.categories:
            table = table[table["category"].isin(selection.categories)]
        if table.empty:
            of = f" of the categories {', '.join(selection.categories)}" if selection.categories else ""
            raise DataError(f"The selected prompt sets hold no prompts{of}: import some with `rlhf prompts import`.")
        # the category (e.g. safety) gates a combination of reward models as Llama 2's (rlhf.preference.combination)
        rows = pd.DataFrame({"prompt": table["messages"], "prompt_id": table["id"], "category": table["category"]})
        return _enough(rows, spec, "prompts")

    rankings = selected_rankings(cur, selection)
    if rankings.empty:
        where = "" if selection == Selection() else " for this selection"
        raise DataError(f"There are no rankings to train {spec.name} on{where}: rank some comparisons first"
                        " (the Annotate tab, `rlhf rank` or `rlhf rankings import`).")
    if spec.data == "rankings":
        rows = rankings.assign(prompt=rankings["messages"])[
            ["ranking_id", "comparison_id", "prompt", "completions", "ranking", "user", "model_versions"]]
        objective = options.get("objective", pairs.RANKINGS_OBJECTIVE)
        if objective != pairs.RANKINGS_OBJECTIVE:
            return _enough(rated_rows(cur, rows, objective, options), spec, f"rankings rated on {objective}")
        if options.get("loss", "bradley_terry") == "bradley_terry" and pairs.only_full_ties(rows):
            raise DataError("Every selected ranking is a full tie, so there is no preference pair: rank more,"
                            " or use a tie-aware loss (loss=rao_kupper or loss=davidson).")
        return _enough(rows, spec, "rankings")
    if spec.data == "pairs":
        rows = pairs.preference_pairs(rankings, options.get("pairs", "all"))
        if rows.empty:
            raise DataError("The selected rankings give no preference pair (every one a full tie).")
        return _enough(rows, spec, "preference pairs")
    if spec.data == "unpaired":
        labels = feedback.labels_frame(cur) if options.get("use_marks", True) else None
        rows = pairs.unpaired_examples(rankings, labels)
        if rows.empty or rows["label"].all() or not rows["label"].any():
            raise DataError("KTO needs both desirable and undesirable examples, and the selected rankings"
                            f" give {int(rows['label'].sum())} desirable and {int((~rows['label']).sum())} undesirable.")
        return _enough(rows, spec, "labelled completions")
    if spec.data == "sft":
        rows = demonstrations(rankings, options.get("sft_source", "both"))
        if rows.empty:
            raise DataError(f"{spec.name} needs human answers and there are none: no written better answers and no"
                            " top-ranked completions in the selected rankings.")
        return _enough(rows, spec, "demonstrations")
    raise ValueError(f"unknown data kind {spec.data}")


def corpus_rows(spec: Method, corpus: str | None) -> pd.DataFrame:
    """The documents (`document`, `text`) of the corpus file `corpus`, read whole and
    checked (rlhf.collect.formats.read_corpus_file); one sentence when there is none."""
    if not corpus or not str(corpus).strip():
        raise DataError(f"{spec.name} trains on a corpus file and none was given: name one with --corpus FILE"
                        " (a .txt, JSONL with a text field, or Parquet with a text column), upload it in the Train"
                        " tab, or send it as corpus=handle_file(PATH) to the API.")
    try:
        return read_corpus_file(corpus, LIMITS.corpus_bytes)[["document", "text"]]
    except FormatError as error:
        raise DataError(f"The corpus {error}") from None


def corpus_summary(corpus: str, rows: pd.DataFrame) -> dict:
    """What a job's spec keeps of its corpus: the file's name (an upload's folder means
    nothing later), its documents and characters, and the SHA-256 of the text the
    snapshot holds (documents joined by a NUL), so that a job says what it trained on."""
    digest = hashlib.sha256("\0".join(rows["text"]).encode("utf-8")).hexdigest()
    return {"file": Path(corpus).name, "documents": int(len(rows)),
            "characters": int(rows["text"].str.len().sum()), "sha256": digest}


def rated_rows(cur, rows: pd.DataFrame, objective: str, options: dict) -> pd.DataFrame:
    """The reward model of one rated dimension: the rankings' completions rated on it, in
    order of their ratings, with the rating gap as margin (`pairs.rated_rankings`);
    DataError in one sentence when no two are rated apart."""
    keep_ties = options.get("loss", "bradley_terry") != "bradley_terry"
    rated = pairs.rated_rankings(rows, feedback.ratings_frame(cur, objective), objective, keep_ties)
    if rated.empty:
        known = feedback.rated_dimensions(cur)
        dimensions = f"rated dimensions: {', '.join(known)}" if known else "nothing is rated yet"
        raise DataError(f"No two completions of the selected rankings are rated {'' if keep_ties else 'apart '}on"
                        f" '{objective}' ({dimensions}), so a reward model of it has no pair to learn from.")
    return rated


def demonstrations(rankings: pd.DataFrame, source: str) -> pd.DataFrame:
    """SFT rows: annotators' written better answers and/or the completions of each
    ranking's top group (not of a full tie, nor of one marked "none acceptable")."""
    rows = []
    for row in rankings.to_dict("records"):
        prompt = pairs.prompt_messages(row)
        answer = row.get("better_answer")
        answer = answer.strip() if isinstance(answer, str) else ""
        if source in ("both", "better_answers") and answer:
            rows.append({"prompt": prompt, "text": answer, "comparison_id": row["comparison_id"]})
        ranking = parse_ranking(row["ranking"], len(row["completions"]))
        if source in ("both", "top_ranked") and not ranking.is_full_tie and not row.get("none_acceptable"):
            for letter in ranking.top:
                text = list(row["completions"])[ord(letter) - ord("A")]
                rows.append({"prompt": prompt, "text": text, "comparison_id": row["comparison_id"]})
    frame = pd.DataFrame(rows, columns=["prompt", "text", "comparison_id"])
    frame = frame.drop_duplicates(subset=["comparison_id", "text"]).reset_index(drop=True)
    frame["completion"] = [[{"role": "assistant", "content": text}] for text in frame["text"]]
    return frame[["prompt", "completion", "comparison_id"]]


def _enough(rows: pd.DataFrame, spec: Method, what: str) -> pd.DataFrame:
    if len(rows) < spec.min_rows:
        raise DataError(f"{spec.name} needs at least {spec.min_rows} {what}; the selection gives {len(rows)}.")
    return rows.reset_index(drop=True)
