"""Teacher-forced answer scoring: tokenisation, the in-process scorer against hand computation, vLLM against it.

The vLLM test (marked slow) starts one float32 server on the tiny random model for this module.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    scorer = VLLMScorer(url, SERVED, tokenizer, timeout_s=5)
    with pytest.raises(ServerUnreachableError) as err:
        scorer_run(scorer, PAIRS)
    assert f"{url}/completions" in str(err.value) and "\n" not in str(err.value)


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
    for scorer in (VLLMScorer(server.base_url, SERVED, tokenizer), VLLMScorer(server.base_url, SERVED, tokenizer,
                                                                               prompts_per_request=1)):  # fmt: skip
        scorer_run(scorer, pairs[:2])  # warm-up: the first requests compile and fill caches
        started = time.perf_counter()
        remote = scorer_run(scorer, pairs)
        remote_ms = (time.perf_counter() - started) * 1000
        started = time.perf_counter()
        expected = scorer_run(local, pairs)
        local_ms = (time.perf_counter() - started) * 1000
        diffs = [abs(r - e) for rr, ee in zip(remote, expected, strict=True) for r, e in zip(rr, ee, strict=True)]
        assert [len(r) for r in remote] == [len(e) for e in expected]
        print(f"\n32 pairs, {scorer.prompts_per_request} per request: vLLM {remote_ms:.0f} ms, "
              f"transformers {local_ms:.0f} ms, max |diff| per token {max(diffs):.2e}")  # fmt: skip
        assert max(diffs) <= VLLM_TOL


@pytest.mark.slow
def test_vllm_errors_name_the_url(server: VLLMServer, tokenizer: Any) -> None:
    scorer = VLLMScorer(server.base_url, "no-such-model", tokenizer)
    with pytest.raises(PolicyError, match=rf"{server.base_url}/completions returned HTTP 404"):
        scorer_run(scorer, PAIRS[:1])
