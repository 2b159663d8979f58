"""Prefix tuning (Li and Liang, 2021, "Prefix-Tuning", ACL) at generation time.

PEFT 0.21 injects a prefix-tuned model's learned keys and values at generation under the
name `past_key_values`, which transformers 5 renamed `cache`: generate hands its own empty
cache to the model and the prefix is silently dropped, so `generate` samples from the
parent while the forward pass (training, scoring) uses the prefix. `enable` replaces the
model's `generate` with one that starts the base model's `generate` from a cache holding
the prefix, with the attention mask widened to cover it: the continuation of a cached
prefix that transformers supports, and what the PEFT forward pass computes.
"""

from __future__ import annotations

import copy
import types

import torch


def is_prefix_tuned(model) -> bool:
    config = getattr(model, "active_peft_config", None)
    return config is not None and getattr(config.peft_type, "value", config.peft_type) == "PREFIX_TUNING"


def prefixed_inputs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, copies: int):
    """Rows repeated `copies` times each (row i -> rows i*copies .. i*copies+copies-1, as
    `num_return_sequences` orders them), the mask widened by the prefix's length, and the
    prefix cache for those rows.

    input_ids: [b, T]; attention_mask: [b, T] or None (all ones)
    returns: input_ids [b*copies, T], attention_mask [b*copies, V + T], a Cache of V positions
    """
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    input_ids = input_ids.repeat_interleave(copies, dim=0)
    attention_mask = attention_mask.repeat_interleave(copies, dim=0)
    virtual = model.active_peft_config.num_virtual_tokens
    ones = torch.ones((input_ids.shape[0], virtual), dtype=attention_mask.dtype, device=attention_mask.device)
    cache = model.get_prompt(batch_size=input_ids.shape[0])
    return input_ids, torch.cat([ones, attention_mask], dim=1), cache


def _generate(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, **kwargs):
    if input_ids is None:
        input_ids = kwargs.pop("inputs")
    config = kwargs.get("generation_config")
    copies = int(kwargs.pop("num_return_sequences", None) or getattr(config, "num_return_sequences", None) or 1)
    if config is not None and copies > 1:
        kwargs["generation_config"] = config = copy.deepcopy(config)
        config.num_return_sequences = 1
    input_ids, attention_mask, cache = prefixed_inputs(self, input_ids, attention_mask, copies)
    return self.get_base_model().generate(input_ids=input_ids, attention_mask=attention_mask, cache=cache,
                                          num_return_sequences=1, **kwargs)


def enable(model):
    """Give a prefix-tuned PEFT model a `generate` that uses its prefix (anything else is
    returned as it is). Returns `model`."""
    if is_prefix_tuned(model):
        model.generate = types.MethodType(_generate, model)
    return model
