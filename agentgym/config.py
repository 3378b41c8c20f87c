"""Typed configs for the CLI's jobs; YAML files in configs/ and command-line flags both map onto them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agentgym.errors import AgentGymError
from agentgym.rollout.engine import RolloutConfig

PolicyKind = Literal["transformers", "openai", "walkthrough", "random"]


class PolicyConfig(BaseModel):
    """Which policy plays: an in-process model, a server, the env's walkthrough, or random admissible actions."""

    model_config = ConfigDict(extra="forbid")

    kind: PolicyKind | None = Field(None, description="Inferred when omitted: openai with base_url, transformers with model.")
    model: str | None = Field(None, description="Alias (smollm2-135m), HF directory, .gguf file, or the served model name.")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")
    api_key: str | None = Field(None, description="API key for base_url, if the server wants one.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="In-process model dtype; auto: bfloat16 where the hardware computes it natively, else float32."
    )
    device: str = Field("auto", description="In-process model device: auto | cpu | cuda | cuda:N.")
    max_batch_size: int = Field(8, ge=1, description="In-process policy: requests batched into one generate call.")

    @model_validator(mode="after")
    def _infer_kind(self) -> PolicyConfig:
        if self.kind is None:
            if self.base_url:
                self.kind = "openai"
            elif self.model:
                self.kind = "transformers"
            else:
                raise ValueError("say which policy plays: --model NAME, --base-url URL --model NAME, or --policy walkthrough")
        if self.kind == "openai" and not (self.base_url and self.model):
            raise ValueError("an OpenAI-compatible policy needs both --base-url and --model")
        if self.kind == "transformers" and not self.model:
            raise ValueError("the transformers policy needs --model (e.g. smollm2-135m)")
        return self


class EvalConfig(BaseModel):
    """An `agentgym eval` run."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field(description="Registered env id.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for agentgym.make.")
    policy: PolicyConfig
    episodes: int = Field(20, ge=1, description="Episodes to play, cycling through the env's tasks.")
    samples_per_task: int = Field(1, ge=1, description="Rollouts per (task, seed) group.")
    seed: int = Field(0, description="Seed of the first episode group; group g uses seed + g.")
    out: str | None = Field(None, description="Output directory; default runs/eval-<env>-<time>.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise AgentGymError(f"config file {str(p)!r} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise AgentGymError(f"config file {str(p)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise AgentGymError(f"config file {str(p)!r} must hold a mapping at the top level")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` over `base`, recursing into nested mappings."""
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def parse_key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """`["a=1", "b=x"]` → `{"a": 1, "b": "x"}`; values are read as YAML scalars (numbers, booleans, null)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise AgentGymError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def dotted_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["update.lr=1e-5", "steps=3"]` → `{"update": {"lr": 1e-05}, "steps": 3}`, for KEY=VALUE overrides of nested configs."""
    out: dict[str, Any] = {}
    for key, value in parse_key_values(pairs, "override").items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise AgentGymError(f"override {key!r} conflicts with another override of {part!r}")
            node = child
        node[leaf] = value
    return out


def build_config(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """Validate `data` into `model`, turning pydantic's report into one readable error."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in exc.errors())
        raise AgentGymError(f"invalid {model.__name__}: {problems}") from None
