"""Trainer throughput: agentgym's policy-gradient update vs a bare transformers forward+backward+AdamW loop, in fp32 and bf16-autocast.

Both sides train SmolLM2-135M-Instruct on the same fixed batch of TextWorld-sized turns
(prompt + a short reply), in the same precision, with the same micro-batches and AdamW.
The bare loop is what a newcomer would write: `model(input_ids, labels=...)` over the
whole sequence, `loss.backward()`, `optimizer.step()`. Throughput counts the real (unpadded)
tokens of the batch per second of update; the goal is agentgym / bare >= 0.9.

The table puts fp32 and bf16-autocast side by side and names the precision `auto` picks on
this machine, and why (agentgym.hardware). Where the device only emulates bf16 (an AVX2-only
CPU: >100x slower) bf16-autocast is skipped unless --precisions names it explicitly.

Then (unless --skip-phases) it plays a short `agentgym train` run and prints the time of
each phase of a step (rollout, scoring, update, sync) from the run's metrics.jsonl.

    .venv/bin/python benchmarks/trainer_throughput.py [--steps 5] [--precisions fp32,bf16-autocast] [--device cpu]
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

from agentgym.hardware import native_bf16, resolve_placement
from agentgym.trainers.batches import TurnSample, micro_batches
from agentgym.trainers.policy_model import autocast_context, load_trainable
from agentgym.trainers.update import UpdateConfig, make_optimizer, policy_gradient_step

console = Console(width=120)  # the table stays whole in a log file too (rich assumes 80 columns there)


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
    device = next(model.parameters()).device
    for mb in micro_batches(samples, budget, pad_id, device=device):
        labels = mb.input_ids.masked_fill(mb.loss_mask == 0, -100)
        with autocast_context(precision, device):
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


def compare(args: argparse.Namespace, trainable, samples: list[TurnSample], precision: str) -> tuple[list[float], list[float]]:  # noqa: ANN001
    """Seconds per step of agentgym's update and of the bare loop in `precision`, interleaved so noise hits both alike."""
    config = UpdateConfig(lr=1e-6, micro_batch_tokens=args.micro_batch_tokens, precision=precision)
    ours_model = copy.deepcopy(trainable)
    bare_model = copy.deepcopy(trainable.model)
    bare_model.train()
    bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-6)
    ours_opt = make_optimizer(ours_model, config)
    history: list[float] = []

    def ours() -> None:
        policy_gradient_step(ours_model, ours_opt, samples, config, step=0, total_steps=1, entropy_history=history)

    def bare() -> None:
        bare_step(bare_model, bare_opt, samples, args.micro_batch_tokens, trainable.pad_token_id, precision)

    ours_t, bare_t = [], []
    for _ in range(args.rounds):
        ours_t += measure(ours, args.steps)
        bare_t += measure(bare, args.steps)
    return ours_t, bare_t


def throughput(args: argparse.Namespace) -> None:
    chosen = resolve_placement(args.device, "auto")
    console.print(f"precision auto picks: {chosen.describe()}", highlight=False)
    trainable = load_trainable(args.model, device=chosen.device)
    samples = fixed_batch(len(trainable.tokenizer), args.turns, args.prompt_len, args.reply_len)
    tokens = sum(len(s.input_ids) for s in samples)
    asked = args.precisions.split(",")
    results: dict[str, tuple[list[float], list[float]] | None] = {}
    for precision in asked:
        emulated = precision == "bf16-autocast" and not native_bf16(chosen.device)
        if emulated and not args.explicit_precisions:
            results[precision] = None  # emulated bf16 would take hours; say so instead
            continue
        results[precision] = compare(args, trainable, samples, precision)
    columns = []
    for precision in asked:
        mark = "*" if precision == chosen.precision else ""
        columns += [f"{precision}{mark}\ns/step", f"{precision}{mark}\ntokens/s"]
    table = Table("update", *columns,
                  title=f"Trainer throughput on {chosen.device}: {args.turns} turns x ~{args.prompt_len + args.reply_len} "
                        f"tokens ({tokens} tokens), {torch.get_num_threads()} threads, medians of "
                        f"{args.rounds * args.steps} steps",
                  caption=f"* what precision=auto picks here: {chosen.precision} ({chosen.reason})")
    for side, name in ((0, "agentgym"), (1, "bare transformers + AdamW")):
        cells = []
        for precision in asked:
            times = results[precision]
            if times is None:
                cells += ["skipped: emulated bf16", "-"]
                continue
            med = statistics.median(times[side])
            cells += [f"{med:.2f}", f"{tokens / med:.0f}"]
        table.add_row(name, *cells)
    ratios = []
    for precision in asked:
        times = results[precision]
        ratio = "-" if times is None else f"{statistics.median(times[1]) / statistics.median(times[0]):.2f}"
        ratios += ["", ratio]
    table.add_row("agentgym / bare (goal >= 0.9)", *ratios)
    console.print(table)


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
    parser.add_argument("--precisions", default=None,
                        help="Comma-separated precisions to time (default fp32,bf16-autocast; emulated bf16 is skipped "
                             "unless named here).")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N.")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default torch's); 1 keeps timings steadier on a machine others share.")
    parser.add_argument("--steps", type=int, default=3, help="Timed steps per round and side.")
    parser.add_argument("--rounds", type=int, default=2, help="Alternating rounds of (agentgym, bare).")
    parser.add_argument("--skip-phases", action="store_true", help="Only the throughput comparison.")
    parser.add_argument("--phases-run", help="Read phase times from this existing run directory instead of training.")
    parser.add_argument("--phase-steps", type=int, default=2)
    parser.add_argument("--rollout", default="inprocess", choices=["inprocess", "vllm"])
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    args.explicit_precisions = args.precisions is not None
    args.precisions = args.precisions or "fp32,bf16-autocast"
    throughput(args)
    if not args.skip_phases:
        phases(args)


if __name__ == "__main__":
    sys.exit(main())
