"""Typed configs of `agentgym train` and `agentgym sft`; YAML files in configs/ and key=value overrides map onto them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agentgym.hardware import check_device_spec
from agentgym.reward_models.factory import RewardSettings
from agentgym.rollout.engine import RolloutConfig
from agentgym.trainers.algorithms import get_algorithm
from agentgym.trainers.algorithms.archer import ArcherConfig
from agentgym.trainers.algorithms.ppo import PPOConfig
from agentgym.trainers.policy_model import LoraSettings
from agentgym.trainers.update import UpdateConfig
from agentgym.types import SamplingParams



class TrainRolloutConfig(RolloutConfig):
    """How training rollouts are played: the engine's settings, plus how far they may run ahead of the update."""

    max_staleness: int = Field(
        0, ge=0, description="Asynchronous rollouts: the batch of step s may be played by the weights of step s - k or "
        "newer while earlier steps update; 0: synchronous (each batch after the previous update).",
    )


def _train_rollout() -> TrainRolloutConfig:
    # Short replies and a short window: on a 2-core CPU prompt length sets the rollout time.
    return TrainRolloutConfig(concurrency=8, history_turns=2, sampling=SamplingParams(temperature=1.0, max_tokens=24))


class VLLMSettings(BaseModel):
    """The vLLM server `agentgym train` starts when no --base-url is given."""

    model_config = ConfigDict(extra="forbid")

    dtype: str = Field("float32", description="float32 keeps the server's logprobs equal to the trainer's.")
    kvcache_space_gib: int = Field(
        1, ge=1, description="vLLM's CPU KV cache (VLLM_CPU_KVCACHE_SPACE); more keeps more prompts for the prefix cache."
    )
    startup_timeout_s: float = Field(600.0, gt=0)

    def server_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `VLLMServer` that these settings fix (everything but the model, name and log)."""
        return {"dtype": self.dtype, "kvcache_space_gib": self.kvcache_space_gib, "startup_timeout": self.startup_timeout_s}


class TrainConfig(BaseModel):
    """An `agentgym train` run: collect → score → advantages → update → sync → eval → checkpoint."""

    model_config = ConfigDict(extra="forbid")

    env: str = Field(description="Registered env id.")
    env_kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for agentgym.make (training tasks).")
    eval_env_kwargs: dict[str, Any] | None = Field(
        None, description="Overrides of env_kwargs for held-out evaluation (e.g. another game set); None evaluates on env_kwargs."
    )
    model: str = Field("smollm2-135m", description="Alias, HF directory (e.g. an `agentgym sft` output) or .gguf file.")
    algo: str = Field(
        "grpo", description="A registered algorithm (trainers/algorithms): grpo | rloo (group baselines), reinforce "
        "(one batch-whitened baseline), ppo (a value head over turns, GAE), archer (an off-policy twin Q/V critic's advantage).",
    )
    rollout_backend: Literal["vllm", "inprocess"] = Field(
        "vllm", description="vllm: an OpenAI-compatible vLLM server (started unless base_url is given); inprocess: transformers."
    )
    inprocess_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "float32", description="dtype of the in-process rollout copy (rollout_backend inprocess): float32 rows give the same "
        "tokens whatever they are batched with, so a seeded run replays token for token; bfloat16 (or auto) is faster where "
        "native, but batched rows then drift apart (3 of 8 rows differed within 24 tokens on SmolLM2-135M).",
    )
    base_url: str | None = Field(None, description="A running vLLM server (started with VLLM_SERVER_DEV_MODE=1) to use and update.")
    served_model: str | None = Field(None, description="Model name the server at base_url answers to; default: model.")
    lora: LoraSettings | None = Field(None, description="Train LoRA adapters instead of all weights.")
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N: where the trained model runs (auto: cuda if present).")
    steps: int = Field(10, ge=1, description="Training steps (one batch of rollouts each).")
    tasks_per_step: int = Field(4, ge=1, description="Tasks (groups) sampled per step.")
    samples_per_task: int = Field(4, ge=1, description="Rollouts per task: the group a baseline is computed from.")
    max_draws: int = Field(
        1, ge=1, description="Dynamic sampling (DAPO): draw up to this many rounds of tasks_per_step groups in a step, "
        "dropping groups whose rollouts all scored alike, until tasks_per_step groups that disagree are in; 1: off "
        "(every group is trained on). Needs a group baseline (grpo, rloo).",
    )
    gamma: float = Field(1.0, ge=0, le=1, description="Discount of per-turn rewards into returns.")
    normalize_std: bool = Field(True, description="Divide advantages by the group (grpo) or batch (reinforce) std; ignored by rloo.")
    max_length: int = Field(2048, ge=16, description="Turns longer than this (prompt + completion tokens) are skipped.")
    reward: RewardSettings = Field(default_factory=RewardSettings, description="The reward model (`--reward`): env, dra, gra, igpo, spa.")
    archer: ArcherConfig = Field(default_factory=ArcherConfig, description="The critic and schedule of --algo archer.")
    ppo: PPOConfig = Field(default_factory=PPOConfig, description="The value head and GAE of --algo ppo.")
    rollout: TrainRolloutConfig = Field(default_factory=_train_rollout)
    update: UpdateConfig = Field(default_factory=UpdateConfig)
    eval_every: int = Field(0, ge=0, description="Evaluate on held-out tasks every N steps and after the last; 0: only after the last.")
    eval_episodes: int = Field(20, ge=0, description="Episodes per evaluation; 0 disables evaluation.")
    eval_at_start: bool = Field(False, description="Also evaluate before the first update (the starting policy's score).")
    eval_sampling: SamplingParams = Field(default_factory=lambda: SamplingParams(temperature=0.7, max_tokens=24))
    checkpoint_every: int = Field(1, ge=1, description="Save a resumable checkpoint every N steps (and after the last).")
    keep_checkpoints: int = Field(2, ge=1, description="Newest checkpoints kept on disk.")
    vllm: VLLMSettings = Field(default_factory=VLLMSettings)
    entropy_probe: str | None = Field(
        None, description="Trajectories JSONL whose turns are fixed prompts: the policy's entropy on them is logged "
        "every step as policy/probe_entropy (free of which tasks a step drew); None: off.",
    )
    entropy_probe_turns: int = Field(64, ge=1, description="How many turns of entropy_probe to measure on.")
    seed: int = 0
    out: str | None = Field(None, description="Run directory; default runs/train-<env>-<time>.")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return check_device_spec(value)

    @field_validator("algo")
    @classmethod
    def _check_algo(cls, value: str) -> str:
        get_algorithm(value)  # an unknown or renamed name fails here, with the known ones
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.base_url and self.rollout_backend != "vllm":
            raise ValueError("base_url needs rollout_backend vllm")
        errors = get_algorithm(self.algo).config_errors(self)
        if errors:
            raise ValueError("; ".join(errors))
        from agentgym.trainers.advantages import UnknownAdvantageError, get_advantage

        try:
            get_advantage(self.estimator)
        except UnknownAdvantageError as exc:
            raise ValueError(f"reward.advantage: {exc}") from None
        return self

    @property
    def estimator(self) -> str:
        """The advantage estimator: the reward block's, else the one its reward model is meant for, else `algo`'s."""
        return self.reward.advantage_for(get_algorithm(self.algo).estimator)


class SFTConfig(BaseModel):
    """An `agentgym sft` run: supervised fine-tuning on recorded trajectories, in the trainer's masked format."""

    model_config = ConfigDict(extra="forbid")

    data: list[str] = Field(description="trajectories.jsonl files (e.g. from `agentgym eval --policy walkthrough`).")
    model: str = "smollm2-135m"
    lora: LoraSettings | None = None
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N: where the model trains (auto: cuda if present).")
    only_success: bool = Field(True, description="Train only on trajectories that succeeded.")
    epochs: int = Field(2, ge=1)
    batch_size: int = Field(16, ge=1, description="Turns per optimiser step.")
    max_length: int = Field(2048, ge=16)
    update: UpdateConfig = Field(default_factory=lambda: UpdateConfig(lr=1e-4))
    seed: int = 0
    out: str | None = Field(None, description="Run directory; the model goes to OUT/model. Default runs/sft-<time>.")

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        return check_device_spec(value)
