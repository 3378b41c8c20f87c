"""Trainer throughput: agentgym's policy-gradient update vs a bare transformers forward+backward+AdamW loop.

Both sides train SmolLM2-135M-Instruct on the same fixed batch of TextWorld-sized turns
(prompt + a short reply), in the same precision, with the same micro-batches and AdamW.
The bare loop is what a newcomer would write: `model(input_ids, labels=...)` over the
whole sequence, `loss.backward()`, `optimizer.step()`. Throughput counts the real (unpadded)
tokens of the batch per second of update; the goal is agentgym / bare >= 0.9.

Then (unless --skip-phases) it plays a short `agentgym train` run and prints the time of
each phase of a step (rollout, scoring, update, sync) from the run's metrics.jsonl.

    .venv/bin/python benchmarks/trainer_throughput.py [--steps 5] [--precision bf16-autocast]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from agentgym.trainers.batches import TurnSample, micro_batches
from agentgym.trainers.policy_model import autocast_context, load_trainable
from agentgym.trainers.update import UpdateConfig, make_optimizer, policy_gradient_step

console = Console()


def fixed_batch(vocab: int, n: int, prompt_len: int, reply_len: int, seed: int = 0) -> list[TurnSample]:
    """`n` turns of `prompt_len` prompt tokens and `reply_len` policy tokens, with random advantages."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(n):
        p = prompt_len + (i % 5) * 16  # a little spread of lengths, as real turns have
        ids = torch.randint(100, vocab, (p + reply_len,), generator=gen).tolist()
        samples.append(TurnSample(
            input_ids=ids, loss_mask=[0] * p + [1] * reply_len, old_logprobs=[0.0] * p + [-2.0] * reply_len,
            advantage=float(torch.randn((), generator=gen)), trajectory_index=i, row_weight=1.0 / (n * reply_len),
        ))
    return samples


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, samples: list[TurnSample],
              budget: int, pad_id: int, precision: str) -> None:
    """Plain transformers: full-sequence loss on the reply tokens, backward per micro-batch, one AdamW step."""
    optimizer.zero_grad(set_to_none=True)
    for mb in micro_batches(samples, budget, pad_id):
        labels = mb.input_ids.masked_fill(mb.loss_mask == 0, -100)
        with autocast_context(precision):
            loss = model(input_ids=mb.input_ids, attention_mask=mb.attention_mask, labels=labels).loss
        (loss * mb.num_tokens / sum(s.num_policy_tokens for s in samples)).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()


def measure(fn, steps: int) -> list[float]:  # noqa: ANN001
    """Seconds of each of `steps` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return times


def throughput(args: argparse.Namespace) -> None:
    trainable = load_trainable(args.model)
    samples = fixed_batch(len(trainable.tokenizer), args.turns, args.prompt_len, args.reply_len)
    tokens = sum(len(s.input_ids) for s in samples)
    config = UpdateConfig(lr=1e-6, micro_batch_tokens=args.micro_batch_tokens, precision=args.precision)
    bare_model = copy.deepcopy(trainable.model)
    bare_model.train()
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-6)
    ours_opt = make_optimizer(trainable, config)
    history: list[float] = []

    def ours() -> None:
        policy_gradient_step(trainable, ours_opt, samples, config, step=0, total_steps=1, entropy_history=history)

    def bare() -> None:
        bare_step(bare_model, bare_opt, samples, args.micro_batch_tokens, trainable.pad_token_id, args.precision)

    rows = []
    # Interleave the two so that machine noise hits both alike.
    ours_t, bare_t = [], []
    for _ in range(args.rounds):
        ours_t += measure(ours, args.steps)
        bare_t += measure(bare, args.steps)
    for name, times in (("agentgym policy_gradient_step", ours_t), ("bare transformers + AdamW", bare_t)):
        med = statistics.median(times)
        rows.append((name, f"{med:.2f}", f"{min(times):.2f}", f"{tokens / med:.0f}"))
    table = Table("update", "median s/step", "best s/step", "tokens/s (median)",
                  title=f"Trainer throughput: {args.turns} turns x ~{args.prompt_len + args.reply_len} tokens "
                        f"({tokens} tokens), {args.precision}, {torch.get_num_threads()} threads")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    ratio = statistics.median(bare_t) / statistics.median(ours_t)
    console.print(f"ratio agentgym / bare (tokens/s, medians): {ratio:.2f}  (goal >= 0.9)")


def phases(args: argparse.Namespace) -> None:
    from agentgym.trainers.config import TrainConfig
    from agentgym.trainers.loop import Trainer
    from agentgym.trainers.run_log import read_metrics
    from agentgym.config import load_yaml

    run_dir = Path(args.phases_run) if args.phases_run else Path(tempfile.mkdtemp(prefix="agentgym-phases-")) / "run"
    if not args.phases_run:
        data = load_yaml(Path(__file__).parents[1] / "configs" / "train-textworld.yaml")
        data.update(steps=args.phase_steps, eval_episodes=0, rollout_backend=args.rollout, model=args.model)
        Trainer(TrainConfig.model_validate(data), run_dir, console=Console(stderr=True)).run()
    records = [r for r in read_metrics(run_dir) if r.get("time/rollout") is not None]  # not eval-only records
    keys = ("time/rollout", "time/score", "time/update", "time/sync", "time/checkpoint")
    table = Table("step", *[k.split("/")[1] + " s" for k in keys], "turns trained", title=f"Time per phase ({run_dir})")
    for r in records:
        table.add_row(str(r["step"]), *[f"{r.get(k) or 0:.1f}" for k in keys], f"{r.get('train/samples') or 0:.0f}")
    console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--turns", type=int, default=16, help="Turns (sequences) in the fixed batch.")
    parser.add_argument("--prompt-len", type=int, default=384)
    parser.add_argument("--reply-len", type=int, default=8)
    parser.add_argument("--micro-batch-tokens", type=int, default=4096)
    parser.add_argument("--precision", default="bf16-autocast", choices=["fp32", "bf16-autocast"])
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per round and side.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds of (agentgym, bare).")
    parser.add_argument("--skip-phases", action="store_true", help="Only the throughput comparison.")
    parser.add_argument("--phases-run", help="Read phase times from this existing run directory instead of training.")
    parser.add_argument("--phase-steps", type=int, default=2)
    parser.add_argument("--rollout", default="inprocess", choices=["inprocess", "vllm"])
    args = parser.parse_args()
    throughput(args)
    if not args.skip_phases:
        phases(args)


if __name__ == "__main__":
    sys.exit(main())
