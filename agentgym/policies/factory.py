"""Build a Policy from its config."""

from __future__ import annotations

from agentgym.config import PolicyConfig
from agentgym.policies.base import Policy
from agentgym.policies.scripted import RandomAdmissiblePolicy, WalkthroughPolicy


def build_policy(cfg: PolicyConfig) -> Policy:
    """The policy `cfg` describes; heavy backends are imported only when chosen."""
    if cfg.kind == "walkthrough":
        return WalkthroughPolicy()
    if cfg.kind == "random":
        return RandomAdmissiblePolicy()
    if cfg.kind == "openai":
        from agentgym.policies.openai_http import OpenAIPolicy

        return OpenAIPolicy(str(cfg.base_url), str(cfg.model), cfg.api_key)  # both present: PolicyConfig checks
    from agentgym.policies.transformers_local import TransformersPolicy

    return TransformersPolicy(str(cfg.model), dtype=cfg.dtype, device=cfg.device, max_batch_size=cfg.max_batch_size)
