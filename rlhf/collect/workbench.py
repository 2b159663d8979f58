"""The workbench's operations, shared by the CLI and the web app.

A `Workbench` owns the open store of one home. Every operation that writes checks all
of its input first and then writes in one transaction, so a refused operation leaves
the store exactly as it was. Errors meant for people are `WorkbenchError`,
`FormatError` or `RankingError`: one sentence each.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import secrets
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import pandas as pd

from rlhf import auth
from rlhf.checks import require_prompt_set, require_whole
from rlhf.collect import formats, imports
from rlhf.preference import pairs
from rlhf.preference.messages import as_messages
from rlhf.collect.formats import FormatError
from rlhf.errors import UserError
from rlhf.modeling.sampling import MAX_K, MIN_K, SamplingParams
from rlhf.home import BASE_VERSION, Home, ensure_default_model
from rlhf.modeling import hard_prompt
from rlhf.modeling.model_cache import ModelCache
from rlhf.preference.ranking import Ranking, RankingError, parse_ranking
from rlhf import versions
from rlhf.versions import ModelVersion
from storage import comparisons, feedback, models, prompts, rounds
from storage.comparisons import NewCompletion
from storage.db import Store, StoreLockedError
from storage.feedback import DuplicateRanking

log = logging.getLogger(__name__)

DEFAULT_PROMPT_SET = "default"
FIRST_ADMIN = "admin"
EXPORT_FORMATS = ("preference", "unpaired", "rankings")
SOURCE_ROLES = ("active", "previous", "base")  # besides an explicit version name
SOURCE_KEYS = ("version", "count", "temperature", "top_p")
SOURCES_EXAMPLE = '[{"version": "active", "count": 2}, {"version": "previous", "count": 1}, ' \
                  '{"version": "base", "count": 1, "temperature": 1.0}]'


class WorkbenchError(UserError):
    """A request the workbench refuses, in one sentence."""


class ServerHoldsStore(WorkbenchError):
    """Our own server owns the database; `url` says where it serves."""

    def __init__(self, message: str, url: str):
        super().__init__(message)
        self.url = url


@dataclass(frozen=True)
class InitReport:
    home: Path
    schema_version: int
    base_model: Path
    prompts_added: int
    prompt_set: str
    admin_password: str | None  # set when init created the first admin


@dataclass(frozen=True)
class PlannedSource:
    """One configured source, resolved: `count` completions from `version` sampled with `params`."""

    role: str  # as configured: 'active', 'previous', 'base' or a version name
    version: str
    count: int
    params: SamplingParams


@dataclass(frozen=True)
class SourcePlan:
    """Where the K completions of each new comparison come from, in the current round."""

    round: int
    primary: str  # the version whose not-yet-compared prompts are taken
    sources: tuple[PlannedSource, ...]
    notes: tuple[str, ...] = ()  # fallbacks worth telling a researcher about
    mixed: bool = False  # configured sources: completions are shuffled

    @property
    def k(self) -> int:
        return sum(source.count for source in self.sources)


@dataclass(frozen=True)
class ToolImport:
    """What `Workbench.import_from` stored."""

    rankings: int
    comparisons: int
    users_created: list[str]
    prompt_set: str


def check_sources(sources) -> list[dict] | None:
    """The queue's `sources` setting checked for shape and normalised: None (all K from
    the generating version) or a list of {version, count[, temperature][, top_p]} whose
    counts add up to a K from 2 to 8. Whether named versions exist is checked by
    `Workbench.check_sources`. Raises WorkbenchError, one sentence."""
    if sources is None or (isinstance(sources, (list, tuple)) and len(sources) == 0):
        return None
    if not isinstance(sources, (list, tuple)):
        raise WorkbenchError(f"sources must be a list of {{version, count}} entries, such as {SOURCES_EXAMPLE}.")
    checked = []
    for entry in sources:
        if not isinstance(entry, dict):
            raise WorkbenchError(f"Each source must be an object such as {{\"version\": \"active\", \"count\": 2}}, "
                                 f"not {entry!r}.")
        unknown = sorted(set(entry) - set(SOURCE_KEYS))
        if unknown:
            raise WorkbenchError(f"Unknown source setting '{unknown[0]}': use {', '.join(SOURCE_KEYS)}.")
        version = entry.get("version")
        if not isinstance(version, str) or not version.strip():
            raise WorkbenchError(f"Each source needs a version: {', '.join(SOURCE_ROLES)} or a version name.")
        version = version.strip()
        count = entry.get("count", 1)
        require_whole(f"The count of source '{version}'", count, 1, error=WorkbenchError)
        source = {"version": version, "count": count}
        for key, low, high in (("temperature", 0.0, 5.0), ("top_p", 0.0, 1.0)):
            if entry.get(key) is None:
                continue
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high \
                    or (key == "top_p" and value == 0):
                bounds = f"from {low:g} to {high:g}" if key == "temperature" else "above 0 and at most 1"
                raise WorkbenchError(f"The {key} of source '{version}' must be a number {bounds}, not {value!r}.")
            source[key] = float(value)
        checked.append(source)
    k = sum(source["count"] for source in checked)
    if not MIN_K <= k <= MAX_K:
        raise WorkbenchError(f"The sources add up to K={k} completions; K must be between {MIN_K} and {MAX_K}.")
    return checked


def default_prompts() -> list[dict]:
    """The prompt set shipped with the package: {"prompt", "category"} per line."""
    text = (resources.files("rlhf") / "data" / "default_prompts.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def open_store(home: Home) -> Store:
    """Open (and upgrade) the home's database; a held lock becomes a plain sentence that
    says how to reach the server holding it, when it is ours."""
    home.prepare()
    try:
        store = Store(home.db_path)
        home.protect_database()
        return store
    except StoreLockedError as error:
        server = home.running_server()
        if server and server.get("pid") == error.pid:
            raise ServerHoldsStore(
                f"A workbench server (PID {error.pid}) holds {home.db_path}: use it at {server['url']}"
                " or through its API, or stop it before running this command.", server["url"]
            ) from None
        raise WorkbenchError(str(error)) from None


def _sampling_groups(plan: SourcePlan) -> dict[tuple[str, SamplingParams], int]:
    """Sources with the same version and settings sampled in one call: {(version, params): count},
    in the order the sources are configured."""
    groups: dict[tuple[str, SamplingParams], int] = {}
    for source in plan.sources:
        key = (source.version, source.params)
        groups[key] = groups.get(key, 0) + source.count
    return groups


def _shuffler(seed: int | None, prompt_id: int, round: int) -> random.Random:
    """The generator that orders one mixed comparison: reproducible with a sampling seed,
    unpredictable without one."""
    if seed is None:
        return random.Random(secrets.randbits(64))
    return random.Random(f"{seed}:{round}:{prompt_id}")


class Workbench:
    def __init__(self, home: Home, store: Store | None = None):
        self.home = home
        self.store = store or open_store(home)
        self._policies = ModelCache()  # policies sampled in this process (the CLI's generate)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "Workbench":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- set-up -----------------------------------------------------------------

    def init(self, admin_password: str | None = None) -> InitReport:
        """Create or upgrade the home: the database, the base model, the default prompts,
        and the first admin (with `admin_password`, else a random one shown once)."""
        from rlhf.modeling.models import DEFAULT_MODEL_NAME

        base_dir = ensure_default_model(self.home)
        with self.store.transaction() as cur:
            if models.get(cur, BASE_VERSION) is None:
                models.register(
                    cur, BASE_VERSION, "policy", base_model=DEFAULT_MODEL_NAME,
                    path=str(base_dir.relative_to(self.home.root)), method="import", status="active",
                )
            rows = default_prompts()
            added = prompts.add_prompts(
                cur, DEFAULT_PROMPT_SET, [as_messages(r["prompt"]) for r in rows],
                source="default", categories=[r.get("category") for r in rows],
            )
        return InitReport(self.home.root, self.store.schema_version(), base_dir, added, DEFAULT_PROMPT_SET,
                          self._first_admin(admin_password))

    def _first_admin(self, password: str | None) -> str | None:
        """Create the user `admin` when the store has no admin, with `password` or else a
        random one; returns the random one (shown once, so it must be replaced at the first
        sign-in), or None when an admin exists or the password was chosen."""
        from rlhf import auth

        if auth.count_admins(self.store) > 0:
            return None
        if password is not None:
            auth.create_user(self.store, FIRST_ADMIN, "admin", password)
            return None
        password = secrets.token_urlsafe(12)
        auth.create_user(self.store, FIRST_ADMIN, "admin", password, must_change_password=True)
        return password

    # -- prompts ----------------------------------------------------------------

    def import_prompts(self, path: str | Path, prompt_set: str | None = None) -> int:
        """Import a prompt file (see `formats.read_prompt_file`); returns how many were new."""
        frame = formats.read_prompt_file(path)
        conversations = [
            list(messages) if messages is not None else as_messages(text)
            for text, messages in zip(frame["prompt"], frame["messages"])
        ]
        with self.store.transaction() as cur:
            return prompts.add_prompts(cur, prompt_set or Path(path).name.split(".")[0], conversations, source=str(path))

    def prompt_sets(self) -> pd.DataFrame:
        return prompts.set_counts(self.store.cursor())

    # -- models -----------------------------------------------------------------

    def model_version(self, name: str | None) -> ModelVersion:
        """A registered version by name; None means the active policy."""
        cur = self.store.cursor()
        known = ", ".join(models.names(cur))
        if not known:
            raise WorkbenchError("There are no model versions yet: run `rlhf init`.")
        name = name or models.active_policy(cur)
        if name is None:
            raise WorkbenchError(f"No policy is active (known versions: {known}): promote one or name a version.")
        return versions.lookup(cur, self.home.root, name)

    def models(self) -> pd.DataFrame:
        """Every version with its lineage; `system_prompt` and `template` are a prompt
        version's texts ("" for others and where it has none)."""
        frame = models.list_versions(self.store.cursor())
        prompts_ = [self._prompt(path) for path in frame["path"]]
        frame["system_prompt"] = [(p and p.system_prompt) or "" for p in prompts_]
        frame["template"] = [(p and p.template) or "" for p in prompts_]
        return frame

    def _prompt(self, path: str) -> hard_prompt.HardPrompt | None:
        directory = self.home.root / path
        return hard_prompt.read(directory) if hard_prompt.is_prompt_version(directory) else None

    def add_prompt_version(self, name: str, parent: str, system_prompt: str | None = None,
                           template: str | None = None) -> ModelVersion:
        """Register `name`: the policy `parent`'s weights plus `system_prompt`, given before
        every prompt it answers, and/or `template` around the user's prompt
        (`rlhf.modeling.hard_prompt`); no training. Bad input is refused in one sentence
        with nothing written."""
        name = hard_prompt.check_name(name)
        text, template = hard_prompt.check_prompt(system_prompt, template)
        if not str(parent or "").strip():
            raise WorkbenchError("Name the parent version whose weights the prompt version uses.")
        source = self.model_version(str(parent).strip()).policy("the parent of a prompt version")
        cur = self.store.cursor()
        if models.get(cur, name) is not None:
            raise WorkbenchError(f"There is already a model version '{name}'; choose another name.")
        directory = self.home.model_dir(name)
        if directory.exists():
            raise WorkbenchError(f"{directory} already exists; choose another name.")
        hard_prompt.write(directory, hard_prompt.HardPrompt(source.path.resolve(), text, template))
        try:
            with self.store.transaction() as cur:
                base = models.get(cur, source.name)["base_model"]
                models.register(cur, name, "policy", base_model=base, method=hard_prompt.METHOD, parent=source.name,
                                path=str(directory.relative_to(self.home.root)))
        except Exception:
            shutil.rmtree(directory, ignore_errors=True)
            raise
        return self.model_version(name)

    def promote(self, name: str) -> int:
        """Make a policy version the active one: the queue's new comparisons come from it,
        in the next round (promoting the active policy again starts none). Returns the
        round's number."""
        version = self.model_version(name).policy("the active version")
        with self.store.transaction() as cur:
            return models.promote(cur, version.name)

    def current_round(self) -> rounds.Round:
        return rounds.current(self.store.cursor())

    def list_rounds(self) -> pd.DataFrame:
        """round, policy (the active version of the round), started_at."""
        return rounds.list_rounds(self.store.cursor())

    def reward_model(self, name: str | None, purpose: str = "the reward version") -> ModelVersion:
        """A reward version by name; None means the newest."""
        from storage.scores import newest_reward

        name = name or newest_reward(self.store.cursor())
        if name is None:
            raise WorkbenchError("There is no reward model yet: train one with `rlhf train reward`.")
        return self.model_version(name).reward(purpose)

    def score(self, reward: str | None, comparison_ids: list[int] | None = None, limit: int = 10) -> pd.DataFrame:
        """Reward-model scores of stored completions: one row per completion (comparison_id,
        letter, model_version, score, text), the named comparisons or the newest `limit`."""
        from rlhf.modeling.scoring import RewardScorer

        version = self.reward_model(reward)
        ids = comparison_ids or list(self.comparisons(limit=limit)["id"])
        rows = []
        for comparison_id in ids:
            found = self.comparison(int(comparison_id))
            rows += [{"comparison_id": found.id, "letter": c["letter"], "model_version": c["model_version"],
                      "text": c["text"], "messages": found.messages} for c in found.completions]
        frame = pd.DataFrame(rows, columns=["comparison_id", "letter", "model_version", "text", "messages"])
        if frame.empty:
            return frame.drop(columns=["messages"]).assign(score=[])
        scorer = RewardScorer(version.path)
        frame["score"] = scorer.score(list(frame["messages"]), list(frame["text"]))
        return frame[["comparison_id", "letter", "model_version", "score", "text"]]

    def _sample_here(self, model_dir: Path, conversations: list[list[dict]], k: int, params: SamplingParams):
        """Sample in this process, with the recently used models kept loaded."""
        from rlhf.modeling.generate import sample  # torch is imported by the commands that sample

        return sample(self._policies.policy(model_dir), conversations, k=k, params=params)

    # -- comparisons ------------------------------------------------------------

    def _policy(self, name: str) -> ModelVersion:
        return self.model_version(name).policy("a source of completions")

    def check_sources(self, sources) -> list[dict] | None:
        """`check_sources` plus: every named version exists and is a policy."""
        checked = check_sources(sources)
        for source in checked or []:
            if source["version"] not in SOURCE_ROLES:
                self._policy(source["version"])
        return checked

    def plan_sources(self, sources=None, model_version: str | None = None, k: int = 4,
                     params: SamplingParams = SamplingParams()) -> SourcePlan:
        """Resolve the sources for the current round. 'active' is `model_version` when
        given, else the active policy; 'previous' is the policy active in the round before
        (in round 1 there is none: the active one stands in, and a note says so); 'base'
        is the base version. No sources: all K from the generating version."""
        chosen = self._policy(model_version) if model_version else self.model_version(None)
        cur = self.store.cursor()
        number = rounds.current(cur).number
        if sources is None or len(sources) == 0:
            if not MIN_K <= k <= MAX_K:
                raise WorkbenchError(f"K must be between {MIN_K} and {MAX_K}, not {k}.")
            return SourcePlan(number, chosen.name, (PlannedSource("active", chosen.name, k, params),))
        notes, planned = [], []
        for source in self.check_sources(sources):
            role = source["version"]
            if role == "active":
                version = chosen.name
            elif role == "previous":
                version = rounds.previous_policy(cur)
                if version is None:
                    version = chosen.name
                    notes.append(f"Round {number} has no previous round: the 'previous' completions come from "
                                 f"{version} instead.")
            elif role == "base":
                version = self._policy(BASE_VERSION).name
            else:
                version = role
            overrides = {key: source[key] for key in ("temperature", "top_p") if key in source}
            planned.append(PlannedSource(role, version, source["count"], dataclasses.replace(params, **overrides)))
        versions = [source.version for source in planned]
        primary = chosen.name if chosen.name in versions else versions[0]
        return SourcePlan(number, primary, tuple(planned), tuple(notes), mixed=True)

    def generate(
        self,
        prompt_set: str | None = None,
        n: int = 8,
        k: int = 4,
        model_version: str | None = None,
        params: SamplingParams = SamplingParams(),
        sampler: Callable | None = None,
        sources: list[dict] | None = None,
        plan: SourcePlan | None = None,
        alongside: Callable | None = None,
    ) -> list[int]:
        """Make comparisons of K completions for up to N prompts that the generating
        version (`model_version`, default the active policy) has not compared yet; returns
        the new comparison ids, made in the current round. `sampler(model_dir,
        conversations, k, params)` draws the samples (default: in this process).

        `sources` (see `check_sources`; K is then the sum of the counts and `k` is not
        used) mixes versions and sampling settings within each comparison: each source's
        completions are sampled for the whole batch with its own model, then each
        comparison's completions are shuffled, so that a letter says nothing about where
        a completion came from. Each completion records its version and sampling.

        `plan`: the sources already resolved by `plan_sources` for these arguments (the
        pre-generator resolves them once per batch and logs their notes itself).

        `alongside(cursor, new_ids)` writes what belongs with the new comparisons (the
        'thompson' selection's unshown candidates) in the transaction that adds them, so
        neither is stored without the other."""
        if n < 1:
            raise WorkbenchError(f"N must be at least 1, not {n}.")
        if plan is None:
            plan = self.plan_sources(sources, model_version, k, params)
            for note in plan.notes:
                log.warning(note)
        cur = self.store.cursor()
        if prompt_set is not None:
            require_prompt_set(prompt_set, prompts.set_names(cur), WorkbenchError)
        todo = prompts.not_compared_by(cur, plan.primary, prompt_set, n)
        if todo.empty:
            return []
        conversations = list(todo["messages"])
        per_prompt: list[list[NewCompletion]] = [[] for _ in conversations]
        for (version, source_params), count in _sampling_groups(plan).items():
            model_dir = self.model_version(version).path
            samples = (sampler or self._sample_here)(model_dir, conversations, count, source_params)
            for completions, drawn in zip(per_prompt, samples):
                completions += [NewCompletion(s.text, version, {**source_params.as_dict(), "dtype": s.dtype},
                                              s.num_tokens, s.finish_reason)
                                for s in drawn]
        created = []
        with self.store.transaction() as tx:
            for prompt_id, completions in zip(todo["id"], per_prompt):
                if plan.mixed:
                    _shuffler(params.seed, int(prompt_id), plan.round).shuffle(completions)
                created.append(comparisons.add(tx, int(prompt_id), completions, round=plan.round))
            if alongside is not None:
                alongside(tx, created)
        return created

    def comparison(self, comparison_id: int) -> comparisons.Comparison:
        found = comparisons.get(self.store.cursor(), comparison_id)
        if found is None:
            raise WorkbenchError(f"There is no comparison {comparison_id}.")
        return found

    def comparisons(self, pending: bool = False, limit: int | None = None) -> pd.DataFrame:
        if limit is not None and limit < 0:
            raise WorkbenchError(f"The limit must be 0 or more, not {limit}.")
        return comparisons.list_comparisons(self.store.cursor(), pending=pending, limit=limit)

    # -- rankings ---------------------------------------------------------------

    def rank(self, comparison_id: int, text: str, user: str, source: str = "human",
             seconds_spent: float | None = None) -> Ranking:
        """Validate and store one ranking; returns it in canonical form."""
        if not user or not user.strip():
            raise WorkbenchError("A ranking needs the name of the person who made it.")
        ranking = parse_ranking(text, self.comparison(comparison_id).k)
        try:
            with self.store.transaction() as cur:
                feedback.add_ranking(cur, comparison_id, user.strip(), ranking.canonical, ranking.ranks(),
                                     source=source, seconds_spent=seconds_spent)
        except DuplicateRanking as error:
            raise WorkbenchError(str(error)) from None
        return ranking

    def import_rankings(self, path: str | Path) -> int:
        """Import a JSONL file of {comparison_id, ranking, user}: every line is checked
        (comparison exists, ranking valid for its K, not already ranked by that user)
        before anything is stored."""
        frame = formats.read_ranking_file(path)
        cur = self.store.cursor()
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
        with self.store.transaction() as tx:
            for comparison_id, user, ranking in checked:
                feedback.add_ranking(tx, comparison_id, user, ranking.canonical, ranking.ranks(), source="human")
        return len(checked)

    def import_pairs(self, path: str | Path, prompt_set: str | None = None,
                     skipped: list[FormatError] | None = None) -> int:
        """Import external preference pairs as two-completion comparisons ranked chosen over
        rejected (the chosen answer at a random letter), attributed to the file (source
        'import'), not to a person. With a `skipped` list, rows that cannot be used are
        collected there and the rest imported; without it the first such row stops the
        import and nothing is stored."""
        frame = formats.read_preference_pairs(path, skipped)
        prompt_set = prompt_set or Path(path).name.split(".")[0]
        conversations = [list(messages) for messages in frame["messages"]]
        with self.store.transaction() as cur:
            prompts.add_prompts(cur, prompt_set, conversations, source=str(path))
            prompt_ids = prompts.ids_by_fingerprint(cur, prompt_set, [prompts.fingerprint(m) for m in conversations])
            return comparisons.add_imported_pairs(
                cur, prompt_ids, list(frame["chosen"]), list(frame["rejected"]), annotator=f"import:{Path(path).name}"
            )

    def import_from(self, tool: str, path: str | Path, prompt_set: str | None = None,
                    data: str | Path | None = None) -> ToolImport:
        """Import another tool's rankings (`rlhf.collect.imports.TOOLS`): each prompt and
        its K completions become one imported comparison (as `import_pairs` makes them),
        ranked by each annotator apart as `<tool>:<annotator>`, a user (role annotator, no
        password) created for each new name. Their source is 'human': people ranked them,
        in another tool. Everything is checked before anything is stored, in one
        transaction; a bad record is a FormatError with its place and reason."""
        found = imports.read(tool, path, data)
        planned = imports.plan(tool, path, found)
        prompt_set = prompt_set or Path(path).name.split(".")[0]
        conversations = [messages for messages, _ in planned.items]
        with self.store.transaction() as cur:
            created = auth.add_imported_annotators(cur, planned.annotators)
            prompts.add_prompts(cur, prompt_set, conversations, source=str(path))
            prompt_ids = prompts.ids_by_fingerprint(cur, prompt_set, [prompts.fingerprint(m) for m in conversations])
            ids = comparisons.add_imported(cur, prompt_ids, [texts for _, texts in planned.items])
            feedback.add_imported_rankings(
                cur, [ids[item] for item, _, _ in planned.rankings], [who for _, who, _ in planned.rankings],
                [ranking.ranks() for _, _, ranking in planned.rankings],
                [ranking.canonical for _, _, ranking in planned.rankings], source="human",
            )
        return ToolImport(len(planned.rankings), len(ids), created, prompt_set)

    def rankings(self, newest: int | None = None) -> pd.DataFrame:
        """Every ranking (`feedback.rankings_frame`), or only the `newest` that many."""
        return feedback.rankings_frame(self.store.cursor(), newest)

    def labels(self) -> pd.DataFrame:
        """The good/bad marks annotators made beside their rankings (`feedback.labels_frame`)."""
        return feedback.labels_frame(self.store.cursor())

    # -- exports ----------------------------------------------------------------

    def export(self, format: str, out: str | Path, selection: str = "all") -> tuple[Path, int]:
        """Write the rankings as TRL preference pairs, TRL unpaired (KTO) rows, or raw
        rankings, to Parquet or JSONL by the file's extension; returns (path, rows)."""
        table = export_table(self.rankings(), format, selection, self.labels())
        return formats.write_table(table, out), len(table)


def export_table(rankings: pd.DataFrame, format: str, selection: str = "all",
                 labels: pd.DataFrame | None = None) -> pd.DataFrame:
    """The rows one export format holds, from `Workbench.rankings()`: TRL preference pairs
    (prompt, chosen, rejected, margin), TRL unpaired rows (prompt, completion, label; an
    annotator's good/bad mark in `labels`, `Workbench.labels()`, wins over the label from
    the rank, as in a KTO job's rows) or the raw rankings as they are."""
    if format not in EXPORT_FORMATS:
        raise WorkbenchError(f"Unknown export format '{format}': choose {', '.join(EXPORT_FORMATS)}.")
    if format == "preference":
        return pairs.preference_pairs(rankings, selection)[["prompt", "chosen", "rejected", "margin"]]
    if format == "unpaired":
        return pairs.unpaired_examples(rankings, labels)[["prompt", "completion", "label"]]
    return rankings


def versions_of(frame: pd.DataFrame, kind: str) -> list[str]:
    """The names of the versions of one kind ("policy", "reward") in a `Workbench.models()` frame."""
    return [] if frame.empty else list(frame.loc[frame["kind"] == kind, "name"])


def active_policy(frame: pd.DataFrame) -> str | None:
    """The active policy's name in a `Workbench.models()` frame; None when there is none."""
    if frame.empty:
        return None
    found = frame[(frame["kind"] == "policy") & (frame["status"] == "active")]
    return None if found.empty else str(found["name"].iloc[0])

