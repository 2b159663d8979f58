"""Comparing model versions: side by side, in blind arena battles, and automatically.

The service behind the Compare tab, its API endpoints and `rlhf compare`:

- **side by side**: one prompt (typed, or from a prompt set) answered by two policy
  versions, with each answer's reward-model score when a reward version is chosen;
- **arena**: a blind battle. The pair is the least-played pair of policy versions (by
  the stored votes) unless the researcher names it; the two answers are shown in a
  random order without their names; the vote (the left answer ``a``, the right ``b``,
  ``tie`` or ``both_bad``) is stored as an arena battle with the voter, and only then
  are the names revealed. An open battle lives in this process (keyed by a random
  token, owned by the user who opened it) until it is voted on;
- **leaderboard**: Bradley-Terry ratings with bootstrap intervals and the win-rate
  matrix over every stored vote (:mod:`rlhf.preference.arena`); the raw votes export as CSV or JSONL;
- **evaluation**: :func:`rlhf.compare.evaluate.evaluate`, stored and listed.

Models are loaded once per directory and run one at a time (`ModelCache`), in the
server's research sampler process when one is given. Completions
are text: whatever shows them must show them as text.
"""

from __future__ import annotations

import itertools
import random
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rlhf.checks import require_prompt_set, require_whole, typed_whole
from rlhf.preference.messages import as_messages
from rlhf.preference import arena
from rlhf.compare import evaluate, summaries
from rlhf.modeling.model_cache import ModelCache
from rlhf.modeling import measure
from rlhf.auth import User
from rlhf.errors import UserError
from rlhf.limits import LIMITS, check_text
from rlhf.modeling.sampling import SamplingParams
from rlhf.collect.workbench import Workbench
from rlhf.versions import versions_of
from storage import arena as battles_store
from storage import evaluations, prompts

if TYPE_CHECKING:
    from rlhf.collect.sampler_process import SamplerProcess

VOTES = battles_store.VOTES
VOTE_WORDS = {"a": "A is better", "b": "B is better", "tie": "a tie", "both_bad": "both are bad"}
VOTE_ALIASES = {"a": "a", "b": "b", "tie": "tie", "both_bad": "both_bad", "both bad": "both_bad",
                "bothbad": "both_bad", "left": "a", "right": "b"}
EXPORT_FORMATS = ("csv", "jsonl")
DEFAULT_MAX_NEW_TOKENS = 128
MAX_NEW_TOKENS = 1024
MAX_EVALUATION_PROMPTS = 1000  # in one evaluation run by the server (the CLI has no limit)
OPEN_BATTLES = 1000  # open battles kept per process; the oldest is dropped past this
CSV_FORMULA_MARKS = ("=", "+", "-", "@", "\t", "\r")


class CompareError(UserError):
    """A comparison refused, in one sentence."""


@dataclass(frozen=True)
class Answer:
    version: str
    text: str
    num_tokens: int
    finish_reason: str  # 'eos' or 'length'
    score: float | None = None


@dataclass(frozen=True)
class Prompt:
    messages: list[dict]
    prompt_id: int | None = None
    prompt_set: str | None = None

    @property
    def text(self) -> str:
        """The conversation as one text: the last user turn alone, or every turn named."""
        if len(self.messages) == 1:
            return self.messages[0]["content"]
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in self.messages)


@dataclass
class OpenBattle:
    token: str
    voter: str
    prompt: Prompt
    left: Answer   # shown as A
    right: Answer  # shown as B
    chosen_by: str  # 'least_played' or 'researcher'


def normalise_vote(vote: str) -> str:
    key = str(vote or "").strip().lower().replace("-", "_")
    if key not in VOTE_ALIASES:
        raise CompareError(f"A vote is A, B, tie or both_bad, not {vote!r}.")
    return VOTE_ALIASES[key]


def csv_safe(value: Any) -> Any:
    """A text cell a spreadsheet would take for a formula gets a leading apostrophe
    (OWASP's advice against CSV injection); JSONL keeps the text exactly."""
    if isinstance(value, str) and value.startswith(CSV_FORMULA_MARKS):
        return "'" + value
    return value


class Compare:
    def __init__(self, wb: Workbench, cache: ModelCache | None = None, rng: random.Random | None = None,
                 sampler: "SamplerProcess | None" = None):
        """`sampler` samples elsewhere (the server: a child process of its own, since side
        by side, battles and evaluations take seconds to minutes and must not hold the
        server's interpreter lock or wait behind pre-generation); by default here, with
        `cache`."""
        self.wb = wb
        self.sampler = sampler
        self.cache = cache or ModelCache()
        self.rng = rng or random.Random(secrets.randbits(64))
        self._open: OrderedDict[str, OpenBattle] = OrderedDict()
        self._lock = threading.Lock()  # guards the open battles and the rng

    # -- what there is ----------------------------------------------------------------

    def versions(self, kind: str = "policy") -> list[str]:
        return versions_of(self.wb.models(), kind)

    def prompt_sets(self) -> list[str]:
        return prompts.set_names(self.wb.store.cursor())

    def set_prompts(self, prompt_set: str, limit: int | None = 200) -> pd.DataFrame:
        """Prompts of a set (id, text), oldest first, for choosing one."""
        require_prompt_set(prompt_set, self.prompt_sets(), CompareError)
        frame = prompts.in_sets(self.wb.store.cursor(), [prompt_set])
        frame = frame.assign(text=[Prompt(list(m)).text for m in frame["messages"]])[["id", "text"]]
        return frame.head(limit) if limit is not None else frame

    def _policy(self, name: str | None, what: str) -> str:
        if not name or not str(name).strip():
            raise CompareError(f"Choose {what}.")
        return self.wb.model_version(str(name).strip()).policy(what).name

    def _reward(self, name: str | None) -> str | None:
        if name is None or not str(name).strip():
            return None
        return self.wb.reward_model(str(name).strip()).name

    def prompt(self, text: str | None = None, prompt_id: int | None = None,
               prompt_set: str | None = None) -> Prompt:
        """A typed prompt, a stored prompt by id, or (with only `prompt_set`) a random prompt
        of that set; typed text wins when several are given."""
        if text is not None and str(text).strip():
            text = str(text)
            check_text("prompt", text, LIMITS.prompt_chars)
            return Prompt(as_messages(text))
        cur = self.wb.store.cursor()
        if prompt_id is not None:
            frame = prompts.by_id(cur, prompt_id)
            if frame.empty:
                raise CompareError(f"There is no prompt {prompt_id}.")
        elif prompt_set:
            require_prompt_set(prompt_set, self.prompt_sets(), CompareError)
            ids = prompts.in_sets(cur, [prompt_set])["id"].tolist()
            if not ids:
                raise CompareError(f"The prompt set '{prompt_set}' has no prompts.")
            with self._lock:
                chosen = self.rng.choice(ids)
            frame = prompts.by_id(cur, chosen)
        else:
            raise CompareError("Type a prompt, or choose one from a prompt set.")
        row = frame.iloc[0]
        return Prompt(row["messages"], int(row["id"]), row["prompt_set"])

    # -- sampling -----------------------------------------------------------------------

    def _params(self, max_new_tokens: int | None, temperature: float | None, seed: int | None) -> SamplingParams:
        defaults = SamplingParams()
        tokens = DEFAULT_MAX_NEW_TOKENS if max_new_tokens in (None, "") else typed_whole(max_new_tokens)
        require_whole("max_new_tokens", tokens, 1, MAX_NEW_TOKENS, CompareError)
        try:
            temperature = defaults.temperature if temperature in (None, "") else float(temperature)
        except (TypeError, ValueError):
            temperature = float("nan")
        if not 0 <= temperature <= 5:
            raise CompareError(f"The temperature must be a number from 0 to 5, not {temperature!r}.")
        return SamplingParams(temperature=temperature, top_p=defaults.top_p, max_new_tokens=tokens,
                              seed=None if seed in (None, "") else int(seed))

    def _answers(self, versions: list[str], prompt: Prompt, params: SamplingParams,
                 reward: str | None = None) -> list[Answer]:
        """One answer from each version (each seeded alike when a seed is given), scored
        by `reward` when named (`rlhf.modeling.measure.answer`, in the sampler when there is one)."""
        dirs = [self.wb.model_version(version).path for version in versions]
        reward_dir = None if reward is None else self.wb.model_version(reward).path
        rows = (self.sampler.answer(dirs, prompt.messages, params, reward_dir) if self.sampler is not None
                else measure.answer(self.cache, dirs, prompt.messages, params, reward_dir))
        return [Answer(version, text, tokens, "eos" if done else "length", score)
                for version, (text, tokens, done, score) in zip(versions, rows)]

    def side_by_side(self, version_a: str, version_b: str, text: str | None = None, prompt_id: int | None = None,
                     prompt_set: str | None = None, reward: str | None = None, max_new_tokens: int | None = None,
                     temperature: float | None = None, seed: int | None = None) -> dict[str, Any]:
        """Both versions answer one prompt: {prompt, prompt_id, prompt_set, reward, a, b},
        each answer {version, text, num_tokens, finish_reason, score (None without a reward
        model)}."""
        names = [self._policy(version_a, "version A"), self._policy(version_b, "version B")]
        reward = self._reward(reward)
        params = self._params(max_new_tokens, temperature, seed)
        prompt = self.prompt(text, prompt_id, prompt_set)
        a, b = self._answers(names, prompt, params, reward)
        return {"prompt": prompt.text, "prompt_id": prompt.prompt_id, "prompt_set": prompt.prompt_set,
                "reward": reward, "a": vars(a), "b": vars(b)}

    # -- the arena ------------------------------------------------------------------------

    def pair_counts(self) -> pd.DataFrame:
        """Every pair of policy versions with its votes so far (vote_counts' columns),
        least played first; pairs never played have 0 battles."""
        counts = battles_store.vote_counts(self.wb.store.cursor())
        played = {(row.model_1, row.model_2): row for row in counts.itertuples(index=False)}
        rows = []
        for first, second in itertools.combinations(sorted(self.versions()), 2):
            found = played.get((first, second))
            rows.append({"model_1": first, "model_2": second, "battles": int(found.battles) if found else 0,
                         "wins_1": int(found.wins_1) if found else 0, "wins_2": int(found.wins_2) if found else 0,
                         "ties": int(found.ties) if found else 0, "both_bad": int(found.both_bad) if found else 0})
        frame = pd.DataFrame(rows, columns=["model_1", "model_2", "battles", "wins_1", "wins_2", "ties", "both_bad"])
        return frame.sort_values(["battles", "model_1", "model_2"], kind="stable", ignore_index=True)

    def next_pair(self) -> tuple[str, str]:
        """The least-played pair of policy versions (alphabetical among equals)."""
        counts = self.pair_counts()
        if counts.empty:
            raise CompareError("The arena needs two policy versions; there is only "
                               f"{', '.join(self.versions()) or 'none'}.")
        first = counts.iloc[0]
        return str(first["model_1"]), str(first["model_2"])

    def start_battle(self, user: User, version_a: str | None = None, version_b: str | None = None,
                     text: str | None = None, prompt_id: int | None = None, prompt_set: str | None = None,
                     max_new_tokens: int | None = None, temperature: float | None = None) -> dict[str, Any]:
        """Open a blind battle for `user`: {battle (its token), prompt, a, b (the answers'
        texts, in the order shown), chosen_by}; the versions stay hidden until the vote.
        With both versions named the researcher chose the pair, with neither it is the
        least-played pair. No prompt given: a random prompt of `prompt_set`, or of any set."""
        if bool(version_a) != bool(version_b):
            raise CompareError("Name both versions of the pair, or neither for the least-played pair.")
        if version_a:
            pair = [self._policy(version_a, "the first version"), self._policy(version_b, "the second version")]
            if pair[0] == pair[1]:
                raise CompareError("Choose two different versions for a battle.")
            chosen_by = "researcher"
        else:
            pair, chosen_by = list(self.next_pair()), "least_played"
        params = self._params(max_new_tokens, temperature, None)
        if not (text and str(text).strip()) and prompt_id is None and not prompt_set:
            sets = [name for name in self.prompt_sets() if prompts.count(self.wb.store.cursor(), name)]
            if not sets:
                raise CompareError("There are no prompts: type one, or import a prompt set.")
            with self._lock:
                prompt_set = self.rng.choice(sets)
        prompt = self.prompt(text, prompt_id, prompt_set)
        with self._lock:
            self.rng.shuffle(pair)
        left, right = self._answers(pair, prompt, params)
        battle = OpenBattle(secrets.token_urlsafe(16), user.name, prompt, left, right, chosen_by)
        with self._lock:
            self._open[battle.token] = battle
            while len(self._open) > OPEN_BATTLES:
                self._open.popitem(last=False)
        return {"battle": battle.token, "prompt": prompt.text, "prompt_id": prompt.prompt_id,
                "a": left.text, "b": right.text, "chosen_by": chosen_by}

    def vote(self, user: User, token: str, vote: str) -> dict[str, Any]:
        """Store `user`'s vote on their open battle and reveal it: {battle_id, vote,
        model_a, model_b (the versions shown as A and B), voter, prompt}."""
        vote = normalise_vote(vote)
        with self._lock:
            battle = self._open.get(str(token or ""))
            if battle is None:
                raise CompareError("This battle is not open (already voted on, or the server restarted): "
                                   "start a new one.")
            if battle.voter != user.name:
                raise CompareError("This battle was opened by someone else: start your own.")
            del self._open[battle.token]
        try:
            with self.wb.store.transaction() as cur:
                battle_id = battles_store.add_battle(
                    cur, battle.prompt.prompt_id, battle.prompt.text, battle.left.version, battle.right.version,
                    battle.left.text, battle.right.text, vote, user.name)
        except BaseException:
            with self._lock:  # not stored: the battle stays open for another try
                self._open[battle.token] = battle
            raise
        return {"battle_id": int(battle_id), "vote": vote, "model_a": battle.left.version,
                "model_b": battle.right.version, "voter": user.name, "prompt": battle.prompt.text,
                "chosen_by": battle.chosen_by}

    def battles(self) -> pd.DataFrame:
        """Every stored vote with its voter, oldest first (storage.arena.BATTLE_COLUMNS)."""
        return battles_store.battles(self.wb.store.cursor())

    def leaderboard(self, rounds: int = 1000, seed: int = 0) -> pd.DataFrame:
        frame = self.battles()
        return arena.leaderboard(frame, rounds=rounds, seed=seed)

    def win_rates(self) -> pd.DataFrame:
        return arena.win_rate_matrix(self.battles())

    def export_battles(self, out: str | Path, format: str | None = None) -> tuple[Path, int]:
        """Write every vote (with voter, prompt and both completions) to `out`, CSV or
        JSONL (by `format`, else by the file's extension); returns (path, rows)."""
        from rlhf.collect.formats import write_table

        out = Path(out)
        format = (format or out.suffix.lstrip(".")).lower()
        if format not in EXPORT_FORMATS:
            raise CompareError(f"Battles export as {' or '.join(EXPORT_FORMATS)}, not {format or 'no format'!r}.")
        frame = self.battles()
        frame = frame.assign(created_at=frame["created_at"].map(lambda t: t.isoformat() if pd.notna(t) else None))
        out.parent.mkdir(parents=True, exist_ok=True)
        if format == "csv":
            frame.map(csv_safe).to_csv(out, index=False)
        else:
            write_table(frame, out if out.suffix == ".jsonl" else out.with_suffix(".jsonl"))
            out = out if out.suffix == ".jsonl" else out.with_suffix(".jsonl")
        return out, len(frame)

    # -- automatic evaluation -----------------------------------------------------------------

    def evaluate(self, version_a: str, version_b: str, prompt_set: str | None = None, n: int = evaluate.DEFAULT_N,
                 reward: str | None = None, reference: str | None = None, seed: int = 0,
                 max_new_tokens: int = evaluate.DEFAULT_MAX_NEW_TOKENS, created_by: str | None = None) -> dict:
        """`rlhf.compare.evaluate.evaluate` on this workbench with this service's loaded models;
        the prompt set defaults to the default one, the reference to `base`."""
        from rlhf.home import BASE_VERSION
        from rlhf.collect.workbench import DEFAULT_PROMPT_SET

        names = [self._policy(version_a, "version A"), self._policy(version_b, "version B")]
        if not 1 <= int(n) <= MAX_EVALUATION_PROMPTS:
            raise CompareError(f"N must be from 1 to {MAX_EVALUATION_PROMPTS} prompts, not {n}.")
        if not 1 <= int(max_new_tokens) <= MAX_NEW_TOKENS:
            raise CompareError(f"max_new_tokens must be from 1 to {MAX_NEW_TOKENS}, not {max_new_tokens}.")
        return evaluate.evaluate(self.wb, names[0], names[1], prompt_set or DEFAULT_PROMPT_SET,
                                 reward_version=self._reward(reward), n=int(n), seed=int(seed),
                                 max_new_tokens=int(max_new_tokens), reference=reference or BASE_VERSION,
                                 cache=self.cache, created_by=created_by,
                                 measurer=self.sampler.evaluate if self.sampler is not None else None)

    def evaluations(self, version: str | None = None, limit: int | None = None) -> pd.DataFrame:
        """Stored evaluations as one flat table, newest first (rlhf.compare.summaries.flatten)."""
        return summaries.flatten(evaluations.list_evaluations(self.wb.store.cursor(), version, limit))

    def version_figures(self) -> pd.DataFrame:
        """Each side of every evaluation, one row per version (rlhf.compare.summaries.per_version)."""
        return summaries.per_version(evaluations.list_evaluations(self.wb.store.cursor()))
