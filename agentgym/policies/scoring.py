"""Teacher-forced scoring: log p(answer tokens | context) under a policy, from vLLM or an in-process model.

Both scorers implement `agentgym.reward_models.base.Scorer` and tokenise a pair the same way
(`answer_token_ids`): the chat-templated context ending with the assistant's header, then the
answer's own tokens (no special tokens), and they return the logprobs of the answer tokens only.

- `VLLMScorer` asks a vLLM server for prompt logprobs over the raw token ids. Tokenising here,
  not on the server, keeps the ids exactly those the in-process scorer sees (the chat route
  would template the answer as a finished turn and append tokens after it). Two routes:
  `prefix-cache` (`/inference/v1/generate`, one prompt a request, reading the prefix cache) and
  `completions` (`/v1/completions`, token-id prompts in batches, every prompt recomputed).
  vLLM skips the prefix cache for any request that asks for prompt logprobs, because it has no
  logits for cached positions; but IGPO's contexts are the prompts the rollout just prefilled,
  and only the answer's positions need logits. So the prefix-cache route reads the cache
  (`skip_reading_prefix_cache: false`, which only the generate route accepts) and checks, per
  prompt, that the server's cached-token count ends before the answer; a prompt whose answer
  fell inside the cache, or that the server could not answer, is asked again without it.
  `auto` (the default) uses the prefix-cache route where the server offers it (a server
  `VLLMServer` starts does) and falls back to completions where it does not (any other
  OpenAI-compatible vLLM).
- `TransformersScorer` runs the model itself: right-padded micro-batches, and float32
  log-softmax over the vocabulary only at the answer positions.

`scorer_for(policy)` picks the right one for an `OpenAIPolicy` or a `TransformersPolicy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import httpx

from agentgym.errors import PolicyError, ServerUnreachableError
from agentgym.policies.chat_template import prompt_token_ids
from agentgym.types import Message

if TYPE_CHECKING:
    from agentgym.policies.base import Policy

__all__ = [
    "TransformersScorer",
    "VLLMScorer",
    "answer_token_ids",
    "parse_prompt_logprobs",
    "prompt_token_ids",
    "score_prompt_logprobs",
    "scorer_for",
]

log = logging.getLogger(__name__)

Pair = tuple[Sequence[Message], str]
ScoreRoute = Literal["auto", "prefix-cache", "completions"]
_ROUTES = ("auto", "prefix-cache", "completions")


# --------------------------------------------------------------------------- tokenisation


def answer_token_ids(
    tokenizer: Any, messages: Sequence[Message], answer: str, tools: list[dict[str, Any]] | None = None
) -> tuple[list[int], int]:
    """The ids of context + answer, and the index where the answer's tokens start; ValueError for an empty answer."""
    if not answer:
        raise ValueError("the answer to score is empty: there are no answer tokens to give a log-probability")
    prompt = prompt_token_ids(tokenizer, messages, tools)
    answer_ids = list(tokenizer(answer, add_special_tokens=False)["input_ids"])
    if not answer_ids:
        raise ValueError(f"the answer {answer!r} tokenises to no tokens")
    if not prompt:
        # The first token has no logprob (nothing predicts it): an answer needs a context before it.
        raise ValueError("the context tokenises to no tokens; the first answer token would have no logprob")
    return prompt + answer_ids, len(prompt)


# --------------------------------------------------------------------------- vLLM prompt logprobs


def _one_line(text: str, limit: int = 300) -> str:
    """`text` collapsed to one line and cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _prompt_logprobs_payload(model: str, prompt: list[int] | list[list[int]]) -> dict[str, Any]:
    """The /v1/completions body that returns the logprob of every prompt token and generates (almost) nothing."""
    return {"model": model, "prompt": prompt, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0}


def _error_text(response: httpx.Response) -> str:
    """The server's error message (vLLM's {"error": {"message"}} or FastAPI's {"detail"}), on one line."""
    try:
        body = response.json()
    except ValueError:
        return _one_line(response.text)
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return _one_line(str(error["message"]))
        if body.get("detail"):
            return _one_line(str(body["detail"]))
    return _one_line(json.dumps(body))


def _transport_error(exc: httpx.HTTPError, url: str, timeout: float) -> PolicyError:
    """The error to raise for a request to `url` that got no answer."""
    if isinstance(exc, httpx.TimeoutException):
        return PolicyError(f"scoring: no answer from {url} within {timeout} s ({type(exc).__name__})")
    reason = _one_line(str(exc)) or type(exc).__name__
    return ServerUnreachableError(url, f"cannot reach it: {reason}")


def _response_json(response: httpx.Response, url: str) -> dict[str, Any]:
    """The JSON body of a successful scoring answer; PolicyError naming `url` otherwise."""
    if response.is_error:
        raise PolicyError(f"scoring: POST {url} returned HTTP {response.status_code}: {_error_text(response)}")
    try:
        data = response.json()
    except ValueError:
        raise PolicyError(f"scoring: {url} answered with no JSON: {_one_line(response.text)}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"scoring: {url} answered {_one_line(json.dumps(data))}, not a completion")
    return data


def _choice_entries(data: Mapping[str, Any], count: int, url: str) -> list[Any]:
    """The prompt_logprobs lists of a completions answer, one per prompt, in prompt order."""
    choices = data.get("choices") or [{}]
    if len(choices) != count:
        raise PolicyError(f"scoring: {url} answered {len(choices)} choices for {count} prompts")
    entries = [c.get("prompt_logprobs") for c in sorted(choices, key=lambda c: int(c.get("index", 0)))]
    if count == 1 and entries[0] is None:
        entries = [data.get("prompt_logprobs")]  # some versions put them at the top level
    return entries


def parse_prompt_logprobs(entries: Any, token_ids: Sequence[int], url: str, first: int = 1) -> list[float]:
    """log p(token_ids[j] | token_ids[:j]) for j = first..n-1 from vLLM's prompt_logprobs entries (entry 0 is null)."""
    if not isinstance(entries, list) or len(entries) != len(token_ids):
        got = len(entries) if isinstance(entries, list) else type(entries).__name__
        raise PolicyError(f"scoring: expected {len(token_ids)} prompt_logprobs entries from {url}, got {got}")
    if not 1 <= first <= len(token_ids):
        raise ValueError(f"first must be in 1..{len(token_ids)}, got {first}")
    out = []
    for j, (token, entry) in enumerate(zip(token_ids[first:], entries[first:]), start=first):
        if isinstance(entry, list):  # some versions send a list of {token_id, logprob} records
            entry = {str(e.get("token_id", e.get("token"))): e for e in entry if isinstance(e, dict)}
        if not isinstance(entry, dict) or str(token) not in entry:
            raise PolicyError(
                f"scoring: no logprob for prompt token {j} (id {token}) from {url} in {_one_line(str(entry))}"
            )
        value = entry[str(token)]
        out.append(float(value["logprob"] if isinstance(value, dict) else value))
    return out


def _check_prompt(token_ids: Sequence[int]) -> list[int]:
    """`token_ids` as plain ints; ValueError when fewer than two (the first token has no logprob)."""
    if len(token_ids) < 2:
        raise ValueError("prompt logprobs need at least two token ids (the first has no logprob)")
    return [int(t) for t in token_ids]


def score_prompt_logprobs(base_url: str, model: str, token_ids: list[int], timeout: float = 60.0) -> list[float]:
    """Server-side teacher-forced log p(token_ids[j] | token_ids[:j]) for j = 1..n-1 (vLLM prompt_logprobs)."""
    ids = _check_prompt(token_ids)
    url = base_url.rstrip("/") + "/completions"
    try:
        with httpx.Client(timeout=timeout) as client:
            response = client.post(url, json=_prompt_logprobs_payload(model, ids))
    except httpx.HTTPError as exc:
        raise _transport_error(exc, url, timeout) from exc
    entries = _choice_entries(_response_json(response, url), 1, url)[0]
    return parse_prompt_logprobs(entries, ids, url)


def _generate_payload(model: str, token_ids: list[int], *, read_cache: bool) -> dict[str, Any]:
    """The /inference/v1/generate body: the prompt's logprobs, generating (almost) nothing, cache read or not."""
    sampling = {
        "max_tokens": 1, "temperature": 0, "prompt_logprobs": 0,
        "skip_reading_prefix_cache": not read_cache,
        # Cached positions come back unfilled: detokenising their ids would fail on the server.
        "detokenize": False,
    }  # fmt: skip
    return {"model": model, "token_ids": token_ids, "sampling_params": sampling}


class _RouteUnavailable(Exception):
    """The server does not offer the prefix-cache route, or cannot say how much of a prompt it cached."""


class VLLMScorer:
    """Scorer over a vLLM server's prompt logprobs: pairs tokenised here, the prefix cache read where it is safe."""

    def __init__(
        self,
        base_url: str,
        model: str | Callable[[], str],
        tokenizer: Any,
        *,
        concurrency: int = 8,
        timeout_s: float | None = 60.0,
        prompts_per_request: int = 8,
        route: ScoreRoute = "auto",
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`model` is the served name, or a callable giving it at each call (a LoRA sync changes it).

        `route`: "prefix-cache", "completions", or "auto" (the first where the server offers it,
        decided at the first call). `prompts_per_request` batches the completions route only.
        `transport` replaces httpx's network transport (a test's fake server).
        """
        if concurrency < 1 or prompts_per_request < 1:
            raise ValueError("concurrency and prompts_per_request must be at least 1")
        if route not in _ROUTES:
            raise ValueError(f"route must be one of {_ROUTES}, got {route!r}")
        self.base_url = base_url.rstrip("/")
        self.url = self.base_url + "/completions"
        self.generate_url = self.base_url.removesuffix("/v1") + "/inference/v1/generate"
        self._model = model
        self.tokenizer = tokenizer
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.prompts_per_request = prompts_per_request
        self.route: ScoreRoute = route
        self.transport = transport
        # What the prefix-cache route saved and what it had to redo, for benchmarks and tests:
        # prompt tokens sent and read from the cache, and prompts asked again without it.
        self.prompt_tokens = 0
        self.cache_read_tokens = 0
        self.recomputed = 0

    @property
    def model(self) -> str:
        """The served model name requests ask for now."""
        return self._model() if callable(self._model) else self._model

    async def answer_logprobs(self, pairs: Sequence[Pair]) -> list[list[float]]:
        """For each (context messages, answer text): the log-probability of each answer token."""
        encoded = [answer_token_ids(self.tokenizer, messages, answer) for messages, answer in pairs]
        if not encoded:
            return []
        # The same prompt twice (a group's rollouts share their first context) is scored once.
        unique: dict[tuple[tuple[int, ...], int], int] = {}
        for ids, start in encoded:
            unique.setdefault((tuple(ids), start), len(unique))
        rows = [(list(ids), start) for ids, start in unique]
        gate = asyncio.Semaphore(self.concurrency)
        model = self.model  # one name for the whole call, even if a sync changes it meanwhile
        async with httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport) as client:
            scored = await self._score_rows(client, gate, model, rows)
        return [list(scored[unique[(tuple(ids), start)]]) for ids, start in encoded]

    async def _score_rows(
        self, client: httpx.AsyncClient, gate: asyncio.Semaphore, model: str, rows: list[tuple[list[int], int]]
    ) -> list[list[float]]:
        """Answer-token logprobs of each (ids, answer start) row, through the route this scorer uses."""
        first: list[list[float]] = []
        if self.route == "auto":
            # The first prompt alone tells whether the server offers the route; the rest follow it.
            try:
                first = [await self._score_cached(client, gate, model, *rows[0])]
                self.route = "prefix-cache"
            except _RouteUnavailable:
                self.route = "completions"
        if self.route == "prefix-cache":
            rest = rows[len(first) :]
            try:
                scored = await asyncio.gather(*(self._score_cached(client, gate, model, ids, st) for ids, st in rest))
            except _RouteUnavailable as exc:
                raise PolicyError(f"scoring: {self.generate_url} cannot score with the prefix cache: {exc}") from None
            return first + list(scored)
        # Several prompts per request and several requests in flight: vLLM batches them all in its
        # scheduler, and a long list of pairs never becomes one huge body that times out as a whole.
        step = self.prompts_per_request
        chunks = [rows[i : i + step] for i in range(0, len(rows), step)]
        results = await asyncio.gather(*(self._score_chunk(client, gate, model, chunk) for chunk in chunks))
        return [row for chunk in results for row in chunk]

    async def _score_cached(
        self, client: httpx.AsyncClient, gate: asyncio.Semaphore, model: str, ids: list[int], start: int
    ) -> list[float]:
        """One prompt through /inference/v1/generate reading the prefix cache; again without it if the answer was cached."""
        # The unfilled entries of cached positions are whatever memory held; one that reads as NaN
        # makes the server refuse to encode its answer (HTTP 400 "Out of range float values are not
        # JSON compliant"): a cache read the server cannot answer is asked again without the cache.
        data = await self._post(client, gate, self.generate_url, _generate_payload(model, ids, read_cache=True), or_none=True)
        self.prompt_tokens += len(ids)
        if data is not None:
            cached = _cached_tokens(data)
            if cached is None:
                raise _RouteUnavailable("its answers carry no cached-token count (start it with --enable-prompt-tokens-details)")
            # Position start - 1 predicts the first answer token: its logits exist only if it was computed.
            if cached <= start - 1:
                self.cache_read_tokens += cached
                return parse_prompt_logprobs(data.get("prompt_logprobs"), ids, self.generate_url, first=start)
        self.recomputed += 1
        data = await self._post(client, gate, self.generate_url, _generate_payload(model, ids, read_cache=False))
        assert data is not None  # only or_none answers None
        return parse_prompt_logprobs(data.get("prompt_logprobs"), ids, self.generate_url, first=start)

    async def _post(
        self, client: httpx.AsyncClient, gate: asyncio.Semaphore, url: str, body: dict[str, Any], *, or_none: bool = False
    ) -> dict[str, Any] | None:
        """POST `body` to `url` under the concurrency gate; the JSON answer (None for an error answer with `or_none`)."""
        async with gate:
            try:
                response = await client.post(url, json=body)
            except httpx.HTTPError as exc:
                raise _transport_error(exc, url, self.timeout_s) from exc
        if url == self.generate_url and _route_missing(response):
            raise _RouteUnavailable(f"HTTP {response.status_code}: {_error_text(response)}")
        if or_none and response.is_error:
            log.info("scoring: %s answered HTTP %s (%s); asking again", url, response.status_code, _error_text(response))
            return None
        return _response_json(response, url)

    async def _score_chunk(
        self, client: httpx.AsyncClient, gate: asyncio.Semaphore, model: str, chunk: list[tuple[list[int], int]]
    ) -> list[list[float]]:
        """One /v1/completions request for the prompts of `chunk`; the answer-token logprobs of each."""
        prompts = [ids for ids, _ in chunk]
        data = await self._post(client, gate, self.url, _prompt_logprobs_payload(model, prompts))
        assert data is not None  # only or_none answers None
        entries = _choice_entries(data, len(prompts), self.url)
        return [parse_prompt_logprobs(e, ids, self.url, first=start) for e, (ids, start) in zip(entries, chunk)]


def _route_missing(response: httpx.Response) -> bool:
    """Whether an answer says the route is not there (an unknown model's 404 is a real error, not this)."""
    # vLLM answers 403 where scale-out is off; a server without the route answers 404 or 405,
    # while vLLM's 404 for a model it does not serve names the model.
    if response.status_code in (403, 405):
        return True
    return response.status_code == 404 and "model" not in _error_text(response).lower()


def _cached_tokens(data: Mapping[str, Any]) -> int | None:
    """How many of the prompt's tokens the server took from its prefix cache (None when it does not say)."""
    details = (data.get("usage") or {}).get("prompt_tokens_details") or {}
    value = details.get("cached_tokens")
    return int(value) if isinstance(value, int) else None


# --------------------------------------------------------------------------- in-process transformers


class TransformersScorer:
    """Scorer over an in-process Hugging Face causal LM: right-padded micro-batches, log-softmax at answers only."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        device: Any,
        *,
        max_batch_tokens: int = 8192,
        lock: threading.Lock | None = None,
    ) -> None:
        """`lock`, if given, is held around each forward pass (a policy's weights lock: no sync lands mid-batch)."""
        if max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be at least 1, got {max_batch_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.device = device
        self.max_batch_tokens = max_batch_tokens
        self.lock = lock
        # Models that can skip the head for leading positions save most of a long context's logits.
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters

    async def answer_logprobs(self, pairs: Sequence[Pair]) -> list[list[float]]:
        """For each (context messages, answer text): the log-probability of each answer token."""
        encoded = [answer_token_ids(self.tokenizer, messages, answer) for messages, answer in pairs]
        if not encoded:
            return []
        # The forward passes run in a worker thread so the event loop (other episodes) keeps going.
        return await asyncio.to_thread(self.score_ids, encoded)

    def score_ids(self, encoded: Sequence[tuple[list[int], int]]) -> list[list[float]]:
        """Answer-token logprobs for (ids, answer start) rows, computed in micro-batches of similar length."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]), reverse=True)
        out: list[list[float]] = [[] for _ in encoded]
        for batch in self._micro_batches(order, encoded):
            for i, row in zip(batch, self._score_batch([encoded[i] for i in batch])):
                out[i] = row
        return out

    def _micro_batches(self, order: list[int], encoded: Sequence[tuple[list[int], int]]) -> list[list[int]]:
        """Rows (longest first) grouped so that rows x the longest row's length stays within max_batch_tokens."""
        batches: list[list[int]] = []
        for i in order:
            # `order` is longest first, so a batch's first row sets its padded width.
            if batches and (len(batches[-1]) + 1) * len(encoded[batches[-1][0]][0]) <= self.max_batch_tokens:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def _score_batch(self, rows: list[tuple[list[int], int]]) -> list[list[float]]:
        """One right-padded forward pass; float32 log-softmax at the positions that predict answer tokens."""
        import torch

        width = max(len(ids) for ids, _ in rows)
        first = min(start for _, start in rows)  # the earliest position whose next token is an answer token
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (ids, _) in enumerate(rows):
            # Right padding: a causal model's real tokens never attend to the pads after them.
            input_ids[r, : len(ids)] = torch.tensor(ids)
            mask[r, : len(ids)] = 1
        kwargs: dict[str, Any] = {"input_ids": input_ids.to(self.device), "attention_mask": mask.to(self.device)}
        offset = 0  # the sequence position of logits[:, 0]
        if self._keeps_logits:
            # Logits only from the position before the earliest answer token on: the context's are never needed.
            kwargs["logits_to_keep"] = width - (first - 1)
            offset = first - 1
        rows_at, positions, targets = _answer_positions(rows, offset)
        lock = self.lock if self.lock is not None else contextlib.nullcontext()
        with lock, torch.inference_mode():
            logits = self.model(**kwargs, use_cache=False).logits
            dev = logits.device
            picked = logits[torch.tensor(rows_at, device=dev), torch.tensor(positions, device=dev)]  # [tokens, vocab]
            logprobs = torch.log_softmax(picked.float(), dim=-1)  # float32 only at the answer positions
            chosen = logprobs.gather(-1, torch.tensor(targets, device=dev)[:, None])[:, 0].tolist()
        out, at = [], 0
        for ids, start in rows:
            out.append(chosen[at : at + len(ids) - start])
            at += len(ids) - start
        return out


def _answer_positions(rows: Sequence[tuple[list[int], int]], offset: int) -> tuple[list[int], list[int], list[int]]:
    """For every answer token of every row: its row, the logits column that predicts it, and its id."""
    rows_at: list[int] = []
    positions: list[int] = []
    targets: list[int] = []
    for r, (ids, start) in enumerate(rows):
        span = range(start - 1, len(ids) - 1)  # position p predicts token p + 1
        rows_at += [r] * len(span)
        positions += [p - offset for p in span]
        targets += ids[start:]
    return rows_at, positions, targets


# --------------------------------------------------------------------------- factory


def scorer_for(
    policy: Policy,
    tokenizer: Any = None,
    *,
    concurrency: int = 8,
    timeout_s: float | None = 60.0,
    max_batch_tokens: int = 8192,
) -> VLLMScorer | TransformersScorer:
    """The scorer for `policy`: a VLLMScorer for an OpenAIPolicy, a TransformersScorer on a TransformersPolicy's model.

    A TransformersPolicy's loaded model and tokenizer are reused (loaded now if they are not yet)
    and its weights lock is held around each forward pass. An OpenAIPolicy needs the tokenizer
    of the model it serves: pass `tokenizer` (an object or a directory), or it is loaded from the
    policy's model name when that is a local directory; PolicyError otherwise. Its scorer asks
    for the policy's current model name at each call, which a LoRA weight sync changes.
    """
    from agentgym.policies.openai_http import OpenAIPolicy
    from agentgym.policies.transformers_local import TransformersPolicy

    if isinstance(policy, TransformersPolicy):
        policy.load()
        assert policy.placement is not None  # load() sets it
        return TransformersScorer(
            policy.model, policy.tokenizer, policy.placement.device,
            max_batch_tokens=max_batch_tokens, lock=policy.weights_lock(),
        )  # fmt: skip
    if isinstance(policy, OpenAIPolicy):
        return VLLMScorer(
            policy.base_url, lambda: policy.model, _tokenizer_for(policy, tokenizer),
            concurrency=concurrency, timeout_s=timeout_s,
        )  # fmt: skip
    raise PolicyError(
        f"{type(policy).__name__} cannot score answers: use an OpenAIPolicy (vLLM) or a TransformersPolicy"
    )


def _tokenizer_for(policy: Any, tokenizer: Any) -> Any:
    """`tokenizer` (loaded when it is a path), else the tokenizer in the policy's model directory."""
    source = tokenizer if tokenizer is not None else policy.model
    if not isinstance(source, (str, Path)):
        return source
    if not Path(source).is_dir():
        raise PolicyError(
            f"scoring for the server at {policy.base_url} needs the tokenizer of {policy.model!r}: "
            "pass scorer_for(policy, tokenizer=...) (a tokenizer or its directory); "
            f"{str(source)!r} is not a local directory to load it from"
        )
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source)
