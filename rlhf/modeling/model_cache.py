"""Loaded models kept for reuse, a few at a time.

Loading a model takes seconds, so a server keeps the ones it uses; but every version a
researcher compares, evaluates or samples from would otherwise stay in memory until the
process ends (a dozen versions of a 135M model is gigabytes). So the cache holds at most
`capacity` models (`LIMITS.loaded_models`, 2 by default) and, past that, frees the least
recently used one: dropped from the cache, garbage-collected, and its GPU memory handed
back. A model still in use by a caller stays alive until that caller lets it go. A prompt
version (`rlhf.modeling.hard_prompt`) is no model of its own: it shares its parent's.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from rlhf.limits import LIMITS

if TYPE_CHECKING:
    from rlhf.modeling.models import Policy
    from rlhf.modeling.scoring import CombinedScorer, RewardScorer


def free_memory() -> None:
    """Collect what was just dropped, and give the GPU's cached blocks back (only where
    torch is loaded: this module never imports it)."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


class ModelCache:
    """Policies and reward scorers loaded once per directory, at most `capacity` at a
    time (least recently used freed first), shared by the threads of a process (loading
    is serialised; so is running a model, through `lock`)."""

    def __init__(self, capacity: int = LIMITS.loaded_models):
        if capacity < 1:
            raise ValueError(f"A model cache holds at least one model, not {capacity}.")
        self.capacity = capacity
        self._models: OrderedDict[tuple[str, Path], Any] = OrderedDict()
        self._loading = threading.Lock()
        self.lock = threading.RLock()  # hold it while a model runs: one generation at a time

    def get(self, kind: str, path: Path, load: Callable[[Path], Any]) -> Any:
        """The model of `kind` at `path`, loaded by `load(path)` unless cached; the least
        recently used ones past `capacity` are freed."""
        key = (kind, Path(path))
        with self._loading:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            model = load(key[1])
            self._models[key] = model
            evicted = [self._models.popitem(last=False) for _ in range(len(self._models) - self.capacity)]
        if evicted:
            del evicted
            free_memory()
        return model

    def policy(self, path: Path) -> "Policy":
        """The policy at `path`. A prompt version takes no place of its own: it is its
        parent's cached policy (loaded once, whichever versions prompt it) with its texts."""
        from rlhf.modeling import hard_prompt
        from rlhf.modeling.models import load_policy, prompted

        if hard_prompt.is_prompt_version(Path(path)):
            prompt = hard_prompt.read(Path(path))  # its parent's path resolved: match a cached one however named
            held = next((held for kind, held in self.loaded() if kind == "policy" and held.resolve() == prompt.parent),
                        prompt.parent)
            return prompted(self.policy(held), prompt, path)
        return self.get("policy", path, load_policy)

    def scorer(self, path: Path) -> "RewardScorer | CombinedScorer":
        """A reward version's scorer: one reward model, or a combination of several."""
        from rlhf.modeling.scoring import load_scorer

        return self.get("scorer", path, load_scorer)

    def loaded(self) -> list[tuple[str, Path]]:
        """(kind, directory) of each model held, least recently used first."""
        with self._loading:
            return list(self._models)
