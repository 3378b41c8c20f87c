#!/usr/bin/env python
"""Asynchronous rollouts on this machine: time per training step and held-out success at max_staleness 0, 1, 2.

Three parts, all on SmolLM2-135M (a model from `agentgym sft`, given with --model) and easy
TextWorld with configs/train-textworld.yaml:

  staleness  `agentgym train` from the same model and seeds with rollout.max_staleness 0, 1 and 2:
             wall time per step (evaluations excluded), what the step waited for rollouts, the
             update's time, how stale the rollouts were, and held-out success with its 95% interval
  replay     the synchronous rollout path (RolloutEngine + OpenAIPolicy) against a direct replay of
             the same requests (same prompts, seeds and max_tokens) to the same vLLM server at the
             same concurrency: generated tokens/s of each and their ratio (goal >= 0.9)
  prefix     vLLM's prefix-cache hit rate and the time per turn with the default prompt window
             (history_turns 2) against the full history (history_turns None)

    .venv/bin/python benchmarks/async_rollouts.py --model runs/demo/sft/model             # about 35 minutes
    .venv/bin/python benchmarks/async_rollouts.py --model M --steps 4 --parts staleness
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import openai
from rich.console import Console
from rich.table import Table

import agentgym
from agentgym.config import load_yaml
from agentgym.models import resolve_model
from agentgym.policies.base import EpisodeContext
from agentgym.policies.openai_http import VLLM_TOKEN_ID_EXTRAS, OpenAIPolicy
from agentgym.rollout.engine import RolloutEngine, plan_episodes
from agentgym.serve import VLLMServer
from agentgym.trainers.config import TrainConfig
from agentgym.trainers.loop import engine_config
from agentgym.types import Completion, Message, SamplingParams

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_runs import ROOT, train_run  # noqa: E402

console = Console(width=140)


# --------------------------------------------------------------------------- staleness


def train_config(args: argparse.Namespace, staleness: int, out: Path) -> TrainConfig:
    """The config's run from --model with rollout.max_staleness = `staleness`."""
    data = load_yaml(args.config)
    data.update(model=args.model, steps=args.steps, out=str(out))
    data.setdefault("rollout", {})["max_staleness"] = staleness
    return TrainConfig.model_validate(data)


def staleness_run(args: argparse.Namespace, staleness: int) -> dict[str, Any]:
    """One `agentgym train` run in its own process (`train_runs.train_run`); per-step times and the final held-out evaluation."""
    started = time.perf_counter()
    steps, summary = train_run(
        Path(args.config), {"model": args.model, "steps": args.steps, "rollout": {"max_staleness": staleness}},
        Path(args.out) / f"staleness-{staleness}",
    )
    wall = time.perf_counter() - started
    return {
        "staleness": staleness, "wall": wall,
        "step": [m["time/step"] for m in steps],
        "wait": [m["time/rollout_wait"] for m in steps],
        "update": [m.get("time/update") or 0.0 for m in steps],
        "stale_mean": statistics.mean(m.get("rollout/staleness_mean") or 0.0 for m in steps),
        "tis_truncated": statistics.mean(m.get("policy/tis_truncated_fraction") or 0.0 for m in steps),
        "success": summary.success_rate, "ci": summary.success_ci95, "episodes": summary.episodes,
    }


def staleness_table(runs: Sequence[dict[str, Any]]) -> Table:
    table = Table(title="Asynchronous rollouts: the same model, config and seeds (2-core CPU, vLLM beside the trainer)")
    for col in ("max_staleness", "s/step (mean)", "s/step after step 1", "speed-up", "waited for rollouts s/step",
                "update s/step", "mean staleness", "TIS truncated", "held-out success (95% CI)"):
        table.add_column(col, justify="right")
    base = statistics.mean(runs[0]["step"][1:] or runs[0]["step"])
    for r in runs:
        later = statistics.mean(r["step"][1:] or r["step"])
        low, high = r["ci"]
        table.add_row(
            str(r["staleness"]), f"{statistics.mean(r['step']):.1f}", f"{later:.1f}", f"{base / later:.2f}x",
            f"{statistics.mean(r['wait']):.1f}", f"{statistics.mean(r['update']):.1f}", f"{r['stale_mean']:.2f}",
            f"{r['tis_truncated']:.4f}", f"{r['success']:.3f} ({low:.2f}-{high:.2f}, n={r['episodes']})",
        )
    return table


# --------------------------------------------------------------------------- replay and prefix cache


class RecordingPolicy(OpenAIPolicy):
    """An OpenAIPolicy that keeps each request's messages and sampling settings, to replay them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.requests: list[tuple[list[Message], SamplingParams]] = []

    async def act(self, messages: Sequence[Message], tools: Any = None, sampling: SamplingParams | None = None,
                  context: EpisodeContext | None = None) -> Completion:
        self.requests.append((list(messages), sampling or SamplingParams()))
        return await super().act(messages, tools, sampling, context)


async def play(server: VLLMServer, cfg: TrainConfig, episodes: int, history_turns: int | None) -> dict[str, Any]:
    """Play `episodes` training-config episodes through the engine; tokens, time, and the requests made."""
    policy = RecordingPolicy(server.base_url, "policy")
    rollout = engine_config(cfg, cfg.rollout.sampling).model_copy(update={"history_turns": history_turns})
    tasks = agentgym.registry.task_ids(cfg.env, **cfg.env_kwargs)
    engine = RolloutEngine(lambda: agentgym.make(cfg.env, **cfg.env_kwargs), policy, rollout, env_id=cfg.env)
    before = prefix_counters(server)
    started = time.perf_counter()
    trajs = await engine.run(plan_episodes(tasks, episodes, seed=7))
    wall = time.perf_counter() - started
    after = prefix_counters(server)
    await policy.aclose()
    turns = [u for t in trajs for u in t.turns]
    queries, hits = after[0] - before[0], after[1] - before[1]
    return {
        "wall": wall, "turns": len(turns), "generated": sum(u.completion_tokens for u in turns),
        "prompt": sum(u.prompt_tokens for u in turns), "hit_rate": hits / queries if queries else float("nan"),
        "success": sum(bool(t.success) for t in trajs) / len(trajs), "requests": policy.requests,
        "concurrency": rollout.concurrency,
    }


async def replay(server: VLLMServer, requests: Sequence[tuple[list[Message], SamplingParams]], concurrency: int) -> dict[str, float]:
    """Send the same requests straight to the server, `concurrency` at a time, as the policy asks them."""
    client = openai.AsyncOpenAI(base_url=server.base_url, api_key="EMPTY", timeout=600)
    gate = asyncio.Semaphore(concurrency)
    generated = 0

    async def one(messages: list[Message], sampling: SamplingParams) -> None:
        nonlocal generated
        async with gate:
            response = await client.chat.completions.create(
                model="policy", messages=[m.model_dump(exclude_none=True) for m in messages],
                temperature=sampling.temperature, top_p=sampling.top_p, max_tokens=sampling.max_tokens,
                seed=sampling.seed, logprobs=True, top_logprobs=0, extra_body=dict(VLLM_TOKEN_ID_EXTRAS),
            )
            generated += response.usage.completion_tokens if response.usage else 0

    reset_prefix_cache(server)
    started = time.perf_counter()
    await asyncio.gather(*(one(m, s) for m, s in requests))
    wall = time.perf_counter() - started
    await client.close()
    return {"wall": wall, "generated": generated}


def prefix_counters(server: VLLMServer) -> tuple[float, float]:
    """vLLM's cumulative prefix-cache (queries, hits) in tokens, from its Prometheus /metrics."""
    text = httpx.get(server.base_url.removesuffix("/v1") + "/metrics", timeout=30).text
    totals = {"queries": 0.0, "hits": 0.0}
    for line in text.splitlines():
        match = re.match(r"vllm:(?:gpu_)?prefix_cache_(queries|hits)(?:_total)?(?:\{[^}]*\})? ([0-9.eE+-]+)$", line)
        if match:
            totals[match.group(1)] += float(match.group(2))
    return totals["queries"], totals["hits"]


def reset_prefix_cache(server: VLLMServer) -> None:
    """Empty the prefix cache, so each measurement starts cold."""
    httpx.post(server.base_url.removesuffix("/v1") + "/reset_prefix_cache", timeout=30)


def serving_tables(args: argparse.Namespace, parts: set[str]) -> list[Table]:
    """The replay and prefix-cache parts, on one vLLM server of --model."""
    cfg = train_config(args, 0, Path(args.out) / "serving")
    tables = []
    with VLLMServer(resolve_model(args.model), name="policy", log_path=Path(args.out) / "serving-vllm.log",
                    **cfg.vllm.server_kwargs()) as server:
        async def measure() -> None:
            reset_prefix_cache(server)
            await play(server, cfg, 8, cfg.rollout.history_turns)  # warm-up: compile paths, allocate the cache
            if "replay" in parts:
                reset_prefix_cache(server)
                engine = await play(server, cfg, args.episodes, cfg.rollout.history_turns)
                direct = await replay(server, engine["requests"], engine["concurrency"])
                table = Table(title=f"Rollout engine against a direct replay of its requests ({args.episodes} episodes, "
                                    f"concurrency {engine['concurrency']}, the same vLLM server)")
                for col in ("path", "requests", "generated tokens", "wall s", "generated tokens/s", "ratio"):
                    table.add_column(col, justify="right")
                engine_rate = engine["generated"] / engine["wall"]
                direct_rate = direct["generated"] / direct["wall"]
                table.add_row("RolloutEngine + OpenAIPolicy + TextWorld", str(len(engine["requests"])),
                              str(engine["generated"]), f"{engine['wall']:.1f}", f"{engine_rate:.1f}", f"{engine_rate / direct_rate:.2f}")
                table.add_row("direct replay (openai client)", str(len(engine["requests"])), str(direct["generated"]),
                              f"{direct['wall']:.1f}", f"{direct_rate:.1f}", "1.00")
                tables.append(table)
            if "prefix" in parts:
                table = Table(title=f"Prompt window against full history ({args.episodes} episodes each, cold prefix cache)")
                for col in ("history", "turns", "prompt tokens/turn", "prefix-cache hit rate", "s/turn", "generated tokens/s", "success"):
                    table.add_column(col, justify="right")
                for history in (cfg.rollout.history_turns, None):
                    reset_prefix_cache(server)
                    r = await play(server, cfg, args.episodes, history)
                    label = "full history" if history is None else f"last {history} exchanges (default)"
                    table.add_row(label, str(r["turns"]), f"{r['prompt'] / r['turns']:.0f}", f"{r['hit_rate']:.3f}",
                                  f"{r['wall'] / r['turns']:.3f}", f"{r['generated'] / r['wall']:.1f}", f"{r['success']:.2f}")
                tables.append(table)

        asyncio.run(measure())
    return tables


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="The starting model, e.g. an `agentgym sft` output.")
    parser.add_argument("--config", default=str(ROOT / "configs" / "train-textworld.yaml"))
    parser.add_argument("--steps", type=int, default=6, help="Training steps per staleness run.")
    parser.add_argument("--staleness", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=32, help="Episodes per replay/prefix measurement.")
    parser.add_argument("--parts", nargs="+", default=["staleness", "replay", "prefix"], choices=["staleness", "replay", "prefix"])
    parser.add_argument("--out", default=f"runs/async-rollouts-{time.strftime('%Y%m%d-%H%M%S')}")
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    tables: list[Table] = []
    parts = set(args.parts)
    if parts & {"replay", "prefix"}:
        tables += serving_tables(args, parts)
        for table in tables:
            console.print(table)
    if "staleness" in parts:
        runs = []
        for k in args.staleness:
            console.print(f"training with max_staleness {k} ...")
            runs.append(staleness_run(args, k))
        tables.append(staleness_table(runs))
    for table in tables:
        console.print(table)


if __name__ == "__main__":
    main()
