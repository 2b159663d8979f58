"""Continued pretraining on domain text: next-token training on raw text, with TRL's
SFTTrainer (through :mod:`rlhf.train.plumbing`), reported as held-out perplexity before and
after.

The job's snapshot holds the corpus's documents (`document`, `text`; cut from the corpus
file by `rlhf.jobs.training_data.corpus_rows`). Here they are tokenised with the base
version's tokenizer, each followed by its end-of-text token, joined, and cut into chunks of
`max_length` tokens (the last one shorter): the classic packing of language-model
pretraining, so no token is padding and none is cut off. The chunks are split seeded
(`eval_fraction`, `seed`: `common.split_by_comparison` on the chunk's number): a held-out
chunk is a stretch of the corpus the model never trains on, its neighbours may be. The
loss is on every token. The perplexity (`rlhf.modeling.logprobs.perplexity`: exp of the
mean negative log-likelihood per token, every held-out token weighted alike) is measured
on the held-out chunks with the parent's weights before training and the saved version's
after (loaded as the workbench serves it), and kept as `eval/perplexity_before` and `eval/perplexity` (also logged at step 0
and at the last step, so the job's plot draws the fall).

The guardrails (`rlhf.train.guard`) sample the package's default prompts: a corpus has no
prompts, and how far the policy moved on everyday prompts is what domain text may cost.
"""

from __future__ import annotations

import logging

import pandas as pd

from rlhf.errors import TrainingError
from rlhf.home import default_prompts
from rlhf.modeling import loading
from rlhf.train import common, guard, ranks
from rlhf.train.common import TrainInputs
from rlhf.train.plumbing import MicroBatch, fit, load_trl_policy, require_columns, trainer_config, trl_trainer

log = logging.getLogger(__name__)

CORPUS_COLUMNS = ["document", "text"]
DEFAULT_MAX_LENGTH = 256


def chunks_of(token_ids: list[list[int]], eos_id: int | None, length: int) -> list[list[int]]:
    """The documents' token ids, each followed by `eos_id` (when the tokenizer has one),
    joined and cut into chunks of `length` tokens, the last one what is left (dropped
    when a single token: nothing to predict in it)."""
    if length < 2:
        raise TrainingError(f"max_length must be at least 2 tokens to cut a corpus into chunks, not {length}.")
    stream: list[int] = []
    for ids in token_ids:
        stream += list(ids) + ([eos_id] if eos_id is not None else [])
    chunks = [stream[start:start + length] for start in range(0, len(stream), length)]
    return [chunk for chunk in chunks if len(chunk) >= 2]


def chunk_frame(tokenizer, documents: pd.DataFrame, length: int) -> pd.DataFrame:
    """The corpus as chunks: `chunk` (its number in corpus order) and `input_ids`."""
    encoded = tokenizer(list(documents["text"]), add_special_tokens=False)["input_ids"]
    chunks = chunks_of(encoded, tokenizer.eos_token_id, length)
    return pd.DataFrame({"chunk": range(len(chunks)), "input_ids": chunks})


def split_chunks(inputs: TrainInputs, chunks: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train and held-out chunks (`eval_fraction` of them at random with the job's seed);
    one sentence when the corpus is too short to hold one out."""
    fraction = float(inputs.options.get("eval_fraction", 0.0))
    seed = int(inputs.config.get("seed", 0) or 0)
    if fraction > 0 and len(chunks) < 2:
        length = int(inputs.config.get("max_length") or DEFAULT_MAX_LENGTH)
        raise TrainingError(f"The corpus makes {len(chunks)} chunk of at most {length} tokens, and at least 2 are"
                            " needed to hold one out for the perplexity: add text, lower max_length, or set"
                            " eval_fraction=0.")
    return common.split_by_comparison(chunks, fraction, seed, key="chunk")


def train(inputs: TrainInputs) -> dict[str, float]:
    """Next-token training on the corpus's chunks. Returns the train loss, the held-out
    perplexity before and after, the corpus's counts, the schedule and the guardrails."""
    from trl import SFTConfig, SFTTrainer

    from rlhf.modeling.logprobs import perplexity
    from rlhf.modeling.models import load_policy

    documents = inputs.data
    require_columns(documents, CORPUS_COLUMNS, "pretrain")
    documents = documents[[isinstance(text, str) and bool(text.strip()) for text in documents["text"]]] \
        if len(documents) else documents
    if len(documents) == 0:
        raise TrainingError("Continued pretraining needs a corpus with text, and this one holds none.")
    length = int(inputs.config.get("max_length") or DEFAULT_MAX_LENGTH)
    inputs.reporter.progress(0, None, message="cutting the corpus into chunks")
    chunks = chunk_frame(loading.load_tokenizer(inputs.base_path), documents, length)
    train_frame, eval_frame = split_chunks(inputs, chunks)
    tokens = int(chunks["input_ids"].map(len).sum())
    log.info("Corpus: %d documents, %d tokens in %d chunks of at most %d tokens; %s.", len(documents), tokens,
             len(chunks), length,
             f"{len(eval_frame)} chunks held out at random (eval_fraction {inputs.options.get('eval_fraction')},"
             f" seed {int(inputs.config.get('seed', 0) or 0)}) for the perplexity" if len(eval_frame)
             else "none held out (eval_fraction 0): no perplexity")
    decided = common.plan(inputs, "pretrain", len(train_frame), common.examples_per_step(inputs.config), "chunks")
    held_out = [list(ids) for ids in eval_frame["input_ids"]]
    batch = int(inputs.config.get("per_device_eval_batch_size") or 8)
    measured = bool(held_out) and ranks.is_main()   # under a launcher rank 0 measures (and saves)

    def held_out_perplexity(version) -> tuple[float, int]:
        """On `version` loaded as the workbench serves it: the parent before, the saved job after."""
        inputs.reporter.progress(inputs.reporter.step, inputs.reporter.total,
                                 message="measuring the held-out perplexity")
        served = load_policy(version)
        pad = served.tokenizer.pad_token_id if served.tokenizer.pad_token_id is not None else 0
        return perplexity(served.model, held_out, pad, batch)

    if measured:
        before, _ = held_out_perplexity(inputs.base_path)
        log.info("Held-out perplexity before training: %.4g", before)
    policy = load_trl_policy(inputs)
    config = trainer_config(SFTConfig, inputs, MicroBatch(policy.model.config, max(map(len, train_frame["input_ids"]))),
                            eval_strategy="no", packing=False, completion_only_loss=False,
                            **decided.settings)
    trainer = trl_trainer(SFTTrainer, inputs, policy, config, train_frame, eval_frame.iloc[0:0], ["input_ids"])
    metrics = fit(trainer, inputs, policy, {"train": len(train_frame), "eval": len(eval_frame)}, evaluate=False)
    metrics.update({"corpus/documents": float(len(documents)), "corpus/tokens": float(tokens),
                    "corpus/chunks": float(len(chunks)), "corpus/heldout_chunks": float(len(eval_frame))})
    if measured:
        del trainer, policy
        after, counted = held_out_perplexity(inputs.out_dir)
        log.info("Held-out perplexity: %.4g before, %.4g after, on %d tokens of %d chunks.", before, after, counted,
                 len(held_out))
        figures = {"eval/perplexity_before": before, "eval/perplexity": after,
                   "eval/perplexity_ratio": after / before, "corpus/heldout_tokens": float(counted)}
        inputs.reporter.metrics(0, {"eval/perplexity": before})
        inputs.reporter.metrics(inputs.reporter.step, {"eval/perplexity": after})
        metrics.update(figures)
    prompts = [[{"role": "user", "content": row["prompt"]}] for row in default_prompts()]
    checked = guard.report(inputs, "pretrain", None, prompts[: int(inputs.options.get("guard_prompts", 0))])
    return {**metrics, **decided.metrics(), **checked}
