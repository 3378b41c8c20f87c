"""TransformersPolicy on tiny local Llamas: batching, token ids, raw logprobs, greedy, stop strings, EOS."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from tests.tiny_model import TINY_REPLY
from transformers import AutoModelForCausalLM

from agentgym.errors import ModelNotFoundError, PolicyError
from agentgym.policies.transformers_local import TransformersPolicy
from agentgym.types import Completion, Message, SamplingParams

GREEDY = SamplingParams(temperature=0, max_tokens=12)
PROMPTS = [
    "the dog opens the box.",
    "a player goes to the north room and takes a small key quickly!",
    "look",
    "the robot eats a red apple at night. Then look around.",
    "my friend finds the table?",
    "the key",
]


def chat(text: str) -> list[Message]:
    """A one-message user conversation."""
    return [Message(role="system", content="You play a game."), Message(role="user", content=text)]


def teacher_forced_logprobs(model_dir: Path, prompt_ids: list[int], completion_ids: list[int]) -> torch.Tensor:
    """log p(completion token | everything before it) from one unpadded float32 forward pass: [n, vocab]."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0]
    return torch.log_softmax(logits[len(prompt_ids) - 1 : -1].float(), dim=-1)


async def _started(model_dir: Path, max_batch_size: int) -> AsyncIterator[TransformersPolicy]:
    """A loaded float32 policy that waits long enough to batch everything sent at once; closed afterwards."""
    p = TransformersPolicy(str(model_dir), dtype="float32", max_batch_size=max_batch_size, batch_wait_ms=50)
    await p.check()
    yield p
    await p.aclose()


@pytest.fixture()
async def policy(tiny_model_dir: Path) -> AsyncIterator[TransformersPolicy]:
    """The random tiny model, batches of at most 4."""
    async for p in _started(tiny_model_dir, max_batch_size=4):
        yield p


async def test_concurrent_acts_share_generate_calls(policy: TransformersPolicy) -> None:
    results = await asyncio.gather(*(policy.act(chat(p), sampling=GREEDY) for p in PROMPTS + PROMPTS[:2]))
    assert len(results) == 8
    assert sum(policy.stats.batch_sizes) == 8
    assert policy.stats.generate_calls < 8
    assert max(policy.stats.batch_sizes) > 1
    assert max(policy.stats.batch_sizes) <= policy.max_batch_size


async def test_different_sampling_params_are_not_mixed(policy: TransformersPolicy) -> None:
    short, long_ = SamplingParams(temperature=0, max_tokens=3), SamplingParams(temperature=0, max_tokens=7)
    calls = [policy.act(chat(p), sampling=short) for p in PROMPTS[:3]]
    calls += [policy.act(chat(p), sampling=long_) for p in PROMPTS[3:]]
    results = await asyncio.gather(*calls)
    assert policy.stats.generate_calls == 2  # one per sampling setting
    assert sorted(policy.stats.batch_sizes) == [3, 3]
    assert all(r.completion_tokens <= 3 for r in results[:3])
    assert any(r.completion_tokens > 3 for r in results[3:])


@pytest.mark.parametrize(
    "sampling",
    [GREEDY, SamplingParams(temperature=1.3, top_p=0.9, max_tokens=12, seed=7)],
    ids=["greedy", "sampled"],
)
async def test_token_ids_and_logprobs_match_teacher_forcing(
    policy: TransformersPolicy, tiny_model_dir: Path, sampling: SamplingParams
) -> None:
    # Prompts of different lengths share one left-padded batch; logprobs must still be the raw model's.
    results = await asyncio.gather(*(policy.act(chat(p), sampling=sampling) for p in PROMPTS[:3]))
    assert max(policy.stats.batch_sizes) == 3
    for prompt, result in zip(PROMPTS[:3], results, strict=True):
        assert result.prompt_token_ids == policy.encode_prompt(chat(prompt))
        assert result.prompt_tokens == len(result.prompt_token_ids)
        assert result.completion_tokens == len(result.token_ids) == len(result.logprobs) > 0
        expected = teacher_forced_logprobs(tiny_model_dir, result.prompt_token_ids, result.token_ids)
        at_sampled = expected.gather(-1, torch.tensor(result.token_ids).unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(torch.tensor(result.logprobs), at_sampled, atol=1e-4, rtol=0)
        if sampling.temperature == 0:
            assert expected.argmax(-1).tolist() == result.token_ids
        assert result.text == policy.tokenizer.decode(result.token_ids, skip_special_tokens=True)


async def test_greedy_is_deterministic_and_batch_independent(tiny_model_dir: Path) -> None:
    batched_policy = TransformersPolicy(str(tiny_model_dir), dtype="float32", max_batch_size=8, batch_wait_ms=50)
    single_policy = TransformersPolicy(str(tiny_model_dir), dtype="float32", max_batch_size=1)
    try:
        batched = await asyncio.gather(*(batched_policy.act(chat(p), sampling=GREEDY) for p in PROMPTS))
        assert batched_policy.stats.batch_sizes == [len(PROMPTS)]
        alone = [await single_policy.act(chat(p), sampling=GREEDY) for p in PROMPTS]
        again = [await single_policy.act(chat(p), sampling=GREEDY) for p in PROMPTS]
        assert single_policy.stats.batch_sizes == [1] * (2 * len(PROMPTS))
        for b, a, r in zip(batched, alone, again, strict=True):
            assert b.token_ids == a.token_ids == r.token_ids
            assert b.text == a.text == r.text
            assert b.finish_reason == a.finish_reason
        assert len({tuple(b.token_ids) for b in batched}) > 1  # the prompts matter, so padding could have hurt
    finally:
        await batched_policy.aclose()
        await single_policy.aclose()


async def test_seeded_sampling_repeats(policy: TransformersPolicy) -> None:
    sampling = SamplingParams(temperature=1.0, max_tokens=10, seed=123)
    first = await policy.act(chat(PROMPTS[0]), sampling=sampling)
    second = await policy.act(chat(PROMPTS[0]), sampling=sampling)
    other = await policy.act(chat(PROMPTS[0]), sampling=sampling.model_copy(update={"seed": 124}))
    assert first.token_ids == second.token_ids
    assert other.token_ids != first.token_ids


async def test_a_seed_at_batch_size_one_gives_the_same_tokens_in_any_policy(tiny_model_dir: Path) -> None:
    """Token for token, from a fresh policy too, and whatever unseeded sampling ran in between."""
    hot = SamplingParams(temperature=1.5, max_tokens=16)
    runs: list[list[list[int]]] = []
    for _ in range(2):
        p = TransformersPolicy(str(tiny_model_dir), dtype="float32", max_batch_size=1)
        try:
            await p.act(chat(PROMPTS[1]), sampling=hot)  # unseeded: moves torch's global RNG
            runs.append([(await p.act(chat(PROMPTS[0]), sampling=hot.model_copy(update={"seed": s}))).token_ids
                         for s in (7, 8, 7)])
        finally:
            await p.aclose()
    assert runs[0] == runs[1]
    assert runs[0][0] == runs[0][2]  # seed 7 again
    assert runs[0][0] != runs[0][1]  # 16 tokens at temperature 1.5: seeds 7 and 8 differ (very likely; fixed here)


class _CountingLock:
    """A lock that counts how often it was taken."""

    def __init__(self) -> None:
        self.entered = 0

    def __enter__(self) -> None:
        self.entered += 1

    def __exit__(self, *exc: object) -> None:
        return None


async def test_every_sampled_generate_holds_the_rng_lock(policy: TransformersPolicy, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unseeded sampled call in another thread must not draw from a seeded call's stream between seed and sample."""
    from agentgym.policies import transformers_local

    lock = _CountingLock()
    monkeypatch.setattr(transformers_local, "_SEED_LOCK", lock)
    await policy.act(chat("look"), sampling=SamplingParams(temperature=1.0, max_tokens=4))
    assert lock.entered == 1
    # A seeded call draws from its own generator, and greedy from none: neither touches the global RNG.
    await policy.act(chat("look"), sampling=SamplingParams(temperature=1.0, max_tokens=4, seed=3))
    await policy.act(chat("look"), sampling=GREEDY)
    assert lock.entered == 1


async def test_seeded_rows_sample_the_same_tokens_alone_or_batched(tiny_model_dir: Path) -> None:
    """Each seeded request keeps its own stream: batching it with other seeds changes nothing."""
    hot = SamplingParams(temperature=1.5, max_tokens=12)
    batched_policy = TransformersPolicy(str(tiny_model_dir), dtype="float32", max_batch_size=8, batch_wait_ms=50)
    single_policy = TransformersPolicy(str(tiny_model_dir), dtype="float32", max_batch_size=1)
    try:
        seeded = [hot.model_copy(update={"seed": 100 + i}) for i in range(len(PROMPTS))]
        batched = await asyncio.gather(*(batched_policy.act(chat(p), sampling=s) for p, s in zip(PROMPTS, seeded)))
        assert batched_policy.stats.batch_sizes == [len(PROMPTS)]  # different seeds, one generate call
        alone = [await single_policy.act(chat(p), sampling=s) for p, s in zip(PROMPTS, seeded)]
        assert [b.token_ids for b in batched] == [a.token_ids for a in alone]
        assert len({tuple(b.token_ids) for b in batched}) > 1
    finally:
        await batched_policy.aclose()
        await single_policy.aclose()


def test_the_seeded_sampler_draws_from_the_softmax_within_the_nucleus() -> None:
    from agentgym.policies.transformers_local import _SeededSampler

    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    draws = 4000
    counts = torch.zeros(5)
    for seed in range(draws):
        counts[int(_SeededSampler([seed], 1.0, 1.0)(None, logits).argmax())] += 1
    expected = torch.softmax(logits[0], dim=-1)
    # 4000 draws: each frequency within 4 standard errors of its probability.
    assert torch.all((counts / draws - expected).abs() <= 4 * (expected * (1 - expected) / draws).sqrt() + 1e-3)
    # top_p 0.8: the nucleus is the first two tokens (0.64 + 0.24 >= 0.8), renormalised.
    nucleus = torch.zeros(5)
    for seed in range(1000):
        nucleus[int(_SeededSampler([seed], 1.0, 0.8)(None, logits).argmax())] += 1
    assert nucleus[2:].sum() == 0 and 0.6 < nucleus[0] / 1000 < 0.85


async def test_auto_dtype_and_device_come_from_the_hardware(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentgym import hardware

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    p = TransformersPolicy(str(tiny_model_dir))
    assert (p.dtype, p.device) == ("auto", "auto")
    p.load()
    assert p.placement is not None and p.placement.device == torch.device("cpu")
    assert p.placement.precision == hardware.resolve_dtype("auto", "cpu")
    assert {q.dtype for q in p.model.parameters()} == {getattr(torch, p.placement.precision)}
    # A CPU without bf16 instructions (AVX2 only): auto loads float32.
    monkeypatch.setattr(hardware, "machine_cpu_flags", lambda: frozenset({"avx2"}))
    monkeypatch.setattr(hardware, "torch_cpu_capability", lambda: "AVX2")
    avx2 = TransformersPolicy(str(tiny_model_dir))
    avx2.load()
    assert avx2.placement is not None and avx2.placement.precision == "float32"
    assert {q.dtype for q in avx2.model.parameters()} == {torch.float32}
    result = await avx2.act(chat("look"), sampling=GREEDY)
    await avx2.aclose()
    assert result.token_ids


async def test_an_explicit_cuda_device_without_a_gpu_fails_at_check(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentgym.hardware import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA"):
        await TransformersPolicy(str(tiny_model_dir), device="cuda").check()


@pytest.fixture()
async def reply_policy(tiny_reply_model_dir: Path) -> AsyncIterator[TransformersPolicy]:
    """The tiny model that always answers TINY_REPLY, batches of at most 8."""
    async for p in _started(tiny_reply_model_dir, max_batch_size=8):
        yield p


async def test_eos_ends_the_completion(reply_policy: TransformersPolicy) -> None:
    sampling = SamplingParams(temperature=0, max_tokens=40)
    result = await reply_policy.act(chat("the dog opens the box."), sampling=sampling)
    eos = reply_policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert result.text == TINY_REPLY  # no special tokens in the text
    assert result.finish_reason == "stop"
    assert result.token_ids[-1] == eos and eos not in result.token_ids[:-1]
    assert len(result.logprobs) == len(result.token_ids) < 40


async def test_max_tokens_gives_length(reply_policy: TransformersPolicy) -> None:
    result = await reply_policy.act(chat("look"), sampling=SamplingParams(temperature=0, max_tokens=3))
    assert result.finish_reason == "length"
    assert len(result.token_ids) == 3
    assert TINY_REPLY.startswith(result.text) and result.text != TINY_REPLY


async def test_rows_ending_early_lose_their_batch_padding(reply_policy: TransformersPolicy) -> None:
    # Hot sampling makes rows of one batch end at different steps; pad == EOS for this tokenizer,
    # so leftover padding would show up as repeated EOS tokens.
    # Each row its own seed (as the engine asks): equal seeds would draw equal noise on every row.
    sampling = SamplingParams(temperature=2.5, max_tokens=30)
    results = await asyncio.gather(*(
        reply_policy.act(chat(p), sampling=sampling.model_copy(update={"seed": i})) for i, p in enumerate(PROMPTS)
    ))
    assert reply_policy.stats.batch_sizes == [len(PROMPTS)]
    eos = reply_policy.tokenizer.convert_tokens_to_ids("<|im_end|>")
    ended = [r for r in results if r.finish_reason == "stop"]
    assert ended, "expected some rows to sample EOS"
    assert len({len(r.token_ids) for r in results}) > 1
    for r in results:
        assert r.token_ids.count(eos) == (1 if r.finish_reason == "stop" else 0)
        assert r.finish_reason == "length" or r.token_ids[-1] == eos
        assert len(r.logprobs) == len(r.token_ids)


async def test_stop_string_cuts_text_and_tokens(reply_policy: TransformersPolicy) -> None:
    sampling = SamplingParams(temperature=0, max_tokens=40, stop=["zzz", "sat"])
    results = await asyncio.gather(
        *(reply_policy.act(chat(p), sampling=sampling) for p in PROMPTS[:3]),
        reply_policy.act(chat("look"), sampling=SamplingParams(temperature=0, max_tokens=40, stop=["zzz"])),
    )
    decode = reply_policy.tokenizer.decode
    for r in results[:3]:
        assert r.text == TINY_REPLY[: TINY_REPLY.index("sat")]
        assert r.finish_reason == "stop"
        assert "sat" in decode(r.token_ids) and "sat" not in decode(r.token_ids[:-1])
        assert len(r.logprobs) == len(r.token_ids)
    assert results[3].text == TINY_REPLY  # a stop string that never appears changes nothing


async def test_describe_and_bad_arguments(tiny_model_dir: Path) -> None:
    info = TransformersPolicy(str(tiny_model_dir)).describe()
    assert (info.kind, info.model) == ("transformers", str(tiny_model_dir))
    with pytest.raises(ValueError, match="dtype"):
        TransformersPolicy(str(tiny_model_dir), dtype="float8")
    with pytest.raises(ValueError, match="device"):
        TransformersPolicy(str(tiny_model_dir), device="gpu")
    with pytest.raises(ModelNotFoundError, match="smollm2-135m"):
        await TransformersPolicy("no-such-model").check()


async def test_aclose_fails_waiting_requests_and_policy_restarts(policy: TransformersPolicy) -> None:
    policy.batch_wait_ms = 10_000  # keep the request waiting for company
    pending = asyncio.ensure_future(policy.act(chat("look"), sampling=GREEDY))
    await asyncio.sleep(0.2)
    await policy.aclose()
    with pytest.raises(PolicyError, match="closed"):
        await pending
    policy.batch_wait_ms = 0
    result = await policy.act(chat("look"), sampling=GREEDY)
    assert isinstance(result, Completion) and result.token_ids


@pytest.mark.slow
async def test_smollm2_turn_in_the_hardware_dtype() -> None:
    p = TransformersPolicy("smollm2-135m")  # dtype auto: bfloat16 where native, else float32
    try:
        result = await p.act(
            [Message(role="user", content="Say hello.")], sampling=SamplingParams(temperature=0, max_tokens=16)
        )
    finally:
        await p.aclose()
    assert result.text.strip()
    assert result.completion_tokens == len(result.token_ids) == len(result.logprobs)
    assert all(lp <= 0 for lp in result.logprobs)
