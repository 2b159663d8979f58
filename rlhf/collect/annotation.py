"""Annotation: the service behind the annotation page and its API.

Annotators ask for the next item, rank it (with optional labels, ratings, a better
answer), or skip it. Researchers configure the queue, edit the guidelines and mark gold
items. Every call names the `User` making it, and every stored row is attributed to that
user's name: never to a name sent by the client.

What a client may write is what it was handed: `next_item` records a hand-out under an
opaque random token (the client never sees comparison ids, which are sequential and
would tell gold items from the rest), and a ranking or skip must name an open hand-out
of the same user, its claim live or expired. The time spent is the server's, measured
from the hand-out; a figure the client sends is kept apart as client-reported.

Thread safety: the server's handlers run in threads, each with its own cursor, and one
server process owns the database. Choosing a comparison and claiming it, and storing a
checked submission, each happen under one process-wide lock and in one transaction (a
submit-and-next does both in one), so two annotators are never handed the same last slot
and a retried submission never stores twice.
"""

from __future__ import annotations

import dataclasses
import math
import random
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd

from rlhf.checks import require_prompt_set, require_whole
from rlhf.auth import ROLES, STAFF, User, require_role
from rlhf.errors import UserError
from rlhf.home import BASE_VERSION
from rlhf.limits import LIMITS, check_text
from rlhf.preference.ranking import MAX_K, MIN_K, Ranking, letters, parse_ranking
from rlhf.settings import help_of, setting
from rlhf.collect.workbench import Workbench, WorkbenchError
from storage import feedback, guidelines, prompts, queue
from storage import scores as reward_scores

SETTINGS_KEY = "annotation.queue"
SELECTIONS = ("random", "uncertain", "thompson")
MAX_REWARD_MODELS = 2
FLAGS = ("unsafe", "factually_wrong", "nonsense")
LIKERT = range(1, 6)
MAX_TOKEN = 64  # characters in a hand-out token; more is not one of ours
MAX_TEXT = LIMITS.text_chars  # characters in a better answer or a comment; more is a pasted mistake

# One lock for the process: all writes of the annotation flow go through it, whichever
# Annotation object (page, API) makes them.
_WRITE_LOCK = threading.Lock()


@dataclass
class QueueConfig:
    """How comparisons are made and handed out; stored in the database, changed on the Queue
    tab or through /queue_settings. Each field's help is what the tab shows beside it."""

    overlap: int = setting(1, "how many different annotators rank each comparison")
    prompt_sets: list[str] | None = setting(None, "prompt sets comparisons come from; none chosen: any set")
    model_version: str | None = setting(None, "hand out only comparisons with completions from this version; none: any"
                                              " (generation uses the active policy)")
    ready_target: int = setting(16, "comparisons with a free slot the pre-generator keeps ready")
    gold_rate: float = setting(0.1, "share of handed-out items that are gold items (0 to 1)")
    claim_ttl_s: int = setting(900, "seconds after which a handed-out item returns to the queue")
    dimensions: tuple[str, ...] = setting(("helpfulness", "harmlessness", "honesty"),
                                          "the dimensions annotators may rate each completion on (1-5)")
    k: int = setting(4, "completions per generated comparison")
    max_new_tokens: int = setting(256, "the token budget of each generated completion")
    sources: list[dict] | None = setting(None, "where a generated comparison's completions come from; none: all K from"
                                               ' the generating version. For example [{"version": "active", "count":'
                                               ' 2}, {"version": "previous", "count": 1}, {"version": "base", "count":'
                                               ' 1, "temperature": 1.0}]: version is active, previous (active in the'
                                               " round before), base or a version name; K is the sum of the counts")
    # Closing the loop with a reward model (rlhf/collect/suggestions.py); scores are computed
    # in the background (the pre-generator) while either is on.
    suggest: bool = setting(False, "show annotators the reward model's ranking, marked as a suggestion (never filled"
                                   " into their ranking)")
    selection: str = setting("random", "which comparison comes next: random (closest to complete, then oldest),"
                                       " uncertain (what the reward model is least sure of first), or thompson (handed"
                                       " out as random, but each comparison shows the K of `candidates` sampled"
                                       " completions that double Thompson sampling over an ensemble of reward heads"
                                       " picks; random picks until there are enough rankings)")
    candidates: int = setting(8, "with the thompson selection: completions sampled per prompt (M, more than K, at most"
                                 " 8), of which K are shown and the rest kept unshown")
    reward_models: list[str] | None = setting(None, "the reward version(s) used; none: the newest. With two, uncertain"
                                                    " means where they disagree most, and the first one suggests")

    @classmethod
    def help(cls, name: str) -> str:
        return help_of(cls, name)

    @classmethod
    def from_dict(cls, stored: dict) -> "QueueConfig":
        """From its JSON form; keys this release does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{key: value for key, value in stored.items() if key in known})
        config.dimensions = tuple(config.dimensions)
        return config

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"dimensions": list(self.dimensions)}


@dataclass
class Item:
    comparison_id: int  # for the server only: clients get `handout`
    handout: str  # the opaque token a client ranks or skips the item by
    prompt: str
    messages: list[dict]
    letters: str
    completions: list[str]
    guidelines_version: int
    dimensions: tuple[str, ...]
    progress: dict = field(default_factory=dict)
    # {ranking, reward_version} when the queue shows suggestions and the reward model has
    # scored this comparison; None otherwise
    suggestion: dict | None = None


@dataclass(frozen=True)
class _Chosen:
    comparison_id: int
    fresh: bool  # a new hand-out, not the item they already hold
    open_for_me: int | None = None  # counted by the queue while choosing; None: not counted


@dataclass(frozen=True)
class _Handed:
    """What `_hand_out` decided, before the comparison's texts are read."""
    comparison_id: int
    token: str
    progress: dict
    guidelines_version: int
    suggestion: dict | None


@dataclass
class Submission:
    handout: str  # Item.handout of the item ranked
    ranking: str
    client_seconds: float | None = None  # what the client says it spent: kept apart, never the stored time
    labels: dict | None = None  # {letter: {"good": bool | None, "flag": str | None}}
    ratings: dict | None = None  # {letter: {dimension: 1..5}}
    none_acceptable: bool = False
    better_answer: str | None = None
    comment: str | None = None


class _LookAgain(Exception):
    """A hand-out read as open was closed by the time its ranking was stored."""


@dataclass(frozen=True)
class _Checked:
    """A submission checked, ready to store: its hand-out and what it says."""
    handout: queue.Handout
    ranking: Ranking
    labels: dict
    ratings: dict
    client_seconds: float | None
    better_answer: str | None
    comment: str | None
    none_acceptable: bool


class Annotation:
    def __init__(self, wb: Workbench, rng: random.Random | None = None):
        self.wb = wb
        self.rng = rng or random.Random()  # decides when a gold item is mixed in

    # -- configuration ------------------------------------------------------------

    @property
    def config(self) -> QueueConfig:
        """The stored queue configuration (read each time: another Annotation object in
        this process may have changed it)."""
        stored = queue.get_setting(self.wb.store.cursor(), SETTINGS_KEY, {})
        return QueueConfig.from_dict(stored)

    def set_config(self, user: User, **changes) -> QueueConfig:
        """Change some settings (researchers and admins); all are checked before any is stored."""
        require_role(user, *STAFF)
        known = {f.name for f in dataclasses.fields(QueueConfig)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise WorkbenchError(f"Unknown queue setting '{unknown[0]}': use {', '.join(sorted(known))}.")
        config = self._checked_config(dataclasses.replace(self.config, **changes))
        with _WRITE_LOCK, self.wb.store.transaction() as cur:
            queue.set_setting(cur, SETTINGS_KEY, config.as_dict())
        return config

    def _checked_config(self, config: QueueConfig) -> QueueConfig:
        require_whole("overlap", config.overlap, 1, 100, error=WorkbenchError)
        require_whole("ready_target", config.ready_target, 0, 10_000, error=WorkbenchError)
        require_whole("claim_ttl_s", config.claim_ttl_s, 10, 7 * 24 * 3600, error=WorkbenchError)
        require_whole("k", config.k, MIN_K, MAX_K, error=WorkbenchError)
        require_whole("max_new_tokens", config.max_new_tokens, 1, 8192, error=WorkbenchError)
        require_whole("candidates", config.candidates, MIN_K, MAX_K, error=WorkbenchError)
        if isinstance(config.gold_rate, bool) or not isinstance(config.gold_rate, (int, float)) \
                or not 0 <= config.gold_rate <= 1:
            raise WorkbenchError(f"gold_rate must be a number from 0 to 1, not {config.gold_rate!r}.")
        config.gold_rate = float(config.gold_rate)
        config.prompt_sets = self._checked_prompt_sets(config.prompt_sets)
        config.model_version = self.wb.model_version(config.model_version).name if config.model_version else None
        config.sources = self.wb.check_sources(config.sources)
        if config.sources is not None:
            config.k = sum(source["count"] for source in config.sources)
        config.dimensions = _checked_dimensions(config.dimensions)
        if not isinstance(config.suggest, bool):
            raise WorkbenchError(f"suggest must be true or false, not {config.suggest!r}.")
        if config.selection not in SELECTIONS:
            raise WorkbenchError(f"selection must be one of {', '.join(SELECTIONS)}, not {config.selection!r}.")
        config.reward_models = self._checked_reward_models(config.reward_models)
        if config.selection == "thompson":
            self._check_thompson(config)
        if (config.suggest or config.selection == "uncertain") and not self.reward_versions(config):
            raise WorkbenchError("There is no reward model yet: train one (Train tab, method reward) before "
                                 "turning on suggestions or the 'uncertain' selection.")
        return config

    def _check_thompson(self, config: QueueConfig) -> None:
        if config.candidates <= config.k:
            raise WorkbenchError(f"The thompson selection shows K={config.k} of `candidates` sampled completions, "
                                 f"so candidates must be more than {config.k}, not {config.candidates}.")
        if config.sources is not None:
            raise WorkbenchError("The thompson selection samples every candidate from the generating version: "
                                 "clear `sources` first.")
        try:
            self.wb.model_version(BASE_VERSION)
        except UserError:
            raise WorkbenchError("The thompson selection embeds candidates with the base model, and this home has "
                                 "none: run `rlhf init`.") from None

    def _checked_reward_models(self, chosen) -> list[str] | None:
        if chosen is None or len(chosen) == 0:
            return None  # the newest reward model
        if isinstance(chosen, str):
            chosen = [chosen]
        chosen = list(dict.fromkeys(chosen))
        if len(chosen) > MAX_REWARD_MODELS:
            raise WorkbenchError(f"Choose one or two reward models, not {len(chosen)}.")
        return [self.wb.reward_model(name).name for name in chosen]

    def reward_versions(self, config: QueueConfig | None = None) -> list[str]:
        """The reward version(s) the queue uses: those chosen, else the newest; [] when
        there is none."""
        config = config or self.config
        if config.reward_models:
            return list(config.reward_models)
        newest = reward_scores.newest_reward(self.wb.store.cursor())
        return [newest] if newest else []

    def scoring_wanted(self, config: QueueConfig | None = None) -> list[str]:
        """The reward versions the background scorer should score the queue with: none
        unless suggestions or the 'uncertain' selection are on."""
        config = config or self.config
        return self.reward_versions(config) if config.suggest or config.selection == "uncertain" else []

    def _checked_prompt_sets(self, chosen) -> list[str] | None:
        if chosen is None or len(chosen) == 0:
            return None  # no restriction
        if isinstance(chosen, str):
            chosen = [chosen]
        known = prompts.set_names(self.wb.store.cursor())
        for name in chosen:
            require_prompt_set(name, known, WorkbenchError)
        return list(dict.fromkeys(chosen))

    # -- handing out items --------------------------------------------------------

    def next_item(self, user: User, config: QueueConfig | None = None) -> Item | None:
        """The item this user should work on now, claimed for them; None when the queue
        holds nothing for them. A reload gives back the item they already hold. `config`:
        the queue configuration when the caller has read it for this request already."""
        require_role(user, *ROLES)
        config = config or self.config
        with _WRITE_LOCK, self.wb.store.transaction() as cur:
            handed = self._hand_out(cur, user, config)
        return self._item(handed, config)

    def _hand_out(self, cur, user: User, config: QueueConfig, guidelines_version: int | None = None) -> _Handed | None:
        """Choose, claim and hand out the next item, in the caller's transaction and under its
        lock; `guidelines_version` when the caller has read it in this transaction."""
        rewards = self.scoring_wanted(config)
        chosen = self._choose(cur, user.name, config, rewards if config.selection == "uncertain" else None)
        if chosen is None:
            return None
        token = queue.hand_out(cur, chosen.comparison_id, user.name, secrets.token_hex(16), chosen.fresh)
        suggestion = None
        # a gold item gets no suggestion: it would answer the item annotators are checked on
        if config.suggest and rewards and not queue.is_gold(cur, chosen.comparison_id):
            suggestion = self._suggestion(cur, chosen.comparison_id, user.name, rewards[0])
        progress = self._progress(cur, user, config, chosen.open_for_me)
        if guidelines_version is None:
            guidelines_version = guidelines.current(cur)[0]
        return _Handed(chosen.comparison_id, token, progress, guidelines_version, suggestion)

    def _suggestion(self, cur, comparison_id: int, annotator: str, reward_version: str) -> dict | None:
        """The stored suggestion of `reward_version` for the comparison, recorded as shown to
        the annotator; None when it has not scored the comparison yet."""
        found = reward_scores.suggestion(cur, comparison_id, reward_version)
        if found is None:
            return None
        reward_scores.record_shown(cur, comparison_id, annotator, reward_version, found["ranking"])
        return {"ranking": found["ranking"], "reward_version": reward_version}

    def _choose(self, cur, annotator: str, config: QueueConfig,
                uncertain_by: list[str] | None = None) -> _Chosen | None:
        """The comparison to hand out, claimed: the one they hold, a gold item, or the queue's next."""
        held = queue.own_claim(cur, annotator, config.claim_ttl_s)
        if held is not None:
            queue.claim(cur, held, annotator, held=True)  # refresh: they are still on it
            return _Chosen(held, fresh=False)
        # Gold items come unannounced, at about gold_rate among the items handed out, and
        # in random order: the oldest first would let annotators who compare notes spot them.
        if config.gold_rate > 0 and self.rng.random() < config.gold_rate:
            golds = queue.gold_for(cur, annotator)
            if golds:
                gold = self.rng.choice(golds)
                queue.claim(cur, gold, annotator)
                return _Chosen(gold, fresh=True)
        found = queue.next_for(cur, annotator, config.overlap, config.prompt_sets, config.model_version,
                               config.claim_ttl_s, uncertain_by=uncertain_by or None)
        return None if found is None else _Chosen(found.comparison_id, fresh=True, open_for_me=found.open_for_me)

    def _item(self, handed: _Handed | None, config: QueueConfig) -> Item | None:
        if handed is None:
            return None
        comparison = self.wb.comparison(handed.comparison_id)
        return Item(
            comparison_id=comparison.id,
            handout=handed.token,
            prompt=comparison.prompt,
            messages=comparison.messages,
            letters=letters(comparison.k),
            completions=[c["text"] for c in comparison.completions],
            guidelines_version=handed.guidelines_version,
            dimensions=config.dimensions,
            progress=handed.progress,
            suggestion=handed.suggestion,
        )

    # -- rankings and skips -------------------------------------------------------

    def submit(self, user: User, s: Submission) -> dict:
        """Check and store one ranking of an item handed to this user, with everything that
        came with it, in one transaction; the time spent is measured from the hand-out. The
        same ranking sent again is answered 'already_stored' and stores nothing; a different
        ranking of an item already ranked, or a ranking of a skipped one, is refused."""
        config = self.config
        result, _ = self._store(user, self._checked(user, s, config), config, hand_out=False)
        return {**result, "progress": self.progress(user, config)}

    def submit_and_next(self, user: User, s: Submission) -> tuple[dict, Item | None]:
        """`submit`, then `next_item`, as the page does after every ranking, in one
        transaction (one commit, ~2 ms of DuckDB's, instead of two): one read of the queue
        configuration and of the guidelines version, and one count of the user's progress,
        for both. A refused ranking hands out nothing."""
        config = self.config
        result, handed = self._store(user, self._checked(user, s, config), config, hand_out=True)
        item = self._item(handed, config)
        return {**result, "progress": item.progress if item else self.progress(user, config)}, item

    def _checked(self, user: User, s: Submission, config: QueueConfig) -> _Checked:
        """Everything about a submission that needs no lock: its sizes, the user's role, the
        hand-out being theirs, the ranking, labels, ratings and texts."""
        for what, text, cap in (("ranking", s.ranking, LIMITS.ranking_chars), ("better answer", s.better_answer,
                                MAX_TEXT), ("comment", s.comment, MAX_TEXT)):
            check_text(what, text, cap)  # before anything parses them (rlhf.limits)
        require_role(user, *ROLES)
        handout = self._own_handout(user, s.handout)
        return _Checked(
            handout=handout,
            ranking=parse_ranking(s.ranking, handout.k),
            labels=_checked_labels(s.labels, handout.k),
            ratings=_checked_ratings(s.ratings, handout.k, config.dimensions),
            client_seconds=_checked_seconds(s.client_seconds),
            better_answer=_clean_text("better answer", s.better_answer),
            comment=_clean_text("comment", s.comment),
            none_acceptable=bool(s.none_acceptable),
        )

    def _store(self, user: User, checked: _Checked, config: QueueConfig,
               hand_out: bool) -> tuple[dict, _Handed | None]:
        """Store a checked ranking in one transaction, with (`hand_out`) the next item handed
        out in it too. An open hand-out has been neither ranked nor skipped (ranking or
        skipping closes it), so the two look-ups are made only for a closed one, or again, in
        a new transaction, when the store refuses a second ranking (one made another way: an
        import under the same name) or the hand-out was closed since it was read (a skip or
        the same ranking sent twice at once)."""
        try:
            return self._store_in_one(user, checked, config, hand_out, look=checked.handout.closed)
        except (feedback.DuplicateRanking, _LookAgain):
            if checked.handout.closed:
                raise  # looked up under the lock: cannot happen
            return self._store_in_one(user, checked, config, hand_out, look=True)

    def _store_in_one(self, user: User, checked: _Checked, config: QueueConfig, hand_out: bool,
                      look: bool) -> tuple[dict, _Handed | None]:
        with _WRITE_LOCK, self.wb.store.transaction() as tx:
            result, guidelines_version = self._store_ranking(tx, user, checked, look)
            handed = self._hand_out(tx, user, config, guidelines_version) if hand_out else None
        return result, handed

    def _store_ranking(self, tx, user: User, c: _Checked, look: bool) -> tuple[dict, int | None]:
        """Store a checked ranking, in the caller's transaction and under its lock: the reply
        and the guidelines version it recorded (None when nothing was stored). `look`: first
        look for a ranking or skip of theirs."""
        handout, ranking = c.handout, c.ranking
        if look:
            existing = feedback.ranking_by(tx, handout.comparison_id, user.name)
            if existing is not None:
                return self._already_ranked(existing, ranking), None
            if feedback.skip_reason(tx, handout.comparison_id, user.name) is not None:
                raise WorkbenchError("You skipped this item, so it cannot be ranked: ask for the next one.")
        now = datetime.now()
        guidelines_version = guidelines.current(tx)[0]
        ranking_id = feedback.add_ranking(
            tx, handout.comparison_id, user.name, ranking.canonical, ranking.ranks(), source="human",
            seconds_spent=_seconds_since(handout.handed_at, now), comment=c.comment,
            better_answer=c.better_answer, guidelines_version=guidelines_version,
            none_acceptable=c.none_acceptable, checked=True,
        )
        feedback.add_labels(tx, ranking_id, handout.comparison_id, c.labels)
        feedback.add_ratings(tx, ranking_id, handout.comparison_id, c.ratings)
        queue.release(tx, handout.comparison_id, user.name)
        if not queue.close_handout(tx, handout.token, c.client_seconds, now) and not look:
            raise _LookAgain()  # ranked or skipped since it was read: this transaction is rolled back
        return {"status": "stored", "ranking": ranking.canonical, "ranking_id": ranking_id}, guidelines_version

    @staticmethod
    def _already_ranked(existing: str, ranking: Ranking) -> dict:
        if existing != ranking.canonical:
            raise WorkbenchError(f"You already ranked this item as '{existing}'; rankings are never overwritten.")
        return {"status": "already_stored", "ranking": existing}

    def skip(self, user: User, handout: str, reason: str) -> dict:
        """Pass on an item handed to this user, saying why; it is not offered to them again."""
        require_role(user, *ROLES)
        found = self._own_handout(user, handout)
        reason = _clean_text("reason", reason)
        if reason is None:
            raise WorkbenchError("Say why you skip this comparison (for example: 'I cannot judge code').")
        with _WRITE_LOCK:
            cur = self.wb.store.cursor()
            ranked = feedback.ranking_by(cur, found.comparison_id, user.name)
            if ranked is not None:
                raise WorkbenchError(f"You already ranked this item as '{ranked}'; it cannot be skipped.")
            if feedback.skip_reason(cur, found.comparison_id, user.name) is not None:
                return {"status": "already_skipped", "progress": self.progress(user)}
            with self.wb.store.transaction() as tx:
                feedback.add_skip(tx, found.comparison_id, user.name, reason)
                queue.release(tx, found.comparison_id, user.name)
                queue.close_handout(tx, found.token)
        return {"status": "skipped", "progress": self.progress(user)}

    def _own_handout(self, user: User, token) -> queue.Handout:
        """The hand-out `token` names, when it was handed to `user`; anything else (an id, a
        token of someone else's, a made-up one) is refused with the same sentence, so that
        the answer tells nothing about other people's items."""
        found = queue.handout_by_token(self.wb.store.cursor(), token) \
            if isinstance(token, str) and 0 < len(token) <= MAX_TOKEN else None
        if found is None or found.annotator != user.name:
            raise WorkbenchError("That item was not handed to you: rank or skip only the item the queue gave you "
                                 "(ask for the next comparison).")
        return found

    # -- guidelines and gold ------------------------------------------------------

    def guidelines(self) -> tuple[int, str]:
        """(version, Markdown text) of the current guidelines; version 0 is the built-in text."""
        return guidelines.current(self.wb.store.cursor())

    def save_guidelines(self, user: User, text: str) -> int:
        """Store a new version of the guidelines (researchers and admins); returns its number."""
        require_role(user, *STAFF)
        if not text or not text.strip():
            raise WorkbenchError("The guidelines cannot be empty.")
        with _WRITE_LOCK, self.wb.store.transaction() as cur:
            return guidelines.save(cur, text.strip() + "\n", user.name)

    def mark_gold(self, user: User, comparison_id: int, ranking: str | None) -> str | None:
        """Make a comparison a gold item with its expected ranking, or (None) unmark it;
        returns the canonical ranking stored."""
        require_role(user, *STAFF)
        comparison = self.wb.comparison(comparison_id)
        canonical = parse_ranking(ranking, comparison.k).canonical if ranking and ranking.strip() else None
        with _WRITE_LOCK, self.wb.store.transaction() as cur:
            queue.set_gold(cur, comparison.id, canonical)
        return canonical

    def gold_ids(self) -> list[int]:
        return queue.gold_ids(self.wb.store.cursor())

    def gold_agreement(self, user: User) -> pd.DataFrame:
        """Per annotator: gold items ranked and exact matches (researchers and admins)."""
        require_role(user, *STAFF)
        return queue.gold_agreement(self.wb.store.cursor())

    # -- figures ------------------------------------------------------------------

    def progress(self, user: User, config: QueueConfig | None = None) -> dict:
        """{done_today, done_total, skipped, remaining_for_me} for this user."""
        config = config or self.config
        return self._progress(self.wb.store.cursor(), user, config)

    @staticmethod
    def _progress(cur, user: User, config: QueueConfig, open_for_me: int | None = None) -> dict:
        """`progress`; `open_for_me` when the queue has just counted it while choosing."""
        if open_for_me is None:
            return queue.progress(cur, user.name, config.overlap, config.prompt_sets, config.model_version,
                                  config.claim_ttl_s)
        return {**queue.done_counts(cur, user.name), "remaining_for_me": open_for_me}

    def ready(self) -> int:
        """Comparisons that still have a free slot for someone (the pre-generator's gauge)."""
        config = self.config
        return queue.ready_count(self.wb.store.cursor(), config.overlap, config.prompt_sets,
                                 config.model_version, config.claim_ttl_s)


# -- checks on what a client sends ----------------------------------------------------------


def _checked_dimensions(dimensions) -> tuple[str, ...]:
    if isinstance(dimensions, str) or not all(isinstance(d, str) and d.strip() for d in dimensions):
        raise WorkbenchError("dimensions must be a list of non-empty names, such as ['helpfulness', 'honesty'].")
    cleaned = tuple(d.strip() for d in dimensions)
    if len(set(cleaned)) != len(cleaned):
        raise WorkbenchError("dimensions must not name the same dimension twice.")
    return cleaned


def _checked_letter(letter, k: int) -> str:
    if not isinstance(letter, str) or letter.upper() not in letters(k):
        raise WorkbenchError(f"'{letter}' is not one of the shown completions {letters(k)}.")
    return letter.upper()


def _checked_labels(labels: dict | None, k: int) -> dict[str, dict]:
    """{letter: {"good": bool | None, "flag": str | None}}; an empty flag means none."""
    checked = {}
    for letter, label in (labels or {}).items():
        letter = _checked_letter(letter, k)
        if not isinstance(label, dict) or set(label) - {"good", "flag"}:
            raise WorkbenchError(f"The label of {letter} must have only 'good' and 'flag'.")
        good, flag = label.get("good"), label.get("flag") or None
        if good is not None and not isinstance(good, bool):
            raise WorkbenchError(f"'good' for {letter} must be true, false or empty, not {good!r}.")
        if flag is not None and flag not in FLAGS:
            raise WorkbenchError(f"'{flag}' is not a flag: use {', '.join(FLAGS)}.")
        checked[letter] = {"good": good, "flag": flag}
    return checked


def _checked_ratings(ratings: dict | None, k: int, dimensions: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """{letter: {dimension: 1..5}} for the configured dimensions only; an empty score means unrated."""
    checked = {}
    for letter, scores in (ratings or {}).items():
        letter = _checked_letter(letter, k)
        if not isinstance(scores, dict):
            raise WorkbenchError(f"The ratings of {letter} must map dimensions to scores.")
        checked[letter] = {}
        for dimension, score in scores.items():
            if dimension not in dimensions:
                raise WorkbenchError(f"'{dimension}' is not a rated dimension: use {', '.join(dimensions)}.")
            if score is None:
                continue
            require_whole(f"The {dimension} score of {letter}", score, min(LIKERT), max(LIKERT), WorkbenchError)
            checked[letter][dimension] = score
    return checked


def _seconds_since(start: datetime, now: datetime) -> float:
    return round(max(0.0, (now - start).total_seconds()), 2)


def _checked_seconds(seconds) -> float | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
        raise WorkbenchError(f"The client-reported time spent must be a number of seconds, not {seconds!r}.")
    return float(seconds)


def _clean_text(what: str, text) -> str | None:
    """Stripped text, None when empty; refuses what is not text or is absurdly long."""
    if text is None:
        return None
    if not isinstance(text, str):
        raise WorkbenchError(f"The {what} must be text.")
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise WorkbenchError(f"The {what} is longer than {MAX_TEXT} characters.")
    return text or None
