"""Plain TRL on a finished workbench DPO job's own rows and settings: the reference that
shows the workbench's overhead per step (`python -m rlhf.bench train --reference`).

Run as `python -m rlhf.bench.plain_trl JOB_DIR` in a process of its own, so its peak
memory is its own. It reads the job's `data.parquet`, its TRL settings (`spec.json`) and
the schedule the job decided (`status.json`), then trains TRL's `DPOTrainer` with the
same LoRA, precision and threads and nothing of the workbench: no snapshot, callbacks,
held-out split, guard, save or registration. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
from pathlib import Path

def dpo_rows(data_path: Path) -> list[dict]:
    """The job's pairs in TRL's conversational layout (prompt, chosen, rejected as messages)."""
    import pandas as pd

    from rlhf.preference.messages import as_messages
    from rlhf.train.plumbing import is_preference

    frame = pd.read_parquet(data_path)
    return [{"prompt": as_messages(row["prompt"], "user"), "chosen": as_messages(row["chosen"], "assistant"),
             "rejected": as_messages(row["rejected"], "assistant")}
            for row in frame.to_dict("records") if is_preference(row["chosen"], row["rejected"])]


def trl_settings(spec: dict, status: dict, bf16: bool, output_dir: str) -> dict:
    """The job's TRL settings as its trainer got them (`common.trainer_args`), with the
    schedule it decided, the precision `bf16` and the files in `output_dir`."""
    from rlhf.train import common

    metrics = status.get("metrics") or {}
    settings = common.trainer_args(Path(output_dir), spec["config"])
    if "schedule/learning_rate" in metrics:
        settings["learning_rate"] = metrics["schedule/learning_rate"]
    if "schedule/epochs" in metrics:
        settings["num_train_epochs"] = metrics["schedule/epochs"]
    return {**settings, "output_dir": output_dir, "bf16": bf16}


def run(job_dir: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from rlhf.modeling.loading import precision_args

    spec = json.loads((job_dir / "spec.json").read_text())
    status = json.loads((job_dir / "status.json").read_text())
    options = spec["options"]
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(spec["base_path"])
    model = AutoModelForCausalLM.from_pretrained(spec["base_path"], dtype=torch.float32)
    lora = LoraConfig(task_type="CAUSAL_LM", r=int(options.get("lora_r", 16)),
                      lora_alpha=int(options.get("lora_alpha", 32)), lora_dropout=float(options.get("lora_dropout", 0.0)),
                      target_modules=options.get("lora_target", "all-linear"))
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-plain-trl-") as scratch:
        config = DPOConfig(**trl_settings(spec, status, precision_args()["bf16"], scratch))
        trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(dpo_rows(job_dir / "data.parquet")),
                             processing_class=tokenizer, peft_config=lora)
        result = trainer.train()
    runtime = float(result.metrics["train_runtime"])
    return {"method": "dpo (plain TRL)", "rows": len(trainer.train_dataset), "steps": int(result.global_step),
            "train_seconds": round(runtime, 1), "seconds_per_step": round(runtime / max(1, result.global_step), 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "bf16": config.bf16, "threads": torch.get_num_threads()}


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(json.dumps(run(Path(sys.argv[1]))), flush=True)
