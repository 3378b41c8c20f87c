"""An in-process transformers policy: concurrent `act` calls are batched into one `generate` call.

The model loads lazily, on `check()` or the first `act` (in a worker thread, so the event
loop keeps running); `load()` loads it eagerly from synchronous code. Generation runs in a
worker thread too. Requests wait up to `batch_wait_ms` for company, and requests with
equal sampling settings share one left-padded `generate` call of at most `max_batch_size`
rows: on CPU a batch of 8 costs little more than one row.

Device and dtype default to "auto" (agentgym.hardware): a GPU if there is one, and bfloat16
only where the hardware computes it natively (float32 on CPUs that would emulate it).

Seeds: a request with `SamplingParams.seed` samples from a random stream of its own (a
torch.Generator seeded with it), by the Gumbel-max trick over the temperature-scaled and
top-p-filtered logits: argmax(z + Gumbel noise) is an exact draw from softmax(z). Seeded
requests with different seeds therefore still share one batched `generate` call, and each
row's tokens depend only on its prompt, its seed and the weights, not on which other rows
were batched with it (up to the float rounding of a differently padded batch). Unseeded
sampled calls use torch's global RNG under a process-wide lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentgym.errors import PolicyError
from agentgym.models import resolve_model
from agentgym.policies.base import EpisodeContext, Policy
from agentgym.policies.chat_template import prompt_token_ids
from agentgym.types import Completion, Message, PolicyInfo, SamplingParams

if TYPE_CHECKING:
    from agentgym.hardware import Placement

# torch has one global RNG: sampled generate calls (from any policy instance) take turns, so an
# unseeded call on another thread cannot draw from a seeded call's stream between seed and sample.
_SEED_LOCK = threading.Lock()


@dataclass
class GenerateStats:
    """What the batcher did: one entry per `generate` call."""

    batch_sizes: list[int] = field(default_factory=list)
    completion_tokens: int = 0
    generate_seconds: float = 0.0

    @property
    def generate_calls(self) -> int:
        """How many `generate` calls ran."""
        return len(self.batch_sizes)


@dataclass
class _Request:
    """One queued `act` call."""

    prompt_ids: list[int]
    sampling: SamplingParams
    future: asyncio.Future[Completion]
    key: str = ""  # requests with equal keys (equal sampling settings) may share a generate call

    def __post_init__(self) -> None:
        # Seeds differ from request to request and each row keeps its own stream, so they do not split batches.
        seeded = "seeded" if self.sampling.seed is not None else "unseeded"
        self.key = f"{self.sampling.model_dump_json(exclude={'seed'})}|{seeded}"


class TransformersPolicy(Policy):
    """A Hugging Face causal LM run in this process, with token ids and raw-model logprobs."""

    def __init__(
        self,
        model: str = "smollm2-135m",
        *,
        dtype: str = "auto",
        device: str = "auto",
        max_batch_size: int = 8,
        batch_wait_ms: float = 5.0,
        cache: str | Path | None = None,
        torch_threads: int | None = None,
    ) -> None:
        from agentgym.hardware import DTYPES, check_device_spec  # imports torch: only once this policy is chosen

        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        check_device_spec(device)
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {batch_wait_ms}")
        self.model_name = str(model)
        self.dtype = dtype  # as asked; `placement` holds what load() resolved it to
        self.device = device
        self.placement: Placement | None = None  # the resolved device and dtype, set by load()
        self.max_batch_size = max_batch_size
        self.batch_wait_ms = batch_wait_ms
        self.cache = cache
        self.torch_threads = torch_threads
        self.stats = GenerateStats()
        self.model: Any = None
        self.tokenizer: Any = None
        self._eos_ids: list[int] = []
        self._load_lock = threading.Lock()
        self._weights_lock = threading.Lock()  # held while generating and while weights are replaced
        self._queue: asyncio.Queue[_Request] | None = None
        self._batcher: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- loading -------------------------------------------------------------------------

    def load(self) -> None:
        """Resolve and load the model and tokenizer now (idempotent, thread-safe)."""
        with self._load_lock:
            if self.model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging

            from agentgym.hardware import resolve_inference_placement

            # Its per-tensor "Loading weights" bars would interleave with the rollout progress bar.
            hf_logging.disable_progress_bar()

            if self.torch_threads is not None:
                torch.set_num_threads(self.torch_threads)  # process-wide: torch has one intra-op pool
            placement = resolve_inference_placement(self.device, self.dtype)
            model_dir = resolve_model(self.model_name, self.cache)
            tokenizer = AutoTokenizer.from_pretrained(model_dir)
            tokenizer.padding_side = "left"  # generated tokens must line up at the right edge
            model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, placement.precision))
            model.to(placement.device)
            model.eval()
            eos = model.generation_config.eos_token_id
            eos_ids = {*(eos if isinstance(eos, list) else [eos])} - {None}
            if tokenizer.eos_token_id is not None:
                eos_ids.add(tokenizer.eos_token_id)
            if not eos_ids:
                raise PolicyError(f"model {self.model_name!r} has no EOS token; cannot tell when a turn ends")
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            if getattr(tokenizer, "chat_template", None) is None:
                raise PolicyError(f"model {self.model_name!r} has no chat template; use an instruct/chat model")
            self._eos_ids = sorted(eos_ids)
            self.tokenizer = tokenizer
            self.placement = placement
            self.model = model  # set last: other threads test it to see whether loading finished

    def weights_lock(self) -> threading.Lock:
        """The lock that `generate` holds: take it to replace the model's weights between generations."""
        return self._weights_lock

    async def check(self) -> None:
        """Load the model (in a worker thread); raises ModelNotFoundError/PolicyError if it cannot be."""
        await asyncio.to_thread(self.load)

    # -- the Policy contract -------------------------------------------------------------

    async def act(
        self,
        messages: Sequence[Message],
        tools: list[dict[str, Any]] | None = None,
        sampling: SamplingParams | None = None,
        context: EpisodeContext | None = None,
    ) -> Completion:
        """Queue the conversation for the batcher and return its completion."""
        if self.model is None:
            await asyncio.to_thread(self.load)
        sampling = sampling or SamplingParams()
        prompt_ids = self.encode_prompt(messages, tools)
        queue = self._ensure_batcher()
        future: asyncio.Future[Completion] = asyncio.get_running_loop().create_future()
        await queue.put(_Request(prompt_ids, sampling, future))
        return await future

    def encode_prompt(self, messages: Sequence[Message], tools: list[dict[str, Any]] | None = None) -> list[int]:
        """Token ids of the chat-templated conversation, ending with the assistant's turn header."""
        if self.tokenizer is None:
            self.load()
        return prompt_token_ids(self.tokenizer, messages, tools)

    def describe(self) -> PolicyInfo:
        """Kind "transformers" and the model name as given."""
        return PolicyInfo(kind="transformers", model=self.model_name)

    async def aclose(self) -> None:
        """Stop the batcher; queued requests fail with PolicyError. The model stays loaded."""
        task, queue = self._batcher, self._queue
        self._batcher, self._queue, self._loop = None, None, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while queue is not None and not queue.empty():
            request = queue.get_nowait()
            if not request.future.done():
                request.future.set_exception(PolicyError("the transformers policy was closed"))

    # -- batching ------------------------------------------------------------------------

    def _ensure_batcher(self) -> asyncio.Queue[_Request]:
        """The queue of the batcher running on this event loop (started on first use, or after a loop change)."""
        loop = asyncio.get_running_loop()
        if self._queue is None or self._loop is not loop or self._batcher is None or self._batcher.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._batcher = loop.create_task(self._run_batcher(self._queue), name="transformers-batcher")
        return self._queue

    async def _run_batcher(self, queue: asyncio.Queue[_Request]) -> None:
        """Forever: collect a batch of same-sampling requests, generate it in a thread, resolve the futures."""
        pending: list[_Request] = []
        try:
            while True:
                if not pending:
                    pending.append(await queue.get())
                await self._collect(queue, pending)
                key = pending[0].key
                batch = [r for r in pending if r.key == key][: self.max_batch_size]
                pending = [r for r in pending if not any(r is b for b in batch)]
                batch = [r for r in batch if not r.future.done()]  # a cancelled act needs no answer
                if not batch:
                    continue
                prompts = [r.prompt_ids for r in batch]
                try:
                    seeds = [r.sampling.seed for r in batch]
                    completions = await asyncio.to_thread(self._generate, prompts, batch[0].sampling, seeds)
                except Exception as exc:  # every waiting episode sees the failure, with its cause
                    for r in batch:
                        if not r.future.done():
                            r.future.set_exception(PolicyError(f"generate failed: {type(exc).__name__}: {exc}"))
                    continue
                for r, completion in zip(batch, completions, strict=True):
                    if not r.future.done():
                        r.future.set_result(completion)
        finally:
            for r in pending:
                if not r.future.done():
                    r.future.set_exception(PolicyError("the transformers policy was closed"))

    async def _collect(self, queue: asyncio.Queue[_Request], pending: list[_Request]) -> None:
        """Add queued requests to `pending`, waiting up to batch_wait_ms until the head's batch is full."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_wait_ms / 1000
        key = pending[0].key
        while True:
            while not queue.empty():
                pending.append(queue.get_nowait())
            if sum(r.key == key for r in pending) >= self.max_batch_size:
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            try:
                pending.append(await asyncio.wait_for(queue.get(), remaining))
            except TimeoutError:
                return

    # -- generation (worker thread) --------------------------------------------------------

    def _generate(
        self, prompts: list[list[int]], sampling: SamplingParams, seeds: Sequence[int | None] | None = None
    ) -> list[Completion]:
        """One left-padded `generate` call for `prompts` (row i sampled with seeds[i] if given); one Completion each."""
        import torch

        started = time.perf_counter()
        if self.placement is None:
            raise PolicyError("the transformers policy generated before load()")
        tokenizer = self.tokenizer
        encoded = tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.placement.device)
        kwargs: dict[str, Any] = {
            "max_new_tokens": sampling.max_tokens,
            "eos_token_id": self._eos_ids,
            "pad_token_id": tokenizer.pad_token_id,
            "output_logits": True,
            "return_dict_in_generate": True,
            # Neutralise defaults a checkpoint's generation_config may carry: the request decides.
            "repetition_penalty": 1.0,
            "no_repeat_ngram_size": 0,
            "min_length": 0,
        }
        seeds = list(seeds) if seeds is not None else [sampling.seed] * len(prompts)
        if sampling.temperature == 0:
            kwargs["do_sample"] = False
        elif all(seed is not None for seed in seeds):
            # Greedy over Gumbel-perturbed logits is sampling, with one random stream per row.
            kwargs.update(do_sample=False, logits_processor=[_SeededSampler(seeds, sampling.temperature, sampling.top_p)])
        else:
            # top_k=0 switches off transformers' default top-k of 50 (OpenAI/vLLM semantics: no top-k).
            kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
        if sampling.stop:
            kwargs["stopping_criteria"] = [_StopStrings(tokenizer, sampling.stop, encoded["input_ids"].shape[1])]
        # Greedy decoding draws nothing from the RNG, so only sampled calls need the lock.
        seed_lock = _SEED_LOCK if kwargs["do_sample"] else contextlib.nullcontext()
        with seed_lock, self._weights_lock, torch.inference_mode():
            out = self.model.generate(**encoded, **kwargs)
        prompt_len = encoded["input_ids"].shape[1]
        new_tokens = out.sequences[:, prompt_len:]
        # Raw model logits at each step, [batch, steps, vocab]: logprobs ignore temperature/top-p.
        logprobs = torch.log_softmax(torch.stack(out.logits, dim=1).float(), dim=-1)
        completions = []
        for row, prompt in enumerate(prompts):
            ids = new_tokens[row].tolist()
            token_lp = logprobs[row].gather(-1, new_tokens[row].unsqueeze(-1)).squeeze(-1).tolist()
            completions.append(self._finish(prompt, ids, token_lp, sampling))
        self.stats.batch_sizes.append(len(prompts))
        self.stats.completion_tokens += sum(c.completion_tokens for c in completions)
        self.stats.generate_seconds += time.perf_counter() - started
        return completions

    def _finish(self, prompt: list[int], ids: list[int], logprobs: list[float], sampling: SamplingParams) -> Completion:
        """Cut one generated row at its EOS or first stop string and build its Completion."""
        finish = "length"
        eos_at = next((i for i, t in enumerate(ids) if t in self._eos_ids), None)
        if eos_at is not None:  # what follows the first EOS is batch padding
            ids, finish = ids[: eos_at + 1], "stop"
        text = self._decode(ids)
        if sampling.stop and any(s in text for s in sampling.stop):
            # Shortest token prefix whose text holds a stop string: the tokens stay consistent with the text.
            lo, hi = 1, len(ids)
            while lo < hi:
                mid = (lo + hi) // 2
                if any(s in self._decode(ids[:mid]) for s in sampling.stop):
                    hi = mid
                else:
                    lo = mid + 1
            ids = ids[:lo]
            text = self._decode(ids)
            text = text[: min(text.find(s) for s in sampling.stop if s in text)]
            finish = "stop"
        return Completion(
            text=text,
            prompt_token_ids=list(prompt),
            token_ids=ids,
            logprobs=logprobs[: len(ids)],
            finish_reason=finish,
            prompt_tokens=len(prompt),
            completion_tokens=len(ids),
        )

    def _decode(self, ids: list[int]) -> str:
        """Completion text without special tokens."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)


class _SeededSampler:
    """Logits processor that turns greedy decoding into sampling at `temperature`/`top_p`, one seeded stream per row.

        token = argmax_v ( z_v / T + g_v ),   g_v = -log(-log U_v),  U_v ~ Uniform(0, 1) from the row's generator

    with z_v = -inf outside the top-p nucleus. The Gumbel-max trick: the argmax is distributed as
    softmax(z / T) restricted to the nucleus, i.e. exactly the sample do_sample would draw.
    """

    def __init__(self, seeds: Sequence[int | None], temperature: float, top_p: float) -> None:
        import torch

        if temperature <= 0:
            raise ValueError(f"temperature must be positive for sampling, got {temperature}")
        self.temperature = temperature
        self.top_p = top_p
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds if seed is not None]
        if len(self.generators) != len(seeds):
            raise ValueError("every row needs a seed")

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        z = scores.float() / self.temperature
        if self.top_p < 1.0:
            z = _nucleus(z, self.top_p)
        # Drawn on the CPU from each row's own generator, so a row's noise never depends on its batch.
        uniform = torch.stack([torch.rand(z.shape[-1], generator=g) for g in self.generators]).to(z.device)
        gumbel = -torch.log(-torch.log(uniform.clamp(min=1e-12, max=1.0 - 1e-7)))
        return z + gumbel


def _nucleus(z: Any, top_p: float) -> Any:
    """Logits with everything outside the smallest set of tokens of probability mass >= top_p set to -inf."""
    import torch

    ordered, order = torch.sort(z, descending=True, dim=-1)
    mass = torch.softmax(ordered, dim=-1).cumsum(dim=-1)
    drop = mass - torch.softmax(ordered, dim=-1) >= top_p  # the mass before a token already reaches top_p
    ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.full_like(z, float("-inf")).scatter(-1, order, ordered)


class _StopStrings:
    """Stopping criterion: a row is done once the text of its recent tokens holds a stop string."""

    def __init__(self, tokenizer: Any, stops: list[str], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_len = prompt_len
        # A stop string of n characters spans at most n tokens (plus a few for partial bytes).
        self.window = max(len(s) for s in stops) + 4

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        """One bool per row: whether its generated tail holds a stop string."""
        import torch

        tails = input_ids[:, max(self.prompt_len, input_ids.shape[1] - self.window) :].tolist()
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], device=input_ids.device)
