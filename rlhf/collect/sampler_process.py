"""Sampling and reward scoring in a child process, for the server's pre-generator.

In the server process, `generate`'s Python-side loop would hold the interpreter lock in
slices and keep the annotators' requests waiting (on 2 cores, p95 over 300 ms). A child
process samples instead, at lower CPU priority and on one core fewer than the machine
has; the pre-generator thread only waits on a pipe, which holds no lock. The same child
scores completions with a reward model ("score" requests: `RewardScorer.score`), for the
suggestions and the 'uncertain' queue order, so no reward model is loaded in the server,
and chooses which candidates the 'thompson' queue order shows ("choose" requests:
`rlhf.train.head_ensemble.choose_shown`, the base embedding in the child).

The server runs a second child for the Compare tab's research work, so that it never
waits behind pre-generation nor holds it up: side by side and arena answers ("answer"
requests: `rlhf.modeling.measure.answer`) and automatic evaluations ("evaluate" requests:
`rlhf.modeling.measure.measure`), which sample for minutes. Each child answers one request at a
time and keeps at most `LIMITS.loaded_models` models loaded.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf.modeling.sampling import SamplingParams

if TYPE_CHECKING:
    from rlhf.modeling.measure import Plan

SAMPLER_NICENESS = 10


def _serve(connection) -> None:
    """The child: load each model once, answer sampling requests until the pipe closes."""
    import torch

    from rlhf.errors import UserError
    from rlhf.modeling import measure, precision
    from rlhf.modeling.generate import sample
    from rlhf.modeling.model_cache import ModelCache
    from rlhf.modeling.threads import available_cores, sampler_threads

    try:
        os.nice(SAMPLER_NICENESS)
    except OSError:
        pass
    torch.set_num_threads(sampler_threads(available_cores()))
    # the server's output says what its completions are sampled in (`rlhf serve` checked RLHF_PRECISION)
    print(f"Sampling process {os.getpid()}: models sample in {precision.current().describe()}.", flush=True)
    models = ModelCache()  # one copy of each recently used model, whatever the request
    while True:
        try:
            kind, model_dir, *request = connection.recv()
        except (EOFError, OSError):
            return
        try:
            if kind == "evaluate":
                chosen, params = request
                connection.send((True, measure.measure(chosen, params, models)))
                continue
            if kind == "answer":
                messages, params, reward_dir = request
                connection.send((True, measure.answer(models, [Path(d) for d in model_dir], messages, params,
                                                       None if reward_dir is None else Path(reward_dir))))
                continue
            if kind == "choose":
                from rlhf.train.head_ensemble import Featurizer, choose_shown

                cache_root, ranked, candidates, k, seed = request
                featurizer = models.get("featurizer", model_dir, lambda path: Featurizer(path, Path(cache_root)))
                connection.send((True, choose_shown(featurizer, ranked, candidates, k, seed=seed)))
                continue
            if kind == "score":
                prompts, completions, categories = request
                connection.send((True, models.scorer(model_dir).score(prompts, completions, categories=categories)))
                continue
            conversations, k, params = request
            connection.send((True, sample(models.policy(model_dir), conversations, k=k, params=params)))
        except UserError as error:  # a refusal in one sentence: the parent raises it as it is
            connection.send((False, error))
        except Exception as error:  # noqa: BLE001 - reported to the parent, which raises it
            connection.send((False, f"{type(error).__name__}: {error}"))


class SamplerProcess:
    """`sample(model_dir, conversations, k, params)` and `score(reward_dir, prompts,
    completions)` answered by a child process, started on first use (spawned: a forked
    copy of a threaded server is unsafe) and restarted if it died. Each model is loaded
    once in the child."""

    def __init__(self):
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._process = None
        self._connection = None

    def sample(self, model_dir: Path, conversations: list[list[dict]], k: int, params: SamplingParams):
        return self._ask("sample", str(model_dir), conversations, k, params)

    def score(self, reward_dir: Path, prompts: list[list[dict]], completions: list[str],
              categories: list[str | None] | None = None) -> list[float]:
        """Normalised rewards of each (prompt messages, completion text), as `load_scorer(reward_dir).score`:
        a combination version's gate reads each prompt's category."""
        return self._ask("score", str(reward_dir), list(prompts), list(completions),
                         None if categories is None else list(categories))

    def choose(self, base_dir: Path, cache_root: Path, ranked: list, candidates: list, k: int, seed: int
               ) -> tuple[list[list[int]], bool]:
        """`rlhf.train.head_ensemble.choose_shown` with the base at `base_dir` loaded in the child:
        the K candidates to show of each prompt's (`Candidates`), and whether the ensemble chose them."""
        return self._ask("choose", str(base_dir), str(cache_root), list(ranked), list(candidates), k, seed)

    def answer(self, model_dirs: list[Path], messages: list[dict], params: SamplingParams,
               reward_dir: Path | None = None) -> list[tuple]:
        """`rlhf.modeling.measure.answer`: one answer from each model, scored by the reward model when given."""
        return self._ask("answer", [str(d) for d in model_dirs], messages, params,
                         None if reward_dir is None else str(reward_dir))

    def evaluate(self, chosen: "Plan", params: SamplingParams) -> dict:
        """`rlhf.modeling.measure.measure` of a planned evaluation, its models loaded in the child."""
        return self._ask("evaluate", None, chosen, params)

    def _ask(self, *message):
        with self._lock:
            if self._process is None or not self._process.is_alive():
                self._connection, child = self._context.Pipe()
                self._process = self._context.Process(target=_serve, args=(child,), name="rlhf-sampler", daemon=True)
                self._process.start()
                child.close()
            try:
                self._connection.send(message)
                ok, payload = self._connection.recv()
            except (EOFError, OSError):
                raise RuntimeError("The sampling process ended unexpectedly; it restarts on the next request.") from None
        if not ok:
            raise payload if isinstance(payload, Exception) else RuntimeError(payload)
        return payload

    def close(self, timeout: float = 10) -> None:
        """End the child within about `timeout` s: idle, it exits when its pipe closes; busy
        with a request (an evaluation can take minutes), it is terminated after `timeout`,
        and the request fails at once instead of holding the lock."""
        if not self._lock.acquire(timeout=timeout):
            _end(self._process)  # the request's recv sees the pipe close and lets the lock go
            self._lock.acquire()
        try:
            if self._connection is not None:
                self._connection.close()
            if self._process is not None:
                self._process.join(timeout)
                _end(self._process)
        finally:
            self._process = self._connection = None
            self._lock.release()


def _end(process) -> None:
    """Terminate a child that has not exited, and kill it if that does not end it."""
    if process is not None and process.is_alive():
        process.terminate()
        process.join(1)
        if process.is_alive():
            process.kill()
            process.join(1)
