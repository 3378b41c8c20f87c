"""Policies: OpenAI-compatible HTTP (vLLM and external APIs), in-process transformers, scripted."""

from agentgym.policies.base import EpisodeContext, Policy
from agentgym.policies.scripted import CallablePolicy, RandomAdmissiblePolicy, ScriptedPolicy, WalkthroughPolicy

__all__ = ["CallablePolicy", "EpisodeContext", "Policy", "RandomAdmissiblePolicy", "ScriptedPolicy", "WalkthroughPolicy"]
