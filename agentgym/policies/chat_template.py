"""The chat-templated prompt of a conversation as token ids: one definition for sampling, scoring and training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agentgym.types import Message


def prompt_token_ids(
    tokenizer: Any, messages: Sequence[Message | Mapping[str, Any]], tools: list[dict[str, Any]] | None = None
) -> list[int]:
    """Token ids of the chat-templated `messages`, ending with the assistant's turn header."""
    conversation = [m.model_dump(exclude_none=True) if isinstance(m, Message) else dict(m) for m in messages]
    text = tokenizer.apply_chat_template(conversation, tools=tools or None, add_generation_prompt=True, tokenize=False)
    # The template writes any BOS itself, so none is added here; vLLM's chat route tokenises the same way.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
