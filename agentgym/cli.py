"""The `agentgym` command line: envs, eval, train, sft, plot, serve, textworld games, trajectory export."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from agentgym.errors import AgentGymError
from agentgym.sandboxes.cli import sandbox_app
from agentgym.envs.swe.cli import swe_app
from agentgym.reward_models.cli import reward_app
from agentgym.envs.text.alfworld_cli import alfworld_app

app = typer.Typer(help="agentgym: a gym for multi-turn agentic RL.", no_args_is_help=True, pretty_exceptions_enable=False)
envs_app = typer.Typer(help="Registered environments.", no_args_is_help=True)
textworld_app = typer.Typer(help="TextWorld games.", no_args_is_help=True)
traj_app = typer.Typer(help="Trajectory files.", no_args_is_help=True)
app.add_typer(envs_app, name="envs")
app.add_typer(textworld_app, name="textworld")
app.add_typer(traj_app, name="trajectories")
app.add_typer(sandbox_app, name="sandbox")
app.add_typer(swe_app, name="swe")
app.add_typer(alfworld_app, name="alfworld")
app.add_typer(reward_app, name="reward")

out_console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


@envs_app.command("list")
def envs_list() -> None:
    """List registered env ids."""
    import agentgym

    table = Table("id", "entry point", "description")
    for spec in agentgym.list_envs():
        table.add_row(spec.id, spec.entry_point, spec.description)
    out_console.print(table)


@envs_app.command("info")
def envs_info(env_id: Annotated[str, typer.Argument(help="Env id, e.g. textworld.")]) -> None:
    """Show an env's spec and the options its constructor takes."""
    import inspect

    import agentgym

    spec = agentgym.spec(env_id)
    out_console.print(f"[bold]{spec.id}[/bold]  (gymnasium id: {spec.gym_id})")
    out_console.print(spec.description)
    out_console.print(f"entry point: {spec.entry_point}")
    factory = spec.load()
    table = Table("option (--env-opt KEY=VALUE)", "default")
    for name, param in inspect.signature(factory).parameters.items():
        if name in ("self", "render_mode") or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
            continue
        default = spec.kwargs.get(name, param.default)
        table.add_row(name, "required" if default is inspect.Parameter.empty else repr(default))
    out_console.print(table)


@app.command("eval")
def eval_command(
    env: Annotated[Optional[str], typer.Option("--env", help="Env id (see `agentgym envs list`).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model: alias or path (in-process), or the served name with --base-url.")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")] = None,
    api_key: Annotated[Optional[str], typer.Option(help="API key for --base-url.", envvar="AGENTGYM_API_KEY")] = None,
    policy: Annotated[Optional[str], typer.Option(help="transformers | openai | walkthrough | random (a uniform pick of the admissible actions; inferred from --model/--base-url).")] = None,
    episodes: Annotated[Optional[int], typer.Option(help="Episodes to play.")] = None,
    concurrency: Annotated[Optional[int], typer.Option(help="Episodes played at once.")] = None,
    max_turns: Annotated[Optional[int], typer.Option(help="Cap on turns per episode.")] = None,
    temperature: Annotated[Optional[float], typer.Option(help="Sampling temperature (0 = greedy).")] = None,
    max_tokens: Annotated[Optional[int], typer.Option(help="Max completion tokens per turn.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed of the first episode.")] = None,
    env_opt: Annotated[Optional[list[str]], typer.Option("--env-opt", help="Env option KEY=VALUE (repeatable).")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="In-process model dtype: auto (bfloat16 where the hardware computes it, else float32) | bfloat16 | float16 | float32.")] = None,
    device: Annotated[Optional[str], typer.Option(help="In-process model device: auto (cuda if present) | cpu | cuda | cuda:N.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML EvalConfig; flags override it.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output directory (default runs/eval-<env>-<time>).")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
) -> None:
    """Evaluate a policy on an env: writes trajectories.jsonl, summary.json and summary.md."""
    from agentgym.config import EvalConfig, build_config, deep_merge, load_yaml, parse_key_values

    data: dict[str, Any] = load_yaml(config) if config else {}
    flags: dict[str, Any] = {
        "env": env, "episodes": episodes, "seed": seed, "out": str(out) if out else None,
        "policy": {"kind": policy, "model": model, "base_url": base_url, "api_key": api_key, "dtype": dtype, "device": device},
        "rollout": {"concurrency": concurrency, "max_turns": max_turns,
                    "sampling": {"temperature": temperature, "max_tokens": max_tokens}},
        "env_kwargs": parse_key_values(env_opt or [], "--env-opt"),
    }
    data = deep_merge(data, _drop_none(flags))
    policy_data = data.setdefault("policy", {})
    # PolicyConfig (agentgym/config.py) accepts neither dtype "auto" nor a device yet, so the
    # in-process policy's placement travels beside it; both default to auto (agentgym.hardware).
    placement = {"dtype": policy_data.pop("dtype", "auto"), "device": policy_data.pop("device", "auto")}
    if "env" not in data:
        raise AgentGymError("say which env to evaluate: --env ID (see `agentgym envs list`)")
    cfg = build_config(EvalConfig, data)
    _run_eval(cfg, quiet=quiet, placement=placement)


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    """Flags the user did not give are None: they must not override the config file."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            v = _drop_none(v)
            if not v:
                continue
        if v is not None:
            out[k] = v
    return out


def _eval_policy(policy_cfg: Any, placement: dict[str, str]) -> Any:
    """The policy of an eval; the in-process one on `placement`'s device and dtype."""
    from agentgym.policies.factory import build_policy

    if policy_cfg.kind != "transformers":
        return build_policy(policy_cfg)
    from agentgym.policies.transformers_local import TransformersPolicy

    try:
        return TransformersPolicy(str(policy_cfg.model), max_batch_size=policy_cfg.max_batch_size, **placement)
    except ValueError as exc:  # a malformed --dtype or --device: one line, like every config error
        raise AgentGymError(str(exc)) from None


def _run_eval(cfg: Any, *, quiet: bool, placement: dict[str, str] | None = None) -> None:
    import agentgym
    from agentgym.evaluation import evaluate, render_markdown
    from agentgym.progress import RolloutProgress
    from agentgym.rollout import plan_episodes

    spec = agentgym.spec(cfg.env)  # unknown ids fail here, before anything slow
    out_dir = Path(cfg.out or f"runs/eval-{spec.id}-{time.strftime('%Y%m%d-%H%M%S')}")
    if (out_dir / "trajectories.jsonl").exists():
        raise AgentGymError(f"{out_dir} already holds trajectories.jsonl; pick another --out so nothing recorded is overwritten")
    the_policy = _eval_policy(cfg.policy, placement or {"dtype": "auto", "device": "auto"})

    async def main() -> Any:
        try:
            await the_policy.check()  # no server, unknown model: fail before building envs
            if getattr(the_policy, "placement", None) is not None:  # an in-process model: say where it runs
                err_console.print(the_policy.placement.describe(), highlight=False)
            task_ids = agentgym.registry.task_ids(spec.id, **cfg.env_kwargs)
            jobs = plan_episodes(task_ids, cfg.episodes, samples_per_task=cfg.samples_per_task, seed=cfg.seed)
            with RolloutProgress(len(jobs), f"{spec.id}", console=err_console, enabled=not quiet) as bar:
                return await evaluate(
                    lambda: agentgym.make(spec.id, **cfg.env_kwargs), the_policy, jobs, out_dir,
                    env_id=spec.id, env_kwargs=cfg.env_kwargs, config=cfg.rollout, callbacks=[bar.update],
                )
        finally:
            await the_policy.aclose()

    try:
        summary = asyncio.run(main())
    except KeyboardInterrupt:
        err_console.print(f"interrupted: finished trajectories are in {out_dir / 'trajectories.jsonl'}; summary of them in {out_dir / 'summary.md'}")
        raise typer.Exit(130) from None
    out_console.print(render_markdown(summary))
    out_console.print(f"trajectories: {out_dir / 'trajectories.jsonl'}")


@app.command("train")
def train_command(
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Config overrides KEY=VALUE, dotted for nesting (update.lr=1e-5).")] = None,
    env: Annotated[Optional[str], typer.Option("--env", help="Env id (see `agentgym envs list`).")] = None,
    algo: Annotated[Optional[str], typer.Option(help="grpo | rloo | reinforce | ppo | archer (trainers/algorithms).")] = None,
    epo: Annotated[Optional[bool], typer.Option("--epo/--no-epo", help="EPO entropy regularisation and smoothing.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Alias, HF directory (e.g. an `agentgym sft` output) or .gguf.")] = None,
    base_url: Annotated[Optional[str], typer.Option(help="A running vLLM server to roll out on and update (default: start one).")] = None,
    rollout: Annotated[Optional[str], typer.Option(help="vllm | inprocess.")] = None,
    reward: Annotated[Optional[str], typer.Option(help="Reward model: env (default) | dra | gra | igpo | spa; settings as reward.KEY=VALUE.")] = None,
    lora: Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (rank 16) instead of all weights.")] = False,
    steps: Annotated[Optional[int], typer.Option(help="Training steps.")] = None,
    device: Annotated[Optional[str], typer.Option(help="Where the trained model runs: auto (cuda if present) | cpu | cuda | cuda:N.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16-autocast where the hardware computes bf16, else fp32) | fp32 | bf16-autocast.")] = None,
    env_opt: Annotated[Optional[list[str]], typer.Option("--env-opt", help="Env option KEY=VALUE (repeatable).")] = None,
    config: Annotated[Optional[Path], typer.Option(help="YAML TrainConfig (configs/train-*.yaml); flags override it.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory (default runs/train-<env>-<time>).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its latest checkpoint.")] = False,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
) -> None:
    """Train a policy with RL on an env: rollouts → rewards → advantages → update → weight sync → eval → checkpoint."""
    from agentgym.config import build_config, deep_merge, dotted_overrides, load_yaml, parse_key_values
    from agentgym.trainers.config import TrainConfig
    from agentgym.trainers.loop import Trainer

    if resume:
        if out is None:
            raise AgentGymError("--resume needs --out RUN_DIR (the run to continue)")
        if not (out / "config.yaml").is_file():
            raise AgentGymError(f"nothing to resume: {out} holds no training run (no config.yaml)")
        # The run's own config decides; flags may only extend it (e.g. more steps).
        data = load_yaml(out / "config.yaml")
    else:
        data = load_yaml(config) if config else {}
    flags: dict[str, Any] = {
        "env": env, "algo": algo, "model": model, "base_url": base_url, "rollout_backend": rollout, "steps": steps,
        "out": str(out) if out else None, "env_kwargs": parse_key_values(env_opt or [], "--env-opt"),
        "device": device, "update": {"epo": {"enabled": epo}, "precision": precision}, "reward": {"name": reward},
    }
    if lora:
        flags["lora"] = {}
    data = deep_merge(deep_merge(data, _drop_none(flags)), dotted_overrides(overrides or []))
    if "env" not in data:
        raise AgentGymError("say which env to train on: --env ID (see `agentgym envs list`)")
    cfg = build_config(TrainConfig, data)
    import agentgym

    agentgym.spec(cfg.env)  # an unknown env fails here, before a model loads
    run_dir = Path(cfg.out or f"runs/train-{cfg.env}-{time.strftime('%Y%m%d-%H%M%S')}")
    from agentgym.serve import terminate_as_interrupt

    try:
        with terminate_as_interrupt():
            result = Trainer(cfg, run_dir, resume=resume, console=err_console, show_progress=not quiet).run()
    except KeyboardInterrupt:
        err_console.print(f"interrupted: trajectories and the last checkpoint are in {run_dir}; continue with --resume --out {run_dir}")
        raise typer.Exit(130) from None
    for step, summary in sorted(result.evals.items()):
        low, high = summary.success_ci95
        out_console.print(f"held-out success after step {step}: {summary.success_rate:.3f} (95% CI {low:.3f}–{high:.3f})")
    out_console.print(f"run directory: {run_dir}  (plot it with: agentgym plot {run_dir})")


@app.command("sft")
def sft_command(
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Config overrides KEY=VALUE, dotted for nesting.")] = None,
    data: Annotated[Optional[list[Path]], typer.Option("--data", help="trajectories.jsonl to learn from (repeatable).")] = None,
    model: Annotated[Optional[str], typer.Option(help="Model to fine-tune: alias, HF directory or .gguf.")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Passes over the data.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate.")] = None,
    lora: Annotated[bool, typer.Option("--lora", help="Train LoRA adapters (merged into the saved model).")] = False,
    device: Annotated[Optional[str], typer.Option(help="Where the model trains: auto (cuda if present) | cpu | cuda | cuda:N.")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16-autocast where the hardware computes bf16, else fp32) | fp32 | bf16-autocast.")] = None,
    all_trajectories: Annotated[bool, typer.Option("--all", help="Also train on trajectories that did not succeed.")] = False,
    config: Annotated[Optional[Path], typer.Option(help="YAML SFTConfig; flags override it.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run directory; the model is saved to OUT/model.")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress display.")] = False,
) -> None:
    """Supervised warm start on recorded trajectories (e.g. walkthroughs), in the trainer's masked format."""
    from agentgym.config import build_config, deep_merge, dotted_overrides, load_yaml
    from agentgym.trainers.config import SFTConfig
    from agentgym.trainers.sft import run_sft

    # A partial `update` (--precision, update.KEY=VALUE) must extend SFT's own update defaults (lr 1e-4),
    # not replace them with UpdateConfig's RL ones.
    sft_update = SFTConfig.model_fields["update"].get_default(call_default_factory=True)
    cfg_data = deep_merge({"update": sft_update.model_dump(mode="json")}, load_yaml(config) if config else {})
    flags: dict[str, Any] = {
        "data": [str(p) for p in data] if data else None, "model": model, "epochs": epochs, "device": device,
        "update": {"lr": lr, "precision": precision}, "out": str(out) if out else None,
        "only_success": False if all_trajectories else None,
    }
    if lora:
        flags["lora"] = {}
    cfg_data = deep_merge(deep_merge(cfg_data, _drop_none(flags)), dotted_overrides(overrides or []))
    if not cfg_data.get("data"):
        raise AgentGymError("say what to learn from: --data TRAJECTORIES.jsonl (e.g. from agentgym eval --policy walkthrough)")
    cfg = build_config(SFTConfig, cfg_data)
    run_dir = Path(cfg.out or f"runs/sft-{time.strftime('%Y%m%d-%H%M%S')}")
    result = run_sft(cfg, run_dir, console=err_console, show_progress=not quiet)
    out_console.print(
        f"SFT: {result.steps} steps on {result.samples} turns in {result.seconds:.0f} s, final loss {result.final_loss:.3f}"
    )
    out_console.print(f"model: {result.model_dir}  (train from it with: agentgym train --model {result.model_dir} ...)")


@app.command("plot")
def plot_command(
    run_dir: Annotated[Path, typer.Argument(help="A training run directory (holds metrics.jsonl).")],
    out: Annotated[Optional[Path], typer.Option(help="Where to write the PNGs (default RUN_DIR/plots).")] = None,
) -> None:
    """Write PNG plots of success rate, reward, entropy, KL and clip fraction over training steps."""
    from agentgym.plotting import plot_run

    for path in plot_run(run_dir, out):
        out_console.print(str(path))


@app.command("serve")
def serve_command(
    model: Annotated[str, typer.Option(help="Alias (smollm2-135m), HF directory or .gguf file.")] = "smollm2-135m",
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 picks a free one).")] = 8000,
    dtype: Annotated[str, typer.Option(help="float32 keeps logprobs equal to the trainer's.")] = "float32",
) -> None:
    """Start vLLM's OpenAI-compatible server on a prepared model directory; prints the base URL."""
    from agentgym.serve import serve

    serve(model, host=host, port=port, dtype=dtype)


@textworld_app.command("make-games")
def textworld_make_games(
    out: Annotated[Path, typer.Option(help="Directory for the games.")],
    n: Annotated[int, typer.Option(help="Number of games.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the first game; game i uses seed + i.")] = 0,
    difficulty: Annotated[str, typer.Option(help="easy | medium | hard.")] = "easy",
) -> None:
    """Generate TextWorld games offline with TextWorld's own generator."""
    from agentgym.envs.text.textworld_games import make_games

    paths = make_games(out, n=n, seed=seed, difficulty=difficulty)
    out_console.print(f"{len(paths)} {difficulty} games in {out}")


@traj_app.command("export")
def trajectories_export(
    path: Annotated[Path, typer.Argument(help="trajectories.jsonl")],
    out: Annotated[Path, typer.Option(help="Parquet file to write.")],
) -> None:
    """Export a trajectory JSONL file to Parquet."""
    from agentgym.parquet import export_parquet

    written = export_parquet(path, out)
    out_console.print(f"wrote {written}")


def main() -> None:
    """Entry point: agentgym's own errors become one line on stderr and exit code 2."""
    try:
        app()
    except AgentGymError as exc:
        err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
