"""Model versions as the rest of the workbench sees them: one lookup by name that returns a
frozen `ModelVersion` with its absolute path, and one way of refusing the wrong kind
(`policy()` / `reward()`), so that every caller says the same sentence; and the names read
from a frame of versions (`versions_of`, `active_policy`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rlhf.errors import UserError
from storage import models

KIND_WORDS = {"policy": "policy version", "reward": "reward model"}


class VersionError(UserError):
    """A version that does not exist, or one of the wrong kind for what it was named as."""


def wrong_kind(name: str, kind: str, wanted: str, purpose: str) -> VersionError:
    """The one sentence for a version of `kind` named where a `wanted` one must be."""
    return VersionError(f"'{name}' is a {KIND_WORDS.get(kind, kind)}; {purpose} must be a {KIND_WORDS[wanted]}.")


def _text(value) -> str | None:
    """A nullable text column as read back by pandas (None or NaN for NULL)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


@dataclass(frozen=True)
class ModelVersion:
    """A registered version; `path` is absolute (the store keeps it relative to the home)."""

    name: str
    kind: str                   # "policy" or "reward"
    status: str                 # "active", "candidate" or "archived"
    path: Path
    parent: str | None
    base_model: str
    data_snapshot: str | None   # the job's data.parquet (relative to the home) for a trained version

    def policy(self, purpose: str = "the version named") -> ModelVersion:
        """This version, refused unless it is a policy; `purpose` says what it was named as."""
        return self._of_kind("policy", purpose)

    def reward(self, purpose: str = "the version named") -> ModelVersion:
        """This version, refused unless it is a reward model."""
        return self._of_kind("reward", purpose)

    def _of_kind(self, kind: str, purpose: str) -> ModelVersion:
        if self.kind != kind:
            raise wrong_kind(self.name, self.kind, kind, purpose)
        return self


def lookup(cur, root: Path, name: str) -> ModelVersion:
    """The registered version `name`, its path made absolute under the home `root`."""
    row = models.get(cur, name)
    if row is None:
        known = ", ".join(models.names(cur)) or "none"
        raise VersionError(f"There is no model version '{name}' (known versions: {known}).")
    return ModelVersion(name=row["name"], kind=row["kind"], status=row["status"], path=Path(root) / row["path"],
                        parent=_text(row["parent"]), base_model=row["base_model"],
                        data_snapshot=_text(row["data_snapshot"]))


def versions_of(frame: pd.DataFrame, kind: str) -> list[str]:
    """The names of the versions of one kind ("policy", "reward") in a `Workbench.models()` frame."""
    return [] if frame.empty else list(frame.loc[frame["kind"] == kind, "name"])


def active_policy(frame: pd.DataFrame) -> str | None:
    """The active policy's name in a `Workbench.models()` frame; None when there is none."""
    if frame.empty:
        return None
    found = frame[(frame["kind"] == "policy") & (frame["status"] == "active")]
    return None if found.empty else str(found["name"].iloc[0])
