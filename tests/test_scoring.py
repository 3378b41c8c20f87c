"""Teacher-forced answer scoring: tokenisation, the in-process scorer against hand computation, vLLM against it.

The vLLM test (marked slow) starts one float32 server on the tiny random model for this module.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from agentgym.errors import PolicyError, ServerUnreachableError
from agentgym.policies.scoring import (
    TransformersScorer,
    VLLMScorer,
    answer_token_ids,
    parse_prompt_logprobs,
    scorer_for,
)
from agentgym.serve import VLLMServer, free_port
from agentgym.types import Message

# TransformersScorer vs one unbatched forward pass per pair, both float32 on the same model: only the
# float rounding of a padded batch's matmuls differs (~1e-7 measured), so 1e-5 is generous.
BATCH_TOL = 1e-5
# vLLM vs transformers, both float32: different kernels (vLLM's CPU attention, fused MLP) round
# differently. The weight-sync tests measure ~5e-7 on this model and FIELD-NOTES ~1e-5 on SmolLM2;
# 1e-3 per token leaves room for kernel changes while staying far below a real mismatch
# (a wrong position or token shifts a logprob by whole nats on a random model).
VLLM_TOL = 1e-3
SERVED = "tiny"


def chat(*texts: str) -> list[Message]:
    """A conversation alternating user and assistant messages, starting with a user."""
    return [Message(role="user" if i % 2 == 0 else "assistant", content=t) for i, t in enumerate(texts)]


# Three pairs of different context and answer lengths, so a batch pads some of them.
PAIRS: list[tuple[list[Message], str]] = [
    (chat("the cat opens the box quickly."), "a red apple"),
    (chat("a dog sees the kitchen.", "the robot moves to the north room.", "my friend finds a small key again!"),
     "the key"),
    (chat("the agent drops the table."), "the player goes to the garden at night. Then look around."),
]  # fmt: skip


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    """The tiny model's tokenizer."""
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> Any:
    """The tiny random model in float32, eval mode."""
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def by_hand(model: Any, tokenizer: Any, messages: list[Message], answer: str) -> list[float]:
    """log p(answer tokens | context) from one unbatched, unpadded forward pass over the whole vocabulary."""
    prompt = tokenizer.apply_chat_template(
        [m.model_dump(exclude_none=True) for m in messages], add_generation_prompt=True, tokenize=False
    )
    context = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([context + answer_ids])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return [logprobs[len(context) + k - 1, t].item() for k, t in enumerate(answer_ids)]


# --------------------------------------------------------------------------- tokenisation


def test_answer_follows_the_assistant_header(tokenizer: Any) -> None:
    ids, start = answer_token_ids(tokenizer, chat("the cat opens the box."), "a red apple")
    assert tokenizer.decode(ids[:start]).endswith("<|im_start|>assistant\n")
    assert tokenizer.decode(ids[start:]) == "a red apple"
    assert ids[start:] == tokenizer("a red apple", add_special_tokens=False)["input_ids"]


def test_prompt_ids_are_the_transformers_policys(tiny_model_dir: Path, tokenizer: Any) -> None:
    from agentgym.policies.transformers_local import TransformersPolicy

    policy = TransformersPolicy(str(tiny_model_dir), dtype="float32", device="cpu")
    for messages, answer in PAIRS:
        ids, start = answer_token_ids(tokenizer, messages, answer)
        assert ids[:start] == policy.encode_prompt(messages)


def test_empty_answer_is_a_value_error(tokenizer: Any, model: Any) -> None:
    with pytest.raises(ValueError, match="empty"):
        answer_token_ids(tokenizer, chat("hello"), "")
    scorer = TransformersScorer(model, tokenizer, "cpu")
    with pytest.raises(ValueError, match="empty"):
        scorer_run(scorer, [(chat("hello"), "")])
    vllm = VLLMScorer(f"http://127.0.0.1:{free_port()}/v1", SERVED, tokenizer)
    with pytest.raises(ValueError, match="empty"):  # refused before any request is sent
        scorer_run(vllm, [(chat("hello"), "the cat"), (chat("hello"), "")])


def scorer_run(scorer: Any, pairs: list[tuple[list[Message], str]]) -> list[list[float]]:
    """scorer.answer_logprobs(pairs) on a fresh event loop."""
    import asyncio

    return asyncio.run(scorer.answer_logprobs(pairs))


# --------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("max_batch_tokens", [8192, 60])
def test_transformers_scorer_equals_unbatched_hand_computation(
    model: Any, tokenizer: Any, max_batch_tokens: int
) -> None:
    # 8192: one padded batch of all three; 60: the longest row alone, then the other two padded together.
    scorer = TransformersScorer(model, tokenizer, "cpu", max_batch_tokens=max_batch_tokens)
    got = scorer_run(scorer, PAIRS)
    lengths = {len(answer_token_ids(tokenizer, m, a)[0]) for m, a in PAIRS}
    assert len(lengths) == 3  # the batch really pads
    for (messages, answer), row in zip(PAIRS, got, strict=True):
        expected = by_hand(model, tokenizer, messages, answer)
        assert len(row) == len(tokenizer(answer, add_special_tokens=False)["input_ids"])
        torch.testing.assert_close(torch.tensor(row), torch.tensor(expected), atol=BATCH_TOL, rtol=0)
    assert scorer_run(scorer, []) == []


def test_scorer_for_a_transformers_policy_reuses_its_model(tiny_model_dir: Path, model: Any, tokenizer: Any) -> None:
    from agentgym.policies.transformers_local import TransformersPolicy

    policy = TransformersPolicy(str(tiny_model_dir), dtype="float32", device="cpu")
    scorer = scorer_for(policy)
    assert isinstance(scorer, TransformersScorer)
    assert scorer.model is policy.model and scorer.tokenizer is policy.tokenizer
    assert scorer.lock is policy.weights_lock()
    expected = by_hand(model, tokenizer, *PAIRS[0])
    got = torch.tensor(scorer_run(scorer, PAIRS[:1])[0])
    torch.testing.assert_close(got, torch.tensor(expected), atol=BATCH_TOL, rtol=0)


def test_scorer_for_an_openai_policy_needs_a_tokenizer(tiny_model_dir: Path, tokenizer: Any) -> None:
    from agentgym.policies.openai_http import OpenAIPolicy

    with pytest.raises(PolicyError, match="tokenizer="):
        scorer_for(OpenAIPolicy("http://127.0.0.1:1/v1", "smollm2-135m"))
    policy = OpenAIPolicy("http://127.0.0.1:1/v1", str(tiny_model_dir))
    scorer = scorer_for(policy)  # the served name is a local directory: its tokenizer is loaded from there
    assert isinstance(scorer, VLLMScorer) and scorer.tokenizer.get_vocab() == tokenizer.get_vocab()
    policy.model = "tiny-lora-3"  # what a LoRA weight sync does: the scorer follows
    assert scorer.model == "tiny-lora-3"
    assert scorer_for(policy, tokenizer=tokenizer).tokenizer is tokenizer


# --------------------------------------------------------------------------- vLLM


def test_unreachable_server_names_the_url(tokenizer: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    for route, path in (("completions", "/v1/completions"), ("auto", "/inference/v1/generate")):
        scorer = VLLMScorer(url, SERVED, tokenizer, timeout_s=5, route=route)
        with pytest.raises(ServerUnreachableError) as err:
            scorer_run(scorer, PAIRS)
        assert url.removesuffix("/v1") + path in str(err.value) and "\n" not in str(err.value)


def fake_logprob(ids: list[int], j: int) -> float:
    """The fake server's log p(ids[j] | ids[:j]): depends on the token and its position, so a shifted read shows."""
    return -0.01 * (ids[j] % 7 + 1) - 0.001 * j


class FakeVLLM:
    """vLLM's two scoring routes as the real server answers them, prefix cache included.

    The prefix cache holds every prompt prefix seen, in blocks of `block` tokens; a request that
    reads it gets `cached_tokens` (at most all but the last token) and, like vLLM, unfilled
    entries (a wrong token id) at the cached positions.
    """

    def __init__(
        self, *, scale_out: bool = True, details: bool = True, block: int = 4, nan_in_cache: bool = False,
        generate_route: bool = True,
    ) -> None:  # fmt: skip
        self.scale_out, self.details, self.block, self.nan_in_cache = scale_out, details, block, nan_in_cache
        self.generate_route = generate_route  # False: an older server, or another OpenAI-compatible one
        self.seen: list[list[int]] = []
        self.requests: list[tuple[str, bool]] = []  # (path, read the cache)

    def entries(self, ids: list[int], cached: int) -> list[Any]:
        """prompt_logprobs for `ids`: null first, garbage where cached, the true token's logprob after."""
        return [None] + [
            {str(ids[j] + 1 if j <= cached else ids[j]): {"logprob": 3.0 if j <= cached else fake_logprob(ids, j)}}
            for j in range(1, len(ids))
        ]

    def cached(self, ids: list[int]) -> int:
        """Tokens of `ids` a request would read from the cache: the longest shared prefix, whole blocks, not the last token."""
        best = 0
        for old in self.seen:
            n = 0
            while n < min(len(old), len(ids)) and old[n] == ids[n]:
                n += 1
            best = max(best, n)
        return min(best // self.block * self.block, (len(ids) - 1) // self.block * self.block)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if request.url.path == "/inference/v1/generate":
            ids, params = body["token_ids"], body["sampling_params"]
            read = not params["skip_reading_prefix_cache"]
            self.requests.append((request.url.path, read))
            if not self.generate_route:
                return httpx.Response(404, text="404 page not found")
            if not self.scale_out:
                return httpx.Response(403, json={"error": {"message": "Scale-out endpoints are disabled."}})
            cached = self.cached(ids) if read else 0
            self.seen.append(ids)
            if self.nan_in_cache and cached:  # an unfilled entry that reads as NaN: the JSON encoder refuses it
                return httpx.Response(400, json={"error": {"message": "Out of range float values are not JSON compliant"}})
            # Logits exist from position `cached` on, and position j - 1 predicts token j.
            out: dict[str, Any] = {"prompt_logprobs": self.entries(ids, cached), "choices": [{"token_ids": [0]}]}
            if self.details:
                out["usage"] = {"prompt_tokens": len(ids), "prompt_tokens_details": {"cached_tokens": cached}}
            return httpx.Response(200, json=out)
        assert request.url.path == "/v1/completions"
        self.requests.append((request.url.path, False))
        prompts = body["prompt"]
        return httpx.Response(200, json={"choices": [
            {"index": i, "prompt_logprobs": self.entries(ids, 0)} for i, ids in enumerate(prompts)]})  # fmt: skip


def fake_scorer(fake: FakeVLLM, tokenizer: Any, route: str = "auto") -> VLLMScorer:
    """A VLLMScorer whose requests go to `fake`."""
    return VLLMScorer("http://fake/v1", SERVED, tokenizer, route=route, transport=httpx.MockTransport(fake))


def expected(tokenizer: Any, pairs: list[tuple[list[Message], str]]) -> list[list[float]]:
    """The fake server's true answer-token logprobs for `pairs`."""
    rows = [answer_token_ids(tokenizer, m, a) for m, a in pairs]
    return [[fake_logprob(ids, j) for j in range(start, len(ids))] for ids, start in rows]


def test_prefix_cache_route_never_returns_a_cached_positions_entry(tokenizer: Any) -> None:
    fake = FakeVLLM()
    scorer = fake_scorer(fake, tokenizer)
    # The same context with a second answer shares its prefix: the cache covers the context only.
    pairs = [PAIRS[0], (PAIRS[0][0], "a blue pear"), PAIRS[1]]
    assert scorer_run(scorer, pairs) == expected(tokenizer, pairs)
    assert scorer.route == "prefix-cache" and scorer.recomputed == 0
    assert all(path == "/inference/v1/generate" and read for path, read in fake.requests)
    # Asked again, whole prompts are cached up to their last block: the answers of those whose
    # answer reaches back past it are asked again without the cache, and still come out right.
    fake.requests.clear()
    assert scorer_run(scorer, pairs) == expected(tokenizer, pairs)
    assert scorer.recomputed >= 1 and sum(not read for _, read in fake.requests) == scorer.recomputed


def test_a_cached_read_the_server_cannot_encode_is_asked_again_without_the_cache(tokenizer: Any) -> None:
    fake = FakeVLLM(nan_in_cache=True)
    scorer = fake_scorer(fake, tokenizer)
    pairs = [PAIRS[0], (PAIRS[0][0], "a blue pear")]  # the second shares the first's context: a cache hit
    assert scorer_run(scorer, pairs) == expected(tokenizer, pairs)
    assert scorer.route == "prefix-cache" and scorer.recomputed == 1


def test_auto_route_falls_back_to_completions_where_the_server_lacks_it(tokenizer: Any) -> None:
    for fake in (FakeVLLM(scale_out=False), FakeVLLM(details=False), FakeVLLM(generate_route=False)):
        scorer = fake_scorer(fake, tokenizer)
        assert scorer_run(scorer, PAIRS) == expected(tokenizer, PAIRS)
        assert scorer.route == "completions"
        assert [path for path, _ in fake.requests[1:]] == ["/v1/completions"]  # one batch of three after the probe
    with pytest.raises(PolicyError, match="enable-prompt-tokens-details"):
        scorer_run(fake_scorer(FakeVLLM(details=False), tokenizer, route="prefix-cache"), PAIRS)


def test_a_repeated_pair_is_asked_once(tokenizer: Any) -> None:
    for route in ("prefix-cache", "completions"):
        fake = FakeVLLM()
        scorer = fake_scorer(fake, tokenizer, route=route)
        scorer.prompts_per_request = 1
        pairs = [PAIRS[0], PAIRS[1], PAIRS[0], PAIRS[0]]
        assert scorer_run(scorer, pairs) == expected(tokenizer, pairs)
        assert len(fake.requests) == 2


def test_parser_reads_both_entry_forms_and_names_a_missing_token() -> None:
    dict_form = [None, {"7": {"logprob": -1.5, "rank": 3}}, {"9": {"logprob": -0.25}}]
    list_form = [None, [{"token_id": 7, "logprob": -1.5}], [{"token_id": 9, "logprob": -0.25}]]
    assert parse_prompt_logprobs(dict_form, [1, 7, 9], "U") == [-1.5, -0.25]
    assert parse_prompt_logprobs(list_form, [1, 7, 9], "U") == [-1.5, -0.25]
    with pytest.raises(PolicyError, match=r"prompt token 2 \(id 8\) from U"):
        parse_prompt_logprobs(dict_form, [1, 7, 8], "U")
    with pytest.raises(PolicyError, match="expected 4 prompt_logprobs entries from U, got 3"):
        parse_prompt_logprobs(dict_form, [1, 7, 9, 9], "U")


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path) -> Iterator[VLLMServer]:
    """One float32 vLLM server on the tiny random model for this module."""
    with VLLMServer(tiny_model_dir, name=SERVED, dtype="float32", startup_timeout=600) as s:
        yield s


def many_pairs(n: int) -> list[tuple[list[Message], str]]:
    """`n` pairs cycling through PAIRS with the contexts varied, so no two prompts are the same."""
    return [(chat(f"{m[0].content} ({i})", *(x.content for x in m[1:])), a) for i, (m, a) in
            enumerate(PAIRS[i % len(PAIRS)] for i in range(n))]  # fmt: skip


@pytest.mark.slow
def test_vllm_scorer_agrees_with_transformers_scorer(server: VLLMServer, model: Any, tokenizer: Any) -> None:
    pairs = many_pairs(32)
    local = TransformersScorer(model, tokenizer, "cpu")
    # Contexts of a few hundred tokens sharing their first ~250: longer than vLLM's CPU cache block
    # (128 tokens), so the prefix-cache route really reads the cache, and (warm) finds answers in it.
    preamble = " ".join(["the agent walks to the kitchen, opens the box and looks around."] * 20)
    pairs = [(chat(f"{preamble} {m[0].content}", *(x.content for x in m[1:])), a) for m, a in pairs]
    url = server.base_url
    started = time.perf_counter()
    want = scorer_run(local, pairs)
    local_ms = (time.perf_counter() - started) * 1000
    scorers = [VLLMScorer(url, SERVED, tokenizer), VLLMScorer(url, SERVED, tokenizer, route="completions"),
               VLLMScorer(url, SERVED, tokenizer, route="completions", prompts_per_request=1)]  # fmt: skip
    for scorer in scorers:
        scorer_run(scorer, pairs[:2])  # warm-up: the first requests compile and fill caches
        # Twice: the second time every prompt is in the prefix cache, the answers' positions included.
        for attempt in ("cold", "warm"):
            started = time.perf_counter()
            remote = scorer_run(scorer, pairs)
            remote_ms = (time.perf_counter() - started) * 1000
            diffs = [abs(r - e) for rr, ee in zip(remote, want, strict=True) for r, e in zip(rr, ee, strict=True)]
            assert [len(r) for r in remote] == [len(e) for e in want]
            print(f"\n32 pairs, {scorer.route} route, {attempt}: vLLM {remote_ms:.0f} ms, transformers {local_ms:.0f} ms, "
                  f"max |diff| per token {max(diffs):.2e}, cache tokens read {scorer.cache_read_tokens}, "
                  f"asked again without the cache {scorer.recomputed}")  # fmt: skip
            assert max(diffs) <= VLLM_TOL
    cached = scorers[0]
    assert cached.route == "prefix-cache"  # a server VLLMServer starts offers it
    assert cached.cache_read_tokens > 0 and cached.recomputed > 0  # both of its paths ran, and agreed
    assert scorers[1].cache_read_tokens == 0


@pytest.mark.slow
def test_vllm_errors_name_the_url(server: VLLMServer, tokenizer: Any) -> None:
    root = server.base_url.removesuffix("/v1")
    for route, path in (("completions", "/v1/completions"), ("auto", "/inference/v1/generate")):
        scorer = VLLMScorer(server.base_url, "no-such-model", tokenizer, route=route)
        with pytest.raises(PolicyError, match=rf"{root}{path} returned HTTP 404"):
            scorer_run(scorer, PAIRS[:1])
