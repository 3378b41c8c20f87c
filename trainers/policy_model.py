"""The model being trained: loading (full or LoRA), scoring policy tokens, saving checkpoints that servers load.

Scoring runs the decoder over the whole sequence but applies the output head only at the
positions that predict a policy token: with a 49k-token vocabulary the head over every
prompt position would cost as much as the transformer body and most of the memory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from agentgym.errors import PolicyError
from agentgym.hardware import resolve_device, resolve_precision
from agentgym.models import resolve_model
from agentgym.trainers.batches import MicroBatch, TurnSample, micro_batches
from agentgym.trainers.objectives import token_entropy


class LoraSettings(BaseModel):
    """Low-rank adapters (peft) instead of full fine-tuning."""

    model_config = ConfigDict(extra="forbid")

    r: int = Field(16, ge=1, description="Adapter rank.")
    alpha: int = Field(32, ge=1, description="Scale numerator: updates are scaled by alpha / r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass
class TrainableModel:
    """A causal LM ready to train, with what the trainer needs to know about its tokenizer."""

    model: Any  # transformers PreTrainedModel, or a peft PeftModel around one
    tokenizer: Any
    model_dir: Path  # the base weights' directory (what a server is started on)
    eos_token_id: int
    pad_token_id: int

    @property
    def is_lora(self) -> bool:
        """Whether only adapters are trained."""
        return hasattr(self.model, "peft_config")

    def base_model(self) -> Any:
        """The transformers model underneath any peft wrapper."""
        return self.model.get_base_model() if self.is_lora else self.model

    @property
    def device(self) -> torch.device:
        """Where the model's weights are (and so where its micro-batches must go)."""
        return model_device(self.model)


def model_device(model: Any) -> torch.device:
    """The device of a model's first parameter (CPU for a model without parameters)."""
    first = next(iter(model.parameters()), None)
    return first.device if first is not None else torch.device("cpu")


def load_trainable(
    model: str, *, lora: LoraSettings | None = None, adapter_dir: str | Path | None = None, cache: str | Path | None = None,
    device: str | torch.device = "auto",
) -> TrainableModel:
    """Load `model` (alias, HF directory or .gguf) in float32 on `device` for training, wrapped in LoRA adapters if asked."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    model_dir = resolve_model(model, cache)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    # float32 master weights: bfloat16 parameters lose small Adam updates to rounding.
    net = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise PolicyError(f"model {model!r} has no EOS token; cannot tell where a turn ends")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    if adapter_dir is not None:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, str(adapter_dir), is_trainable=True)
    elif lora is not None:
        from peft import LoraConfig, get_peft_model

        net = get_peft_model(net, LoraConfig(
            r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
            target_modules=lora.target_modules, task_type="CAUSAL_LM",
        ))
    # After the adapters exist, so base weights and adapters move together.
    net.to(resolve_device(device))
    # Dropout off: importance ratios must compare the same function that sampled.
    net.eval()
    return TrainableModel(net, tokenizer, Path(model_dir), int(eos), int(pad))


def autocast_context(precision: str, device: torch.device | str = "cpu") -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on `device`'s type for "bf16-autocast" (auto: where bf16 is native); a no-op for "fp32"."""
    device = torch.device(device)
    if resolve_precision(precision, device) == "fp32":
        return contextlib.nullcontext()
    # The tensors' own device type: autocast on "cuda" does nothing to CPU tensors, and the reverse.
    return torch.autocast(device.type, dtype=torch.bfloat16)


def score_policy_tokens(
    model: Any, batch: MicroBatch, *, with_entropy: bool = True, precision: str = "fp32"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[B, L] log p of each policy token given its prefix (0 elsewhere), and its entropy if asked.

    Position p of the result scores input_ids[p], i.e. it comes from the logits at p - 1,
    so the result lines up with `batch.loss_mask` and `batch.old_logprobs`.
    """
    net = model.get_base_model() if hasattr(model, "peft_config") else model
    decoder, head = net.get_decoder(), net.get_output_embeddings()
    device = model_device(net)
    batch = batch.to(device)  # a no-op for batches collated on the model's device
    with autocast_context(precision, device):
        hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
        targets = batch.loss_mask[:, 1:].bool()
        logits = head(hidden[:, :-1][targets]).float()  # [N, V]: only positions that predict a policy token
    picked = batch.input_ids[:, 1:][targets]
    logprobs_flat = torch.log_softmax(logits, dim=-1).gather(-1, picked.unsqueeze(-1)).squeeze(-1)
    logprobs = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=device)
    logprobs[:, 1:][targets] = logprobs_flat
    entropy = None
    if with_entropy:
        entropy = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=device)
        entropy[:, 1:][targets] = token_entropy(logits)
    return logprobs, entropy


def mean_token_entropy(model: Any, samples: Sequence[TurnSample], token_budget: int, pad_id: int, precision: str) -> float:
    """Mean entropy (nats) of the next-token distribution over every policy token of `samples`, without gradients."""
    total, count = 0.0, 0
    with torch.no_grad():
        for mb in micro_batches(samples, token_budget, pad_id, device=model_device(model)):
            _, entropy = score_policy_tokens(model, mb, precision=precision)
            assert entropy is not None
            total += float((entropy * mb.loss_mask).sum())
            count += int(mb.loss_mask.sum())
    return total / count


def save_model(trainable: TrainableModel, out_dir: str | Path) -> Path:
    """Save weights (adapters only for LoRA) and tokenizer so `--model out_dir` or `--resume` loads them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trainable.model.save_pretrained(out)
    trainable.tokenizer.save_pretrained(out)
    return out
