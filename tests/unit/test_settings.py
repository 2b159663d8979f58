"""rlhf.settings: the one way a settings dataclass gives each field its help text."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from rlhf.collect.annotation import QueueConfig
from rlhf.limits import Limits
from rlhf.settings import help_of, setting
from rlhf.train.head_ensemble import EnsembleConfig

ROOT = Path(__file__).resolve().parents[2]


@dataclasses.dataclass(frozen=True)
class Example:
    size: int = setting(3, "how many")
    names: list[str] = setting(help="who", factory=lambda: ["a"])
    note: str = setting("", "left out of equality", compare=False)


def test_a_setting_keeps_its_default_or_factory_and_its_help():
    example = Example()
    assert (example.size, example.names) == (3, ["a"])
    assert Example().names is not example.names  # a fresh list each time
    assert Example(note="x") == Example(note="y")
    assert help_of(Example, "size") == "how many" and help_of(example, "names") == "who"
    with pytest.raises(KeyError, match="no setting named colour"):
        help_of(Example, "colour")
    with pytest.raises(ValueError, match="needs its help text"):
        setting(1, "")


def test_the_workbench_settings_read_their_help_through_the_shared_helper():
    assert QueueConfig.help("overlap") == help_of(QueueConfig, "overlap")
    assert all(help_of(Limits, f.name) for f in dataclasses.fields(Limits))
    assert help_of(EnsembleConfig, "head").startswith("the fit of each head")
    assert EnsembleConfig().head.max_steps == 200


def test_no_module_writes_its_own_help_field():
    """One helper for a field with help text: a module's own `_setting` or a hand-built
    metadata={"help": ...} is a second copy of it."""
    copies = [f"{path.relative_to(ROOT)}:{number}"
              for folder in ("app", "rlhf", "storage") for path in sorted((ROOT / folder).rglob("*.py"))
              if path != ROOT / "rlhf" / "settings.py"
              for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
              if re.search(r"def _setting\(|metadata=\{\s*[\"']help[\"']|metadata=\{\s*$", line)]
    assert copies == []
