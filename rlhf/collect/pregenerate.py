"""Background pre-generation: keep enough comparisons ready that an annotator never waits
for sampling.

A `PreGenerator` thread checks every few seconds how many comparisons still have a free
slot (`Annotation.ready()`); below the configured target it samples K completions for
up to `batch_prompts` new prompts in one batched call per source (fewer while the queue is
nearly empty, so that the first comparison comes in seconds: `batch_size`; the queue's
`sources` setting can mix the active policy with the previous round's, the base, or
other temperatures). It reports what it is doing through `status()` and never lets an
error escape: a failing model must not take the server down with it.

It also scores, in the same child process that samples: while the queue shows reward-
model suggestions or hands out the 'uncertain' comparisons first, each tick scores up to
`score_batch` queued comparisons that the queue's reward version(s) (the newest, unless
chosen) have not scored yet, and stores scores and suggestions (`rlhf.collect.suggestions`);
`request_scores` queues other comparisons to score (the Data tab's reward-model audit),
taken first. With the 'thompson' selection each batch samples `candidates` completions
per prompt and the child chooses the K shown (`rlhf.collect.candidates`). So scores appear a few seconds after a comparison does, and a new reward
model re-scores the queue in the background; nothing is scored on a request's path.
"""

from __future__ import annotations

import logging
import threading
from functools import partial
from typing import Callable

from rlhf.collect.annotation import Annotation, QueueConfig
from rlhf.collect.candidates import thompson_batch
from rlhf.collect.suggestions import score_comparisons
from rlhf.collect.sources import SourcePlan
from rlhf.collect.sampler_process import SamplerProcess
from rlhf.modeling.sampling import SamplingParams
from storage import queue, scores

log = logging.getLogger(__name__)

STATES = ("idle", "generating", "exhausted", "error")


def queue_plan(annotation: Annotation, config: QueueConfig) -> tuple[SamplingParams, SourcePlan]:
    """The sampling and the sources of the queue's next comparisons."""
    params = SamplingParams(max_new_tokens=config.max_new_tokens)
    return params, annotation.wb.plan_sources(config.sources, config.model_version, config.k, params)


def queue_batch(annotation: Annotation, config: QueueConfig, params: SamplingParams, plan: SourcePlan, wanted: int,
                sampler: Callable | None = None, alongside: Callable | None = None) -> list[int]:
    """Up to `wanted` new comparisons as the queue's settings ask, taking the chosen prompt
    sets in turn; `sampler` and `alongside` as `Workbench.generate` takes them (sampler
    None: in this process)."""
    made: list[int] = []
    for prompt_set in config.prompt_sets or [None]:  # None: every set
        made += annotation.wb.generate(
            prompt_set, n=wanted - len(made), k=config.k, model_version=config.model_version, params=params,
            sampler=sampler, sources=config.sources, plan=plan, alongside=alongside,
        )
        if len(made) >= wanted:
            break
    return made


def prepare_first(annotation: Annotation) -> list[int]:
    """On a home without comparisons (and a queue that wants some), one comparison made in
    this process, as the pre-generator would make it. `rlhf init` calls it, so that the
    first annotator after `rlhf serve` answers finds a comparison at once: otherwise the
    server's sampling process must start, load the model and sample K x 256 tokens first,
    niced, on one core (over a minute on a busy 2-core machine)."""
    config = annotation.config
    if config.ready_target == 0 or not annotation.wb.comparisons(limit=1).empty:
        return []
    params, plan = queue_plan(annotation, config)
    for note in plan.notes:
        log.warning(note)
    return queue_batch(annotation, config, params, plan, 1)


class PreGenerator(threading.Thread):
    def __init__(self, annotation: Annotation, interval_s: float = 3.0, batch_prompts: int = 8,
                 score_batch: int = 16):
        super().__init__(name="pregenerate", daemon=True)
        self.annotation = annotation
        self.interval_s = interval_s
        self.batch_prompts = batch_prompts
        self.score_batch = score_batch
        self.sampler = SamplerProcess()  # sampling off the server's interpreter lock
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards the status fields, read from other threads
        self._state, self._last_error, self._generated_total, self._ready = "idle", None, 0, 0
        self._note = None  # a fallback worth telling (say, no previous round to sample from yet)
        self._round = None
        self._scored_total, self._score_error = 0, None
        self._requested: dict[str, list[int]] = {}  # reward version -> comparisons asked for, in order

    # -- control ------------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            more_at_once = False
            try:
                more_at_once = self.fill_once()
            except Exception as error:  # noqa: BLE001 - reported, never fatal
                log.exception("Pre-generation failed")
                self._set(state="error", last_error=f"{type(error).__name__}: {error}")
            if not more_at_once:
                self._wake.wait(self.interval_s)
                self._wake.clear()

    def stop(self, timeout: float = 30) -> None:
        """Ask the thread to end, and wait for it up to `timeout`. The sampling child gets
        `timeout` to finish the batch it is on and is terminated after that (the batch is
        lost; the thread ends on the error)."""
        self._stopping.set()
        self._wake.set()
        self.sampler.close(timeout)
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)

    def wake(self) -> None:
        """Check the queue now rather than at the next tick (say, after a setting changed)."""
        self._wake.set()

    # -- work ---------------------------------------------------------------------

    def fill_once(self) -> bool:
        """One check and, if the queue is short, one batch; then one batch of scoring when
        there is some to do. True when it made comparisons and the queue may still be short,
        or scored some and more may wait (check again at once)."""
        config = self.annotation.config
        try:
            generated = self._fill(config)
        finally:
            scored = self.score_once(config)  # never raises: a broken reward model must not stop sampling
        return generated or scored

    def _fill(self, config: QueueConfig) -> bool:
        ready = self.annotation.ready()
        self._set(ready=ready)
        if ready >= config.ready_target:
            self._set(state="idle")
            return False
        self._set(state="generating")
        made = self._generate(config, self.batch_size(ready, config.ready_target))
        if not made:
            # every prompt of the chosen sets already has a comparison from this model
            self._set(state="exhausted")
            return False
        with self._lock:
            self._generated_total += len(made)
        log.info("Pre-generated %d comparisons (ids %d-%d)", len(made), made[0], made[-1])
        self._set(state="idle", ready=self.annotation.ready())
        return True

    def batch_size(self, ready: int, target: int) -> int:
        """Prompts in the next batch: at most twice what is ready (one when the queue is
        empty), then `batch_prompts`. A batch's comparisons all arrive when its slowest
        completion ends, so on a fresh home the first comparison comes after one prompt's
        K completions (seconds), not after a full batch's (8 x 4 x 256 tokens: a minute and
        more on a CPU), and the queue doubles while the first ones are being ranked."""
        return max(1, min(self.batch_prompts, target - ready, 2 * ready))

    def _generate(self, config: QueueConfig, wanted: int) -> list[int]:
        """Up to `wanted` new comparisons, sampled in the child process."""
        params, plan = queue_plan(self.annotation, config)
        note = " ".join(plan.notes) or None
        if note and note != self._note:
            log.warning("Pre-generation: %s", note)
        if config.selection == "thompson":
            made, chooser_note = thompson_batch(self.annotation, config, params, plan, wanted, self.sampler, queue_batch)
            self._set(note=" ".join(filter(None, (note, chooser_note))) or None, round=plan.round)
            return made
        self._set(note=note, round=plan.round)
        return queue_batch(self.annotation, config, params, plan, wanted, self.sampler.sample)

    # -- scoring ------------------------------------------------------------------

    def request_scores(self, reward_version: str, comparison_ids: list[int]) -> int:
        """Queue comparisons for `reward_version` to score in the background (those it has
        scored already are passed over); returns how many are waiting for it now."""
        with self._lock:
            waiting = self._requested.setdefault(reward_version, [])
            waiting += [i for i in dict.fromkeys(int(i) for i in comparison_ids) if i not in set(waiting)]
            count = len(waiting)
        self.wake()
        return count

    def _next_scoring(self, config: QueueConfig) -> tuple[str, list[int]] | None:
        """(reward version, comparison ids) of the next batch: asked-for ones first, then the
        queue's comparisons without a suggestion from the version(s) the queue uses."""
        cur = self.annotation.wb.store.cursor()
        with self._lock:
            requested = {version: list(ids) for version, ids in self._requested.items()}
        for version, ids in requested.items():
            done = scores.with_suggestion(cur, version, ids)
            todo = [i for i in ids if i not in done]
            with self._lock:
                left = [i for i in self._requested.get(version, []) if i not in done]
                if left:
                    self._requested[version] = left
                else:
                    self._requested.pop(version, None)
            if todo:
                return version, todo[: self.score_batch]
        for version in self.annotation.scoring_wanted(config):
            todo = queue.without_suggestion(cur, version, config.overlap, config.prompt_sets, config.model_version,
                                             config.claim_ttl_s, limit=self.score_batch)
            if todo:
                return version, todo
        return None

    def score_once(self, config: QueueConfig | None = None) -> bool:
        """Score one batch, if there is one to score; True when it scored some (more may
        wait). Errors are reported in `status()['score_error']`, never raised."""
        try:
            batch = self._next_scoring(config or self.annotation.config)
            if batch is None:
                return False
            version, ids = batch
            wb = self.annotation.wb
            reward_dir = wb.reward_model(version).path
            scored = score_comparisons(wb.store, version, ids,
                                       partial(self.sampler.score, reward_dir))
        except Exception as error:  # noqa: BLE001 - reported, never fatal
            message = f"{type(error).__name__}: {error}"
            if message != self._score_error:
                log.exception("Scoring failed")
            self._set(score_error=message)
            return False
        with self._lock:
            self._scored_total += scored
            self._score_error = None
            if version in self._requested:  # those asked for are done (or no longer exist)
                left = [i for i in self._requested[version] if i not in set(ids)]
                if left:
                    self._requested[version] = left
                else:
                    self._requested.pop(version)
        log.info("Scored %d comparisons with %s", scored, version)
        return scored > 0

    # -- reporting ----------------------------------------------------------------

    def _set(self, **fields) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(self, f"_{name}", value)

    def status(self) -> dict:
        """{state: idle | generating | exhausted | error, ready, target, last_error, generated_total,
        round, note, scored_total, score_requests, score_error}; `ready` is counted now, or the
        last count when the store cannot be read; `round` is the round of the last batch and
        `note` says what stood in for a missing source (None when nothing did); `scored_total`
        counts the comparisons scored since start, `score_requests` those asked for and not
        scored yet, and `score_error` is the last scoring failure (None once one succeeds)."""
        try:
            target, ready = self.annotation.config.ready_target, self.annotation.ready()
            self._set(ready=ready)
        except Exception:  # noqa: BLE001 - a status call must answer even when the store does not
            target = None
        with self._lock:
            return {"state": self._state, "ready": self._ready, "target": target,
                    "last_error": self._last_error, "generated_total": self._generated_total,
                    "round": self._round, "note": self._note, "scored_total": self._scored_total,
                    "score_requests": sum(len(ids) for ids in self._requested.values()),
                    "score_error": self._score_error}
