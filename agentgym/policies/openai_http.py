"""A policy served by any OpenAI-compatible HTTP server (vLLM, external APIs), via the async openai client."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import httpx
import openai

from agentgym.errors import ContextOverflowError, ModelNotFoundError, PolicyError, ServerUnreachableError
from agentgym.policies.base import EpisodeContext, Policy
from agentgym.tool_calls import ToolCall, render_tool_call
from agentgym.types import Completion, FunctionCall, Message, PolicyInfo, SamplingParams, ToolCallRecord

log = logging.getLogger(__name__)

# vLLM's extensions that return the exact token ids, so trainers never re-tokenise text.
VLLM_TOKEN_ID_EXTRAS = {"return_token_ids": True, "return_tokens_as_token_ids": True}

# How servers word a request that outgrows the context window: vLLM ("This model's maximum context length
# is N tokens ...", "... is too large ... maximum context length"), OpenAI (code context_length_exceeded).
_CONTEXT_OVERFLOW = re.compile(r"maximum context length|context length|context_length_exceeded|prompt is too long", re.I)


class OpenAIPolicy(Policy):
    """Chat completions from `base_url`; token ids and logprobs are recorded whenever the server returns them.

    The first call asks for logprobs and vLLM's token-id extensions; a server that refuses
    them (HTTP 400) is asked again without, and later calls skip them.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout_s: float = 600.0, max_retries: int = 2) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=max_retries
        )
        self._extras: bool | None = None  # None until the server has told us whether it takes them
        self._tool_choice: str | None = None  # "none" once the server refused to parse tool calls itself

    async def check(self) -> None:
        """Fail with one clear line when no server answers or it does not serve `model`."""
        try:
            page = await self._client.with_options(timeout=10.0, max_retries=0).models.list()
        except (openai.APIConnectionError, httpx.HTTPError) as exc:
            raise ServerUnreachableError(self.base_url, _reason(exc)) from None
        except openai.APIStatusError as exc:
            raise PolicyError(f"server at {self.base_url} answered {exc.status_code} to /models: {exc.message}") from None
        served = [m.id for m in page.data]
        if served and self.model not in served:
            raise ModelNotFoundError(f"model {self.model!r} is not served at {self.base_url} (it serves: {', '.join(served)})")

    async def act(
        self,
        messages: Sequence[Message],
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
        context: EpisodeContext | None = None,
    ) -> Completion:
        """One chat completion for `messages`."""
        sampling = sampling or SamplingParams()
        request: dict[str, Any] = {
            "model": self.model,
            "messages": [m.model_dump(exclude_none=True) for m in messages],
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
        }
        if sampling.stop:
            request["stop"] = sampling.stop
        if sampling.seed is not None:
            request["seed"] = sampling.seed
        if tools:
            request["tools"] = tools
            if self._tool_choice:
                request["tool_choice"] = self._tool_choice
        if self._extras is not False:
            try:
                response = await self._create(request, extras=True)
                self._extras = True
            except openai.BadRequestError as exc:
                if self._extras is True:
                    raise
                log.info("server at %s refused logprobs/token ids (%s); continuing without them", self.base_url, exc.message)
                self._extras = False
                response = await self._create(request, extras=False)
        else:
            response = await self._create(request, extras=False)
        return _to_completion(response)

    async def _create(self, request: dict[str, Any], *, extras: bool) -> Any:
        kwargs = dict(request)
        if extras:
            kwargs.update(logprobs=True, top_logprobs=0, extra_body=dict(VLLM_TOKEN_ID_EXTRAS))
        try:
            return await self._client.chat.completions.create(**kwargs)
        except openai.APIConnectionError as exc:
            raise ServerUnreachableError(self.base_url, _reason(exc)) from exc
        except openai.BadRequestError as exc:
            if is_context_overflow(exc):
                raise ContextOverflowError(f"server at {self.base_url}: {exc.message}") from exc
            # vLLM started without a tool-call parser refuses tools with the default tool_choice "auto".
            # With "none" the tools still reach the chat template and the model answers in text, which
            # tool envs read (agentgym.tool_calls); later calls ask that way from the start.
            if "tools" not in kwargs or "tool_choice" in kwargs or "tool choice" not in exc.message.lower():
                raise
            log.info("server at %s cannot parse tool calls (%s); asking with tool_choice='none'", self.base_url, exc.message)
            self._tool_choice = "none"
            return await self._create({**request, "tool_choice": "none"}, extras=extras)

    def describe(self) -> PolicyInfo:
        """The model and server that answered."""
        return PolicyInfo(kind="openai", model=self.model, base_url=self.base_url)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.close()


def _to_completion(response: Any) -> Completion:
    """Map a chat completion (with vLLM's extra fields when present) onto a Completion."""
    choice = response.choices[0]
    content = choice.message.content or ""
    text = content
    # A server with a tool-call parser returns calls as structured fields, not text. Envs read actions
    # as text, so the calls are written back in the <tool_call> form that agentgym.tool_calls parses;
    # the records are kept too, so the history answers them as tool messages with their ids.
    records: list[ToolCallRecord] = []
    for n, call in enumerate(getattr(choice.message, "tool_calls", None) or []):
        arguments = call.function.arguments or ""
        try:
            parsed = json.loads(arguments) if arguments else {}
        except json.JSONDecodeError:
            parsed = arguments
        text += render_tool_call(ToolCall(call.function.name, parsed))
        call_id = getattr(call, "id", None) or f"call_{n}"
        records.append(ToolCallRecord(id=call_id, function=FunctionCall(name=call.function.name, arguments=arguments or "{}")))
    token_ids = getattr(choice, "token_ids", None)
    logprobs: list[float] | None = None
    entries = choice.logprobs.content if choice.logprobs is not None else None
    if entries:
        logprobs = [float(e.logprob) for e in entries]
        if token_ids is None and all(e.token.startswith("token_id:") for e in entries):
            token_ids = [int(e.token.split(":", 1)[1]) for e in entries]
    usage = response.usage
    return Completion(
        text=text,
        prompt_token_ids=getattr(response, "prompt_token_ids", None),
        token_ids=list(token_ids) if token_ids is not None else None,
        logprobs=logprobs,
        finish_reason=choice.finish_reason,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else len(token_ids or []),
        tool_calls=records or None,
        content=content if records else None,
    )


def is_context_overflow(exc: openai.BadRequestError) -> bool:
    """Whether a 400 answer says the prompt plus max_tokens does not fit the model's context."""
    code = getattr(exc, "code", None)
    return code == "context_length_exceeded" or bool(_CONTEXT_OVERFLOW.search(exc.message or ""))


def _reason(exc: BaseException) -> str:
    """The innermost cause of a connection failure, e.g. 'connection refused'."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc) or type(exc).__name__
    if "refused" in text.lower() or "all connection attempts failed" in text.lower():
        return "connection refused: nothing is listening there"
    return text
