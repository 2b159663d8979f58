"""The reward model: a scalar head on a policy checkpoint, trained on the rankings.

Data. Each ranking of K completions (ties allowed, `C > B = D > A`) gives a pair for every
two completions in different tie groups, the better one first and the rank distance as
margin, and a tied pair for every two completions in one group. `grouping` decides what a
batch element is:

- "pairs": one pair (two sequences); the loss is the mean over the pairs of the batch.
- "ranking": one whole ranking, every completion scored once (InstructGPT, Ouyang et al.
  2022): the loss of a ranking is the mean over its pairs (each of the C(K,2) pairs weighted
  1/C(K,2) when all are used), and the batch loss the mean over rankings, so a 4-way
  ranking counts as much as a 2-way one and its completions are not fitted six times
  over. `per_device_train_batch_size` then counts rankings.

Losses (formulas and papers in `rlhf.train.reward_losses`): "bradley_terry" drops tied
pairs (a full-tie ranking gives nothing); "rao_kupper" and "davidson" also learn from them,
with a tie parameter (Rao-Kupper theta > 1, Davidson nu > 0). Option `tie_param` fixes it;
0 (the default) learns it with the model, from theta = 3 / nu = 2 (both: P(tie) = 1/2 at
equal rewards), as `1 + exp(rho)` / `exp(rho)` with its own learning rate
TIE_LEARNING_RATE. `use_margin` subtracts `margin_scale` x rank distance from the reward
difference of strict pairs (Llama 2).

Evaluation, on the comparisons `split_by_comparison` held out: `eval/accuracy` is the share
of strict pairs whose better completion scores strictly higher; with a tie-aware loss,
`eval/tie_accuracy` is the share of tied pairs for which P(tie), under the trained tie
parameter, is the largest of the three outcomes (Davidson: |r_a - r_b| < 2 log nu).

Output: full weights (a LoRA is merged), config.json, safetensors, tokenizer, and
`reward.json` with `offset`, the mean raw reward of the distinct (prompt, completion) pairs
of the snapshot, i.e. of the base policy's samples: `rlhf.modeling.scoring.RewardScorer` subtracts
it, so rewards are mean 0 on the base policy (option `normalize`; offset 0 when off).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import torch
from torch import nn

from rlhf.preference.messages import plain, prompt_messages
from rlhf.preference.pairs import RANKINGS_OBJECTIVE
from rlhf.preference.ranking import RankingError, parse_ranking
from rlhf.modeling.loading import REWARD_FILE
from rlhf.modeling.scoring import encode_conversation, score_ids
from rlhf.train import common, ranks
from rlhf import errors
from rlhf.modeling import bottleneck, loading
from rlhf.train.reward_losses import LOSSES, TIE_AWARE, TIE_PARAMETER_NAME, pair_loss, predicts_tie, ranked_pairs

log = logging.getLogger(__name__)

TIE_LEARNING_RATE = 0.02   # Adam step size for the learned tie parameter (a single scalar)
TIE_INIT = {"rao_kupper": 3.0, "davidson": 2.0}
PAIR_KEYS = ("pair_first", "pair_second", "pair_margin", "pair_tie", "pair_weight")


# -- data ----------------------------------------------------------------------------------

@dataclass
class RankedItems:
    """One ranking made ready: the prompt, the completions' texts and token ids, and each
    completion's dense rank (1 = best group)."""

    comparison_id: Any
    prompt: list[dict[str, str]]
    texts: list[str]
    ids: list[list[int]]
    ranks: list[int]


def ranked_items(frame: pd.DataFrame, tokenizer) -> list[RankedItems]:
    items = []
    for row in frame.to_dict("records"):
        texts = [str(t) for t in plain(row["completions"])]
        try:
            ranking = parse_ranking(row["ranking"], k=len(texts))
        except (RankingError, ValueError) as error:
            raise errors.TrainingError(f"Ranking {row.get('ranking_id')} '{row['ranking']}' is invalid: {error}") from None
        prompt = prompt_messages(row)
        # a rated dimension's row (rlhf.preference.pairs.rated_rankings): ranks whose distances are the rating gaps
        rated = row.get("rating_ranks")
        ranks = ([int(r) for r in rated] if hasattr(rated, "__len__") and len(rated) == len(texts)
                 else ranking.rank_list())
        items.append(RankedItems(row["comparison_id"], prompt, texts,
                                 [encode_conversation(tokenizer, prompt, t) for t in texts], ranks))
    return items


def objective_of(options: dict[str, Any]) -> str:
    """What a reward job learns: the rankings, or one rated dimension (option `objective`)."""
    return str(options.get("objective") or RANKINGS_OBJECTIVE)


def count_pairs(items: list[RankedItems]) -> tuple[int, int]:
    """(strict pairs, tied pairs) in these rankings."""
    pairs = [p for item in items for p in ranked_pairs(item.ranks, keep_ties=True)]
    tied = sum(p[3] for p in pairs)
    return len(pairs) - tied, tied


def training_examples(items: list[RankedItems], grouping: str, keep_ties: bool, max_length: int | None
                      ) -> tuple[list[dict[str, Any]], int]:
    """Batch elements `{"completion_ids": [...], "ranks": [...]}` and how many completions
    were left out for being longer than `max_length` (TRL drops such examples too; here
    only the long completion goes, the rest of its ranking stays)."""
    examples, too_long = [], 0
    for item in items:
        kept = [(ids, rank) for ids, rank in zip(item.ids, item.ranks) if max_length is None or len(ids) <= max_length]
        too_long += len(item.ids) - len(kept)
        if grouping == "ranking":
            candidates = [kept]
        else:
            candidates = [[kept[i], kept[j]] for i, j, _, _ in ranked_pairs([r for _, r in kept], keep_ties)]
        for group in candidates:
            ranks = [rank for _, rank in group]
            if ranked_pairs(ranks, keep_ties):
                examples.append({"completion_ids": [ids for ids, _ in group], "ranks": ranks})
    return examples, too_long


@dataclass
class RankedCollator:
    """Batches of ranked groups: every sequence of every element right-padded into one
    `input_ids` tensor, plus the pairs to compare as indices into it, with margins, tie
    flags, and weights (1 / pairs of the element / elements in the batch) that make the
    summed loss the mean over elements of each element's mean pair loss."""

    pad_token_id: int
    keep_ties: bool
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences: list[list[int]] = []
        first, second, margin, tie, weight = [], [], [], [], []
        used = [ranked_pairs(list(e["ranks"]), self.keep_ties) for e in examples]
        elements = sum(1 for pairs in used if pairs)
        for example, pairs in zip(examples, used):
            start = len(sequences)
            sequences.extend(list(ids) for ids in example["completion_ids"])
            for i, j, distance, tied in pairs:
                first.append(start + i)
                second.append(start + j)
                margin.append(float(distance))
                tie.append(tied)
                weight.append(1.0 / (len(pairs) * elements))
        longest = max(len(s) for s in sequences)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(sequences), longest), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
        for row, ids in enumerate(sequences):
            input_ids[row, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[row, :len(ids)] = 1
        return {
            "input_ids": input_ids, "attention_mask": attention_mask,
            "pair_first": torch.tensor(first, dtype=torch.long), "pair_second": torch.tensor(second, dtype=torch.long),
            "pair_margin": torch.tensor(margin, dtype=torch.float), "pair_tie": torch.tensor(tie, dtype=torch.bool),
            "pair_weight": torch.tensor(weight, dtype=torch.float),
        }


# -- the tie parameter ----------------------------------------------------------------------

class TieParameter(nn.Module):
    """Rao-Kupper theta = 1 + exp(rho), or Davidson nu = exp(rho): fixed or learned."""

    def __init__(self, loss: str, fixed: float | None):
        super().__init__()
        self.floor = 1.0 if loss == "rao_kupper" else 0.0
        start = fixed if fixed else TIE_INIT[loss]
        self.rho = nn.Parameter(torch.tensor(math.log(start - self.floor)), requires_grad=not fixed)

    @property
    def learned(self) -> bool:
        return self.rho.requires_grad

    def forward(self) -> torch.Tensor:
        return self.floor + self.rho.exp()


# -- the trainer ----------------------------------------------------------------------------

def _trainer_class():
    from trl import RewardTrainer

    class RankingRewardTrainer(RewardTrainer):
        """TRL's RewardTrainer on ranked groups: our collator and pair loss, a learned tie
        parameter in the optimizer, TRL's model set-up, PEFT wrapping and metric logging."""

        def __init__(self, *args, loss: str, use_margin: bool, margin_scale: float, tie: TieParameter | None,
                     **kwargs):
            self.loss_name, self.use_margin, self.margin_scale = loss, use_margin, margin_scale
            super().__init__(*args, **kwargs)
            self.tie = tie.to(self.args.device) if tie is not None else None
            if self.tie is not None and self.tie.learned:
                ranks.average_gradient(self.tie.rho)  # outside the model DDP wraps: its gradient averaged here

        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset   # tokenized and length-filtered by `training_examples`

        def _set_signature_columns_if_needed(self):
            if self._signature_columns is None:
                self._signature_columns = ["completion_ids", "ranks"]

        def create_optimizer(self, model=None):
            optimizer = super().create_optimizer(model)
            if self.tie is not None and self.tie.learned:
                optimizer.add_param_group({"params": [self.tie.rho], "lr": TIE_LEARNING_RATE, "weight_decay": 0.0})
            return optimizer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            mode = "train" if self.model.training else "eval"
            pairs = {key: inputs.pop(key) for key in PAIR_KEYS}
            inputs["use_cache"] = False
            outputs = model(**inputs)
            rewards = outputs.logits.squeeze(-1).float()
            delta = rewards[pairs["pair_first"]] - rewards[pairs["pair_second"]]
            margin = pairs["pair_margin"] * self.margin_scale if self.use_margin else 0.0
            tie_param = self.tie() if self.tie is not None else None
            per_pair = pair_loss(self.loss_name, delta, pairs["pair_tie"], tie_param, margin)
            loss = (per_pair * pairs["pair_weight"]).sum()
            if self.args.center_rewards_coefficient is not None:
                loss = loss + self.args.center_rewards_coefficient * rewards.pow(2).mean()

            if mode == "train":
                tokens = self.accelerator.gather_for_metrics(inputs["attention_mask"].sum()).sum().item()
                self._total_train_tokens += tokens // self._tp_size
            metrics = self._metrics[mode]
            metrics["num_tokens"] = [self._total_train_tokens]
            with torch.no_grad():
                metrics["mean_reward"].append(rewards.mean().item())
                strict, tied = ~pairs["pair_tie"], pairs["pair_tie"]
                if strict.any():
                    metrics["accuracy"].append((delta[strict] > 0).float().mean().item())
                    metrics["margin"].append(delta[strict].mean().item())
                if tie_param is not None:
                    metrics[TIE_PARAMETER_NAME[self.loss_name]].append(tie_param.item())
                    if tied.any():
                        hits = predicts_tie(self.loss_name, delta[tied], tie_param)
                        metrics["tie_accuracy"].append(hits.float().mean().item())
            return (loss, outputs) if return_outputs else loss

    return RankingRewardTrainer


# -- models ----------------------------------------------------------------------------------

@contextmanager
def _scratch(near: Path) -> Iterator[Path]:
    near.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=near, prefix=".reward-base-") as scratch:
        yield Path(scratch)


def load_classifier(base_path: Path, quantize_4bit: bool = False, scratch_near: Path | None = None):
    """A scalar-head classifier (`num_labels=1`, new random head) on the policy at
    `base_path`: full weights are loaded directly; a LoRA policy is merged into its base
    (`loading.load_causal_lm`) and saved to a scratch directory first (a bottleneck
    policy's adapters beside its weights, and inserted into the classifier)."""
    from transformers import AutoModelForSequenceClassification
    from trl.trainer.reward_trainer import suppress_seqcls_warning

    kwargs: dict[str, Any] = {"num_labels": 1, "dtype": loading.model_dtype()}
    if quantize_4bit:
        kwargs["quantization_config"] = loading.bnb_4bit_config()
    if not loading.is_adapter(base_path):
        with suppress_seqcls_warning():
            return AutoModelForSequenceClassification.from_pretrained(str(base_path), **kwargs)
    merged = loading.load_causal_lm(base_path)
    with _scratch(scratch_near or Path(tempfile.gettempdir())) as scratch:
        if bottleneck.attached(merged) is not None:
            bottleneck.save_full(merged, scratch)
        else:
            merged.save_pretrained(str(scratch), safe_serialization=True)
        del merged
        with suppress_seqcls_warning():
            return bottleneck.load_into(AutoModelForSequenceClassification.from_pretrained(str(scratch), **kwargs),
                                        scratch)


def full_weights(model, base_path: Path, quantized: bool, scratch_near: Path):
    """The trained classifier as plain full weights: a LoRA merged in place; a QLoRA
    adapter applied to a full-precision copy of the base, then merged."""
    from peft import PeftModel

    model = getattr(model, "module", model)
    if not isinstance(model, PeftModel):
        return model
    if not quantized:
        return model.merge_and_unload()
    with _scratch(scratch_near) as scratch:
        model.save_pretrained(str(scratch))
        base = load_classifier(base_path, quantize_4bit=False, scratch_near=scratch_near)
        base.config.pad_token_id = model.config.pad_token_id
        return PeftModel.from_pretrained(base, str(scratch)).merge_and_unload()


# -- evaluation --------------------------------------------------------------------------------

def pair_metrics(items: list[RankedItems], rewards: list[list[float]], loss: str, tie_param: float | None,
                 prefix: str = "eval/") -> dict[str, float]:
    """Pairwise accuracy on strict pairs and, for a tie-aware loss, tie accuracy on tied
    pairs, with their counts. `rewards[n][i]`: reward of completion i of ranking n."""
    right = strict = tie_hits = tied = 0
    for item, scores in zip(items, rewards):
        for i, j, _, is_tie in ranked_pairs(item.ranks, keep_ties=True):
            delta = scores[i] - scores[j]
            if is_tie:
                tied += 1
                if loss in TIE_AWARE:
                    tie_hits += bool(predicts_tie(loss, torch.tensor([delta]), tie_param)[0])
            else:
                strict += 1
                right += delta > 0
    metrics = {f"{prefix}pairs": float(strict), f"{prefix}tied_pairs": float(tied)}
    if strict:
        metrics[f"{prefix}accuracy"] = right / strict
    if tied and loss in TIE_AWARE:
        metrics[f"{prefix}tie_accuracy"] = tie_hits / tied
    return metrics


def score_items(model, items: list[RankedItems], pad_token_id: int, batch_size: int
                ) -> tuple[list[list[float]], list[float]]:
    """Raw rewards per ranking and completion, and the rewards of the distinct
    (prompt, completion) pairs (each scored once: several annotators share comparisons)."""
    distinct: dict[tuple[str, str], int] = {}
    sequences: list[list[int]] = []
    for item in items:
        key_prompt = json.dumps(item.prompt, sort_keys=True)
        for text, ids in zip(item.texts, item.ids):
            if (key_prompt, text) not in distinct:
                distinct[(key_prompt, text)] = len(sequences)
                sequences.append(ids)
    scores = score_ids(model, sequences, pad_token_id, batch_size)
    per_item = [[scores[distinct[(json.dumps(item.prompt, sort_keys=True), text)]] for text in item.texts]
                for item in items]
    return per_item, scores


# -- the entry point -------------------------------------------------------------------------

def _check_options(options: dict[str, Any]) -> tuple[str, float | None]:
    loss = options.get("loss", "bradley_terry")
    if loss not in LOSSES:
        raise errors.TrainingError(f"loss must be one of {', '.join(LOSSES)}, not '{loss}'.")
    if options.get("grouping", "pairs") not in ("pairs", "ranking"):
        raise errors.TrainingError(f"grouping must be pairs or ranking, not '{options.get('grouping')}'.")
    if options.get("adapter", "lora") in loading.PROMPT_LEARNING:
        raise errors.TrainingError("A reward model is saved as full weights and a soft prompt or prefix cannot be"
                                   " merged into them; use adapter=lora, ia3, bottleneck_serial or full.")
    fixed = float(options.get("tie_param") or 0.0) or None
    if fixed is not None and loss == "rao_kupper" and fixed <= 1:
        raise errors.TrainingError(f"tie_param (Rao-Kupper theta) must be greater than 1, or 0 to learn it, not {fixed}.")
    if fixed is not None and fixed < 0:
        raise errors.TrainingError(f"tie_param (Davidson nu) must be greater than 0, or 0 to learn it, not {fixed}.")
    return loss, fixed


def train(inputs: common.TrainInputs) -> dict[str, float]:
    """Train a reward model on `inputs.data` (one row per ranking) and write it, full
    weights with `reward.json`, to `inputs.out_dir`. Returns the final metrics."""
    from datasets import Dataset
    from trl import RewardConfig

    options = inputs.options
    loss, fixed_tie = _check_options(options)
    grouping = options.get("grouping", "pairs")
    keep_ties = loss in TIE_AWARE
    loading.check_adapter(options)
    if inputs.data is None or len(inputs.data) == 0:
        raise errors.TrainingError("There are no rankings to train a reward model on.")

    seed = int(inputs.config.get("seed", 0) or 0)
    def reward_config(**decided: Any):
        return RewardConfig(**common.trainer_args(inputs.out_dir, {**inputs.config, **decided}))

    args = reward_config()   # its max_length filters the examples the schedule counts
    tokenizer = loading.load_tokenizer(inputs.base_path)
    train_frame, eval_frame = common.split_by_comparison(inputs.data, float(options.get("eval_fraction", 0.1)), seed)
    train_items, eval_items = ranked_items(train_frame, tokenizer), ranked_items(eval_frame, tokenizer)
    strict, tied = count_pairs(train_items)
    if strict == 0 and not keep_ties:
        raise errors.TrainingError(
            "Every training ranking is a full tie, which the Bradley-Terry loss cannot learn from;"
            " use loss=rao_kupper or loss=davidson, or rank some completions apart.")
    train_examples, too_long = training_examples(train_items, grouping, keep_ties, args.max_length)
    if not train_examples:
        raise errors.TrainingError(f"Every training pair has a completion longer than max_length={args.max_length}"
                                   " tokens; raise max_length.")
    if too_long:
        log.warning("%d completions longer than max_length=%s tokens left out of training", too_long, args.max_length)
    eval_examples, _ = training_examples(eval_items, grouping, keep_ties, args.max_length)
    decided = common.plan(inputs, "reward", len(train_examples), common.examples_per_step(inputs.config),
                          "rankings" if grouping == "ranking" else "pairs")
    args = reward_config(**decided.settings)

    quantized = options.get("adapter") == "qlora"
    from transformers import set_seed

    set_seed(seed)   # the new scalar head is drawn at random
    model = load_classifier(inputs.base_path, quantize_4bit=quantized, scratch_near=inputs.out_dir.parent)
    loading.own_adapter(model, options)
    sequences = max(len(example["completion_ids"]) for example in train_examples)
    longest = max(len(ids) for example in train_examples for ids in example["completion_ids"])
    args = reward_config(**decided.settings, **common.activation_checkpointing(
        inputs, model.config, args.per_device_train_batch_size * sequences * longest))
    tie = TieParameter(loss, fixed_tie) if keep_ties else None
    trainer = _trainer_class()(
        model=model, args=args, processing_class=tokenizer,
        data_collator=RankedCollator(tokenizer.pad_token_id, keep_ties, args.pad_to_multiple_of),
        train_dataset=Dataset.from_list(train_examples),
        eval_dataset=Dataset.from_list(eval_examples) if eval_examples else None,
        peft_config=loading.peft_config(options, "SEQ_CLS"),
        callbacks=[common.ReporterCallback(inputs.reporter)],
        loss=loss, use_margin=bool(options.get("use_margin", False)),
        margin_scale=float(options.get("margin_scale", 1.0)), tie=tie,
    )
    result = trainer.train()
    inputs.reporter.check_cancelled()
    if not ranks.is_main():  # under a launcher rank 0 scores and saves; the others' part ends with training
        return {"train_loss": float(result.training_loss)}

    model = full_weights(trainer.model, inputs.base_path, quantized, inputs.out_dir.parent)
    model.config.pad_token_id = tokenizer.pad_token_id
    batch_size = int(args.per_device_eval_batch_size)
    tie_value = float(tie().detach()) if tie is not None else None
    normalize = bool(options.get("normalize", True))
    scored = train_items + eval_items if normalize else eval_items   # the offset needs every completion
    per_item, all_scores = score_items(model, scored, tokenizer.pad_token_id, batch_size)
    eval_rewards = per_item[len(scored) - len(eval_items):]
    offset = sum(all_scores) / len(all_scores) if normalize else 0.0

    metrics: dict[str, float] = {"train_loss": float(result.training_loss), "reward_offset": float(offset),
                                 "train/runtime_s": float(result.metrics.get("train_runtime", 0.0)),
                                 "train/rankings": float(len(train_items)), "train/pairs": float(strict),
                                 "train/tied_pairs": float(tied if keep_ties else 0),
                                 "train/examples": float(len(train_examples)), **decided.metrics()}
    if tied and not keep_ties:
        metrics["train/ties_dropped"] = float(tied)
    if too_long:
        metrics["train/too_long"] = float(too_long)
    if tie_value is not None:
        metrics[TIE_PARAMETER_NAME[loss]] = tie_value
    if eval_items:
        metrics["eval/rankings"] = float(len(eval_items))
        metrics.update(pair_metrics(eval_items, eval_rewards, loss, tie_value))

    loading.save_model(model, tokenizer, inputs.out_dir, inputs.base_path, merge=True)
    common.remove_scratch(inputs.out_dir)
    info = {"offset": float(offset), "objective": objective_of(options), "loss": loss, "grouping": grouping,
            "use_margin": bool(options.get("use_margin", False)), "margin_scale": float(options.get("margin_scale", 1.0)),
            "normalized": normalize, "completions_for_offset": len(all_scores) if normalize else 0,
            "tie_parameter": (None if tie_value is None else
                              {"name": TIE_PARAMETER_NAME[loss], "value": tie_value, "learned": tie.learned}),
            "base": str(Path(inputs.base_path).resolve()), "metrics": metrics}
    (inputs.out_dir / REWARD_FILE).write_text(json.dumps(info, indent=2))
    inputs.reporter.metrics(trainer.state.global_step, metrics)
    return metrics
