"""The workbench home: where the database, models, jobs and exports live; and what a new
home starts from (the default model, the default prompts shipped with the package).

    workbench.duckdb
    models/<version>/      weights or a PEFT adapter
    jobs/<job-id>/
    exports/
    server.json            written by `rlhf serve` while it holds the database
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from rlhf.errors import UserError

DEFAULT_HOME = "workbench"
BASE_VERSION = "base"


class HomeError(UserError):
    """The home directory cannot be used, in one sentence."""


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def resolve(cls, path: str | Path | None = None) -> "Home":
        """`--home`, else $RLHF_HOME, else ./workbench."""
        return cls(Path(path or os.environ.get("RLHF_HOME") or DEFAULT_HOME).expanduser().absolute())

    @property
    def db_path(self) -> Path:
        return self.root / "workbench.duckdb"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def jobs_dir(self) -> Path:
        return self.root / "jobs"

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def server_file(self) -> Path:
        return self.root / "server.json"

    def model_dir(self, version: str) -> Path:
        return self.models_dir / version

    def link_base_model(self, model_dir: Path) -> Path:
        """Make `model_dir` this home's base model by hard links (no disk, no time: a test
        suite once wrote gigabytes of model copies), copying only where links cannot be made."""
        import shutil

        def link_or_copy(source: str, destination: str) -> None:
            try:
                os.link(source, destination)
            except OSError:
                shutil.copy2(source, destination)

        return Path(shutil.copytree(model_dir, self.model_dir(BASE_VERSION), copy_function=link_or_copy))

    def prepare(self) -> None:
        """Create the layout, readable by its owner only (the database holds password
        hashes and everyone's rankings); a home that cannot be written to is refused up front."""
        if self.root.exists() and not self.root.is_dir():
            raise HomeError(f"Cannot create the workbench home {self.root}: file exists.")
        try:
            for directory in (self.root, self.models_dir, self.jobs_dir, self.exports_dir):
                if not directory.exists():
                    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                    directory.chmod(0o700)  # mkdir's mode is cut by the umask; be explicit
            if self.root.stat().st_uid == os.getuid() and self.root.stat().st_mode & 0o077:
                self.root.chmod(0o700)  # made by hand or by an older release: closed, it guards all inside
        except OSError as error:
            raise HomeError(f"Cannot create the workbench home {self.root}: {error.strerror.lower()}.") from None
        if not os.access(self.root, os.W_OK):
            raise HomeError(f"The workbench home {self.root} is not writable.")

    def protect_database(self) -> None:
        """The database file (and its write-ahead log), readable and writable by the owner only."""
        for path in (self.db_path, self.db_path.with_name(self.db_path.name + ".wal")):
            if path.exists() and path.stat().st_uid == os.getuid():  # another owner's file stays theirs
                path.chmod(0o600)

    def running_server(self) -> dict | None:
        """What `rlhf serve` wrote about itself, if that process is still alive."""
        try:
            info = json.loads(self.server_file.read_text())
            os.kill(info["pid"], 0)
        except (OSError, ValueError, KeyError):
            return None
        return info


def default_prompts() -> list[dict]:
    """The prompt set shipped with the package: {"prompt", "category"} per line."""
    text = (resources.files("rlhf") / "data" / "default_prompts.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]
