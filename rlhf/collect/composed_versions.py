"""Versions made without training: a reward combination (registered reward versions
weighted or gated as Llama 2 did, `rlhf.preference.combination`) and a prompt version (a
policy's weights with a system prompt or template, `rlhf.modeling.hard_prompt`). Each is a
small folder under models/ written and registered in one step: refused input writes nothing,
and a folder whose registration failed is removed."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

import pandas as pd

from rlhf.errors import WorkbenchError
from rlhf.home import Home
from rlhf.modeling import hard_prompt
from rlhf.preference import combination
from rlhf.preference.pairs import RANKINGS_OBJECTIVE
from rlhf.versions import ModelVersion
from storage import models
from storage.db import Store

Lookup = Callable[[str], ModelVersion]   # a registered version by name (`Workbench.model_version`)


def add_reward_combination(store: Store, home: Home, lookup: Lookup, name: str, spec: str) -> ModelVersion:
    """Register `name`: a reward version that combines registered reward versions (the
    syntax of `rlhf.preference.combination`); its parent is the first version it names."""
    name = hard_prompt.check_name(name)
    parsed = combination.parse_combination(spec)
    parts = {}
    for component in parsed.components:
        version = lookup(component).reward("each version of a combination")
        if combination.is_combination(version.path):
            raise WorkbenchError(f"{component} is itself a combination: name its reward versions instead.")
        parts[component] = version
    _require_new_name(store, home, name)
    bases = {version.base_model for version in parts.values()}
    if len(bases) > 1:
        raise WorkbenchError(f"The versions of a combination must share a base model, not"
                             f" {', '.join(sorted(bases))}.")
    return _written_and_registered(
        store, home, lookup, name, "reward", bases.pop(), combination.METHOD, parsed.components[0],
        lambda directory: combination.write(directory, parsed, {c: v.path for c, v in parts.items()}))


def add_prompt_version(store: Store, home: Home, lookup: Lookup, name: str, parent: str,
                       system_prompt: str | None = None, template: str | None = None) -> ModelVersion:
    """Register `name`: the policy `parent`'s weights plus `system_prompt`, given before
    every prompt it answers, and/or `template` around the user's prompt."""
    name = hard_prompt.check_name(name)
    text, template = hard_prompt.check_prompt(system_prompt, template)
    if not str(parent or "").strip():
        raise WorkbenchError("Name the parent version whose weights the prompt version uses.")
    source = lookup(str(parent).strip()).policy("the parent of a prompt version")
    _require_new_name(store, home, name)
    return _written_and_registered(
        store, home, lookup, name, "policy", source.base_model, hard_prompt.METHOD, source.name,
        lambda directory: hard_prompt.write(directory, hard_prompt.HardPrompt(source.path.resolve(), text, template)))


def describe(root: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """The versions' table (`storage.models.list_versions`) with `system_prompt` and
    `template` (a prompt version's texts, "" for others and where it has none) and
    `objective` (what a reward version scores: the rankings, one rated dimension, or a
    combination's spec)."""
    prompts = [_prompt(root / path) for path in frame["path"]]
    frame["system_prompt"] = [(p and p.system_prompt) or "" for p in prompts]
    frame["template"] = [(p and p.template) or "" for p in prompts]
    frame["objective"] = [_objective(root / path) if kind == "reward" else ""
                          for kind, path in zip(frame["kind"], frame["path"])]
    return frame


def _require_new_name(store: Store, home: Home, name: str) -> None:
    if models.get(store.cursor(), name) is not None:
        raise WorkbenchError(f"There is already a model version '{name}'; choose another name.")
    if home.model_dir(name).exists():
        raise WorkbenchError(f"{home.model_dir(name)} already exists; choose another name.")


def _written_and_registered(store: Store, home: Home, lookup: Lookup, name: str, kind: str, base_model: str,
                            method: str, parent: str, write: Callable[[Path], object]) -> ModelVersion:
    directory = home.model_dir(name)
    write(directory)
    try:
        with store.transaction() as cur:
            models.register(cur, name, kind, base_model=base_model, method=method, parent=parent,
                            path=str(directory.relative_to(home.root)))
    except Exception:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return lookup(name)


def _prompt(directory: Path) -> hard_prompt.HardPrompt | None:
    return hard_prompt.read(directory) if hard_prompt.is_prompt_version(directory) else None


def _objective(directory: Path) -> str:
    if combination.is_combination(directory):
        return combination.read(directory)[0].canonical
    from rlhf.modeling.loading import read_reward_info  # a reward version's reward.json; torch only here

    try:
        return str(read_reward_info(directory).get("objective") or RANKINGS_OBJECTIVE)
    except (OSError, ValueError):
        return ""
