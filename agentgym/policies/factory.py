"""Build a Policy from its config."""

from __future__ import annotations

from agentgym.config import PolicyConfig
from agentgym.policies.base import Policy
from agentgym.policies.scripted import WalkthroughPolicy


def build_policy(cfg: PolicyConfig) -> Policy:
    """The policy `cfg` describes; heavy backends are imported only when chosen."""
    if cfg.kind == "walkthrough":
        return WalkthroughPolicy()
    if cfg.kind == "openai":
        from agentgym.policies.openai_http import OpenAIPolicy

        assert cfg.base_url and cfg.model  # guaranteed by PolicyConfig's validator
        return OpenAIPolicy(cfg.base_url, cfg.model, cfg.api_key)
    from agentgym.policies.transformers_local import TransformersPolicy

    assert cfg.model
    return TransformersPolicy(cfg.model, dtype=cfg.dtype, max_batch_size=cfg.max_batch_size)
