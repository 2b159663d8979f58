"""The feature-based reward model (`rlhf train reward_head`): the frozen base policy embeds
each completion once, and only a scalar head is fitted on the pairs.

This is the "feature-based approach" (fine-tune only the output layer) of the classic
fine-tuning taxonomy: on a CPU it trains in seconds where a LoRA reward job takes minutes,
because the expensive part, one forward pass per distinct completion, is done once and
cached, and the fit is a few hundred full-batch Adam steps on a matrix of features.

Features. A completion is the chat-templated conversation "prompt + one assistant turn"
(`rlhf.modeling.scoring.encode_conversation`, as every reward model reads it), through the
base's backbone (`last_hidden_state`, after the final norm); option `pooling` reads the
last non-pad token, as the sequence classifier does, or the mean over all tokens. The
cache is one `.npy` per completion under `features/<version>/<pooling>-<dtype>/` of the home (the
job's own directory when the base is no version of a home), keyed by a hash of the exact
token ids: the same completion of the same prompt is embedded once, whichever comparison
or job it comes back in.

Fit. The pairs of each ranking (`ranked_pairs`) with the losses of
`rlhf.train.reward_losses`: Bradley-Terry (ties dropped) or the tie-aware Rao-Kupper and
Davidson with their tie parameter (fixed by `tie_param`, else learned), `use_margin` as in
the LoRA reward model. Features are standardised for the fit and the scaling is folded
back into the head, plus an L2 penalty (`weight_decay`) on the standardised weights.

Output: a sequence classifier that scores like every other reward model
(`rlhf.modeling.loading.load_reward_model`): its config, the tokenizer, the base's weight
files by hard link (no copy: a 135M base would be half a gigabyte per head) and the head in
`head.safetensors`, tied together by `model.safetensors.index.json`; a base that is an
adapter version is merged and saved in full. `reward.json` holds the offset (mean raw
reward of the snapshot's distinct completions), the pooling and the metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlhf import errors
from rlhf.modeling import loading
from rlhf.modeling.loading import REWARD_FILE
from rlhf.modeling.scoring import padded_batches
from rlhf.train import common
from rlhf.train.reward import (RankedItems, TieParameter, _check_options, load_classifier, objective_of, pair_metrics,
                               ranked_items)
from rlhf.train.reward_losses import TIE_AWARE, TIE_PARAMETER_NAME, pair_loss, ranked_pairs

log = logging.getLogger(__name__)

POOLINGS = ("last", "mean")
FEATURES_DIR = "features"
HEAD_FILE = "head.safetensors"
INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"


@dataclass
class HeadConfig:
    """The fit of a scalar head on cached features (the settings of `rlhf train reward_head`)."""

    learning_rate: float = 0.01         # Adam, on standardised features
    max_steps: int = 300                # full-batch optimiser steps
    weight_decay: float = 0.01          # L2 penalty on the standardised head weights
    per_device_train_batch_size: int = 8   # sequences per forward pass while embedding
    max_length: int = 1024              # completions longer than this (tokens) are left out
    seed: int = 0


# -- features ------------------------------------------------------------------------------------

def cache_dir(base_path: Path, job_dir: Path, pooling: str) -> Path:
    """Where the base's features live: the home's `features/<version>/<pooling>-<dtype>/`
    when the base is a version of a home (`<home>/models/<version>`), else the job's own
    directory. The dtype (bf16 on a GPU, fp32 on the CPU) is the one the scorer will run in."""
    base = Path(base_path).absolute()
    root = base.parent.parent / FEATURES_DIR if base.parent.name == "models" else Path(job_dir) / FEATURES_DIR
    return root / base.name / f"{pooling}-{str(loading.model_dtype()).removeprefix('torch.')}"


def feature_key(ids: list[int]) -> str:
    return hashlib.sha256(np.asarray(ids, dtype=np.int64).tobytes()).hexdigest()


def pooled(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_token_id: int,
           pooling: str) -> torch.Tensor:
    """[batch, hidden] features of a right-padded batch: the hidden state of the rightmost
    non-pad token (the token the sequence classifier reads), or the mean over real tokens."""
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1)
    non_pad = (input_ids != pad_token_id).to(torch.int64)
    last = (torch.arange(input_ids.shape[1], device=input_ids.device) * non_pad).argmax(-1)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def embed(backbone, sequences: list[list[int]], pad_token_id: int, pooling: str, batch_size: int,
          reporter: common.Reporter | None = None) -> np.ndarray:
    """[len(sequences), hidden] float32 features, sorted by length into right-padded batches."""
    out: list[np.ndarray | None] = [None] * len(sequences)
    done = 0
    with torch.inference_mode():
        for chunk, input_ids, attention_mask in padded_batches(sequences, pad_token_id, batch_size,
                                                               next(backbone.parameters()).device):
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
            features = pooled(hidden, input_ids, attention_mask, pad_token_id, pooling).float().cpu().numpy()
            for row, i in enumerate(chunk):
                out[i] = features[row]
            done += len(chunk)
            if reporter is not None:
                reporter.progress(done, len(sequences), message="embedding completions")
                reporter.check_cancelled()
    return np.stack(out) if out else np.zeros((0, 0), dtype=np.float32)


class FeatureCache:
    """Features of token sequences, one `.npy` per sequence, written atomically (two jobs
    may fill the same cache)."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.npy"

    def features(self, backbone, sequences: list[list[int]], pad_token_id: int, pooling: str, batch_size: int,
                 reporter: common.Reporter | None = None) -> tuple[np.ndarray, int]:
        """Features of every sequence and how many had to be computed (the rest were cached)."""
        keys = [feature_key(ids) for ids in sequences]
        found = {i: np.load(self.path(k)) for i, k in enumerate(keys) if self.path(k).is_file()}
        missing = [i for i in range(len(sequences)) if i not in found]
        if missing:
            computed = embed(backbone, [sequences[i] for i in missing], pad_token_id, pooling, batch_size, reporter)
            for i, row in zip(missing, computed):
                self._write(keys[i], row)
                found[i] = row
        return np.stack([found[i] for i in range(len(sequences))]).astype(np.float32), len(missing)

    def _write(self, key: str, row: np.ndarray) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.stem}.{os.getpid()}.npy")
        np.save(staging, row.astype(np.float32))
        os.replace(staging, target)


# -- the pairs and the fit -----------------------------------------------------------------------

@dataclass
class PairTable:
    """The pairs of some rankings as indices into a feature matrix of distinct completions."""

    first: torch.Tensor      # (P,) long
    second: torch.Tensor     # (P,) long
    margin: torch.Tensor     # (P,) float, rank distance (0 for ties)
    tie: torch.Tensor        # (P,) bool

    def __len__(self) -> int:
        return len(self.first)

    def subset(self, rows: torch.Tensor) -> "PairTable":
        return PairTable(self.first[rows], self.second[rows], self.margin[rows], self.tie[rows])


def distinct_sequences(items: list[RankedItems]) -> tuple[list[list[int]], list[list[int]]]:
    """The distinct token sequences of these rankings, and for each ranking the index of
    each of its completions into them (annotators who share a comparison share features)."""
    index: dict[tuple[int, ...], int] = {}
    sequences: list[list[int]] = []
    positions = []
    for item in items:
        row = []
        for ids in item.ids:
            key = tuple(ids)
            if key not in index:
                index[key] = len(sequences)
                sequences.append(list(ids))
            row.append(index[key])
        positions.append(row)
    return sequences, positions


def pair_table(items: list[RankedItems], positions: list[list[int]], keep_ties: bool, usable: set[int]) -> PairTable:
    """Every pair of every ranking whose two completions are `usable` (not too long)."""
    first, second, margin, tie = [], [], [], []
    for item, where in zip(items, positions):
        for i, j, distance, tied in ranked_pairs(item.ranks, keep_ties):
            if where[i] in usable and where[j] in usable:
                first.append(where[i])
                second.append(where[j])
                margin.append(float(distance))
                tie.append(tied)
    return PairTable(torch.tensor(first, dtype=torch.long), torch.tensor(second, dtype=torch.long),
                     torch.tensor(margin, dtype=torch.float), torch.tensor(tie, dtype=torch.bool))


@dataclass
class FittedHead:
    weight: torch.Tensor          # (hidden,) on raw features: reward = features @ weight
    tie: TieParameter | None
    loss: float

    def rewards(self, features: np.ndarray | torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(features, dtype=torch.float32) @ self.weight


def fit_head(features: np.ndarray, pairs: PairTable, loss: str, config: HeadConfig, fixed_tie: float | None = None,
             margin_scale: float | None = None, reporter: common.Reporter | None = None) -> FittedHead:
    """A scalar head on `features` [N, hidden] fitted to `pairs` by full-batch Adam.
    `margin_scale` None: no margin (else Llama 2's margin, scale x rank distance)."""
    x = torch.as_tensor(features, dtype=torch.float32)
    mean, scale = x.mean(dim=0), x.std(dim=0).clamp_min(1e-6)
    x = (x - mean) / scale
    generator = torch.Generator().manual_seed(int(config.seed))
    weight = torch.nn.Parameter(torch.randn(x.shape[1], generator=generator) * 1e-3)
    tie = TieParameter(loss, fixed_tie) if loss in TIE_AWARE else None
    parameters = [weight] + ([tie.rho] if tie is not None and tie.learned else [])
    optimizer = torch.optim.Adam(parameters, lr=float(config.learning_rate))
    margin = pairs.margin * margin_scale if margin_scale is not None else 0.0
    value = float("nan")
    for step in range(int(config.max_steps)):
        optimizer.zero_grad()
        rewards = x @ weight
        delta = rewards[pairs.first] - rewards[pairs.second]
        objective = pair_loss(loss, delta, pairs.tie, tie() if tie is not None else None, margin).mean()
        total = objective + float(config.weight_decay) * weight.pow(2).sum()
        total.backward()
        optimizer.step()
        value = float(objective.detach())
        if reporter is not None and (step + 1) % 50 == 0:
            reporter.progress(step + 1, int(config.max_steps), message="fitting the head")
            reporter.metrics(step + 1, {"loss": value})
            reporter.check_cancelled()
    return FittedHead((weight.detach() / scale), tie, value)


# -- saving ----------------------------------------------------------------------------------------

def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def save_head(model, weight: torch.Tensor, tokenizer, out_dir: Path, base_path: Path) -> str:
    """Write the classifier with `weight` as its head. A base with full weights in one
    `model.safetensors` is linked, the head beside it in `head.safetensors`; other bases
    (adapters, sharded checkpoints) are saved in full. Returns "linked" or "full"."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with torch.no_grad():
        model.score.weight.copy_(weight.to(model.score.weight.dtype).unsqueeze(0))
    base_weights = Path(base_path) / WEIGHTS_FILE
    if loading.is_adapter(base_path) or not base_weights.is_file():
        loading.save_model(model, tokenizer, out_dir, base_path, merge=True)
        return "full"
    with safe_open(str(base_weights), "pt") as weights:
        base_keys = set(weights.keys())
    wanted = set(model.state_dict()) - {"score.weight"}
    if not wanted <= base_keys:
        loading.save_model(model, tokenizer, out_dir, base_path, merge=True)
        return "full"
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    _link_or_copy(base_weights, out_dir / "base.safetensors")
    save_file({"score.weight": model.score.weight.detach().float().contiguous()}, str(out_dir / HEAD_FILE),
              metadata={"format": "pt"})
    weight_map = {key: "base.safetensors" for key in sorted(wanted)}
    weight_map["score.weight"] = HEAD_FILE
    (out_dir / INDEX_FILE).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=2))
    return "linked"


# -- the entry point -------------------------------------------------------------------------------

def head_config(config: dict[str, Any]) -> HeadConfig:
    known = {key: value for key, value in config.items() if key in HeadConfig.__dataclass_fields__}
    return HeadConfig(**known)


def check_pooling(options: dict[str, Any]) -> str:
    pooling = options.get("pooling", "last")
    if pooling not in POOLINGS:
        raise errors.TrainingError(f"pooling must be one of {', '.join(POOLINGS)}, not '{pooling}'.")
    return pooling


def train(inputs: common.TrainInputs) -> dict[str, float]:
    """Embed the snapshot's completions with the frozen base (cached), fit a scalar head on
    the training pairs, measure it on the held-out comparisons and write the reward model
    to `inputs.out_dir`. Returns the final metrics."""
    options = inputs.options
    loss, fixed_tie = _check_options({**options, "adapter": "full"})   # the base stays frozen: no adapter
    pooling = check_pooling(options)
    config = head_config(inputs.config)
    keep_ties = loss in TIE_AWARE
    if inputs.data is None or len(inputs.data) == 0:
        raise errors.TrainingError("There are no rankings to train a reward model on.")

    tokenizer = loading.load_tokenizer(inputs.base_path)
    train_frame, eval_frame = common.split_by_comparison(inputs.data, float(options.get("eval_fraction", 0.1)),
                                                         int(config.seed))
    train_items, eval_items = ranked_items(train_frame, tokenizer), ranked_items(eval_frame, tokenizer)
    items = train_items + eval_items
    sequences, positions = distinct_sequences(items)
    usable = {i for i, ids in enumerate(sequences) if len(ids) <= config.max_length}
    pairs = pair_table(train_items, positions[:len(train_items)], keep_ties, usable)
    if not bool((~pairs.tie).any()) and not keep_ties:
        raise errors.TrainingError(
            "Every training ranking is a full tie, which the Bradley-Terry loss cannot learn from;"
            " use loss=rao_kupper or loss=davidson, or rank some completions apart.")
    if len(pairs) == 0:
        raise errors.TrainingError(f"Every training pair has a completion longer than max_length={config.max_length}"
                                   " tokens; raise max_length.")

    torch.manual_seed(int(config.seed))
    inputs.reporter.progress(0, None, message="loading the base model")
    model = load_classifier(inputs.base_path, scratch_near=inputs.out_dir.parent)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to("cuda" if loading.on_gpu() else "cpu").eval().requires_grad_(False)
    backbone = getattr(model, model.base_model_prefix)
    cache = FeatureCache(cache_dir(inputs.base_path, inputs.out_dir.parent, pooling))
    started = time.perf_counter()
    features, embedded = cache.features(backbone, sequences, tokenizer.pad_token_id, pooling,
                                        int(config.per_device_train_batch_size), inputs.reporter)
    embedding_seconds = time.perf_counter() - started

    started = time.perf_counter()
    train_rows = sorted({int(i) for i in torch.cat([pairs.first, pairs.second]).tolist()})
    local = {row: n for n, row in enumerate(train_rows)}
    head = fit_head(features[train_rows], PairTable(torch.tensor([local[int(i)] for i in pairs.first]),
                                                    torch.tensor([local[int(i)] for i in pairs.second]),
                                                    pairs.margin, pairs.tie),
                    loss, config, fixed_tie,
                    float(options.get("margin_scale", 1.0)) if options.get("use_margin") else None, inputs.reporter)
    fitting_seconds = time.perf_counter() - started
    inputs.reporter.check_cancelled()

    raw = head.rewards(features).tolist()
    normalize = bool(options.get("normalize", True))
    offset = sum(raw) / len(raw) if normalize else 0.0
    tie_value = float(head.tie().detach()) if head.tie is not None else None
    strict = int((~pairs.tie).sum())
    metrics: dict[str, float] = {
        "train_loss": head.loss, "reward_offset": float(offset), "train/rankings": float(len(train_items)),
        "train/pairs": float(strict), "train/tied_pairs": float(len(pairs) - strict),
        "train/completions": float(len(sequences)), "train/embedded": float(embedded),
        "train/cached": float(len(sequences) - embedded), "train/too_long": float(len(sequences) - len(usable)),
        "train/embedding_seconds": round(embedding_seconds, 3), "train/fitting_seconds": round(fitting_seconds, 3),
    }
    if tie_value is not None:
        metrics[TIE_PARAMETER_NAME[loss]] = tie_value
    if eval_items:
        eval_rewards = [[raw[i] for i in where] for where in positions[len(train_items):]]
        metrics["eval/rankings"] = float(len(eval_items))
        metrics.update(pair_metrics(eval_items, eval_rewards, loss, tie_value))

    inputs.reporter.progress(int(config.max_steps), int(config.max_steps), message="saving")
    saved = save_head(model, head.weight, tokenizer, inputs.out_dir, inputs.base_path)
    info = {"offset": float(offset), "objective": objective_of(options), "loss": loss, "pooling": pooling,
            "features": "frozen base", "saved": saved,
            "use_margin": bool(options.get("use_margin", False)),
            "margin_scale": float(options.get("margin_scale", 1.0)),
            "normalized": normalize, "completions_for_offset": len(raw) if normalize else 0,
            "tie_parameter": (None if tie_value is None else
                              {"name": TIE_PARAMETER_NAME[loss], "value": tie_value, "learned": head.tie.learned}),
            "base": str(Path(inputs.base_path).resolve()), "metrics": metrics}
    (inputs.out_dir / REWARD_FILE).write_text(json.dumps(info, indent=2))
    inputs.reporter.metrics(int(config.max_steps), metrics)
    return metrics
