"""The workbench's operations, shared by the CLI and the web app.

A `Workbench` owns the open store of one home: it opens and initialises it, looks versions,
rounds and comparisons up, and stores rankings. The rest it hands to the module of its
concern, with the store and the lookups it needs: `sources` (where completions come from),
`generation` (new comparisons), `ingest` (files brought in), `exports` (the rows of each
export format), `composed_versions` (versions made without training) and
`suggestions.score_table` (scores shown, not stored).

Every operation that writes checks all of its input first and then writes in one
transaction, so a refused operation leaves the store exactly as it was. Errors meant for
people are `WorkbenchError`, `FormatError` or `RankingError`: one sentence each.
"""

from __future__ import annotations

import functools
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd

from rlhf.collect import composed_versions, formats, generation, ingest, sources as source_plans
from rlhf.collect.exports import export_table
from rlhf.collect.formats import FormatError
from rlhf.collect.ingest import ToolImport
from rlhf.collect.sources import SourcePlan
from rlhf.collect.suggestions import score_table
from rlhf.errors import WorkbenchError
from rlhf.preference.messages import as_messages
from rlhf.modeling.sampling import SamplingParams
from rlhf.home import BASE_VERSION, Home, default_prompts
from rlhf.modeling.default_model import DEFAULT_MODEL_NAME, ensure_default_model
from rlhf.modeling.model_cache import ModelCache
from rlhf.preference.ranking import Ranking, parse_ranking
from rlhf import versions
from rlhf.versions import ModelVersion
from storage import comparisons, feedback, models, prompts, rounds
from storage.db import Store, StoreLockedError
from storage.feedback import DuplicateRanking

log = logging.getLogger(__name__)

DEFAULT_PROMPT_SET = "default"
FIRST_ADMIN = "admin"


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
        """Import a prompt file (`ingest.import_prompts`); returns how many were new."""
        return ingest.import_prompts(self.store, path, prompt_set)

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
        """Every version with its lineage and what each holds (`composed_versions.describe`:
        a prompt version's texts, a reward version's objective)."""
        return composed_versions.describe(self.home.root, models.list_versions(self.store.cursor()))

    def add_reward_combination(self, name: str, spec: str) -> ModelVersion:
        """`composed_versions.add_reward_combination`: reward versions combined, no training."""
        return composed_versions.add_reward_combination(self.store, self.home, self.model_version, name, spec)

    def add_prompt_version(self, name: str, parent: str, system_prompt: str | None = None,
                           template: str | None = None) -> ModelVersion:
        """`composed_versions.add_prompt_version`: a parent's weights with a system prompt or template."""
        return composed_versions.add_prompt_version(self.store, self.home, self.model_version, name, parent,
                                                  system_prompt, template)

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
        """Reward-model scores of stored completions (`suggestions.score_table`), the named
        comparisons or the newest `limit`."""
        from rlhf.modeling.scoring import load_scorer

        version = self.reward_model(reward)
        ids = comparison_ids or list(self.comparisons(limit=limit)["id"])
        found = [self.comparison(int(comparison_id)) for comparison_id in ids]
        scorer = load_scorer(version.path)
        return score_table(found, lambda prompts, texts, categories: scorer.score(prompts, texts, categories=categories))

    # -- comparisons ------------------------------------------------------------

    def _policy(self, name: str) -> ModelVersion:
        return self.model_version(name).policy("a source of completions")

    def check_sources(self, sources) -> list[dict] | None:
        """`sources.check_sources` plus: every named version exists and is a policy."""
        return source_plans.check_named_sources(sources, self._policy)

    def plan_sources(self, sources=None, model_version: str | None = None, k: int = 4,
                     params: SamplingParams = SamplingParams()) -> SourcePlan:
        """Resolve the sources for the current round (`sources.plan_sources`). 'active' is
        `model_version` when given, else the active policy; 'previous' is the policy active
        in the round before (in round 1 there is none: the active one stands in, and a note
        says so); 'base' is the base version. No sources: all K from the generating version."""
        chosen = self._policy(model_version) if model_version else self.model_version(None)
        return source_plans.plan_sources(self.store.cursor(), sources, chosen.name, k, params, self._policy)

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
        the new comparison ids, made in the current round (`generation.generate`).
        `sampler(model_dir, conversations, k, params)` draws the samples (default: in this
        process).

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
        return generation.generate(
            self.store, plan, prompt_set, n, params, sampler or functools.partial(generation.sample_here, self._policies),
            lambda version: self.model_version(version).path, alongside,
        )

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
        """Import a JSONL file of {comparison_id, ranking, user}, every line checked before
        anything is stored (`ingest.import_rankings`)."""
        return ingest.import_rankings(self.store, path)

    def import_pairs(self, path: str | Path, prompt_set: str | None = None,
                     skipped: list[FormatError] | None = None) -> int:
        """Import external preference pairs as two-completion comparisons ranked chosen over
        rejected (`ingest.import_pairs`)."""
        return ingest.import_pairs(self.store, path, prompt_set, skipped)

    def import_from(self, tool: str, path: str | Path, prompt_set: str | None = None,
                    data: str | Path | None = None) -> ToolImport:
        """Import another tool's rankings (`ingest.import_from`)."""
        return ingest.import_from(self.store, tool, path, prompt_set, data)

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

