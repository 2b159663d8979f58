"""Where the completions of a new comparison come from: the queue's `sources` setting checked,
and resolved for the current round into a `SourcePlan` (which version draws how many, with
which sampling), before anything is sampled."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from rlhf.checks import require_whole
from rlhf.errors import WorkbenchError
from rlhf.home import BASE_VERSION
from rlhf.modeling.sampling import MAX_K, MIN_K, SamplingParams
from rlhf.versions import ModelVersion
from storage import rounds

SOURCE_ROLES = ("active", "previous", "base")  # besides an explicit version name
SOURCE_KEYS = ("version", "count", "temperature", "top_p")
SOURCES_EXAMPLE = '[{"version": "active", "count": 2}, {"version": "previous", "count": 1}, ' \
                  '{"version": "base", "count": 1, "temperature": 1.0}]'


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


def check_sources(sources) -> list[dict] | None:
    """The queue's `sources` setting checked for shape and normalised: None (all K from
    the generating version) or a list of {version, count[, temperature][, top_p]} whose
    counts add up to a K from 2 to 8. Whether named versions exist is checked by
    `check_named_sources`. Raises WorkbenchError, one sentence."""
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


def check_named_sources(sources, policy: Callable[[str], ModelVersion]) -> list[dict] | None:
    """`check_sources` plus: every named version exists and is a policy (`policy(name)`
    refuses it otherwise)."""
    checked = check_sources(sources)
    for source in checked or []:
        if source["version"] not in SOURCE_ROLES:
            policy(source["version"])
    return checked


def plan_sources(cur, sources, chosen: str, k: int, params: SamplingParams,
                 policy: Callable[[str], ModelVersion]) -> SourcePlan:
    """Resolve the sources for the current round. 'active' is the `chosen` version (the
    generating one); 'previous' is the policy active in the round before (in round 1 there
    is none: the active one stands in, and a note says so); 'base' is the base version.
    No sources: all K from `chosen`. `policy(name)` looks a version up, refused unless it
    is a policy."""
    number = rounds.current(cur).number
    if sources is None or len(sources) == 0:
        if not MIN_K <= k <= MAX_K:
            raise WorkbenchError(f"K must be between {MIN_K} and {MAX_K}, not {k}.")
        return SourcePlan(number, chosen, (PlannedSource("active", chosen, k, params),))
    notes, planned = [], []
    for source in check_named_sources(sources, policy):
        role = source["version"]
        if role == "active":
            version = chosen
        elif role == "previous":
            version = rounds.previous_policy(cur)
            if version is None:
                version = chosen
                notes.append(f"Round {number} has no previous round: the 'previous' completions come from "
                             f"{version} instead.")
        elif role == "base":
            version = policy(BASE_VERSION).name
        else:
            version = role
        overrides = {key: source[key] for key in ("temperature", "top_p") if key in source}
        planned.append(PlannedSource(role, version, source["count"], dataclasses.replace(params, **overrides)))
    versions = [source.version for source in planned]
    primary = chosen if chosen in versions else versions[0]
    return SourcePlan(number, primary, tuple(planned), tuple(notes), mixed=True)


def sampling_groups(plan: SourcePlan) -> dict[tuple[str, SamplingParams], int]:
    """Sources with the same version and settings sampled in one call: {(version, params): count},
    in the order the sources are configured."""
    groups: dict[tuple[str, SamplingParams], int] = {}
    for source in plan.sources:
        key = (source.version, source.params)
        groups[key] = groups.get(key, 0) + source.count
    return groups
