"""`agentgym train` end to end on a tiny model: each algorithm, EPO, checkpoints, resume after kill -9, plots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import agentgym
from agentgym.errors import AgentGymError
from agentgym.store import read_trajectories
from agentgym.trainers.checkpoint import latest_checkpoint, read_state
from agentgym.trainers.config import TrainConfig
from agentgym.trainers.loop import Trainer, step_jobs
from agentgym.trainers.run_log import read_metrics

TOY = "toy-letter"


@pytest.fixture(autouse=True, scope="module")
def _toy_env() -> None:
    if TOY not in {s.id for s in agentgym.list_envs()}:
        agentgym.register(TOY, "tests.toy_envs:LetterEnv", description="trainer smoke-test env")


def _config(model: Path, out: Path, **overrides: object) -> TrainConfig:
    data: dict = {
        "env": TOY, "model": str(model), "rollout_backend": "inprocess", "steps": 2, "tasks_per_step": 2,
        "samples_per_task": 4, "eval_episodes": 4, "out": str(out),
        "rollout": {"concurrency": 4, "sampling": {"temperature": 1.0, "max_tokens": 6}},
        "update": {"lr": 1e-3, "precision": "fp32"},
    }
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return TrainConfig.model_validate(data)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize(
    "overrides",
    [{"algo": "grpo"}, {"algo": "rloo"}, {"algo": "reinforce", "update.epochs": 2}, {"algo": "grpo", "update.epo.enabled": True},
     {"algo": "ppo", "ppo.value_epochs": 2}, {"algo": "archer", "archer.warmup_steps": 0, "archer.critic_updates": 5}],
    ids=["grpo", "rloo", "reinforce-2-epochs", "grpo-epo", "ppo", "archer"],
)
def test_each_algorithm_trains_end_to_end(
    tiny_model_dir: Path, tmp_path: Path, overrides: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agentgym.trainers.loop as loop

    threads: list[str] = []

    def recording(fn: Callable[..., object]) -> Callable[..., object]:
        def run(*args: object, **kwargs: object) -> object:
            threads.append(threading.current_thread().name)
            return fn(*args, **kwargs)
        return run

    for name in ("policy_gradient_step", "push_weights", "save_checkpoint"):
        monkeypatch.setattr(loop, name, recording(getattr(loop, name)))
    cfg = _config(tiny_model_dir, tmp_path / "run", **overrides)
    result = Trainer(cfg, tmp_path / "run", show_progress=False).run()
    assert result.steps == 2
    metrics = read_metrics(tmp_path / "run")
    assert [m["step"] for m in metrics] == [1, 2]
    for m in metrics:
        assert m["rollout/episodes"] == 8
        for key in ("policy/entropy", "policy/clip_fraction", "time/rollout", "time/update", "time/sync"):
            assert m[key] is not None, key
        assert 0 < m["memory/rss_gib"] <= m["memory/peak_rss_gib"]
    # Update, weight sync and checkpoint all ran in the run's one compute thread (one heap arena).
    assert len(threads) == 6 and len(set(threads)) == 1 and threads[0].startswith("agentgym-compute")
    if overrides.get("update.epo.enabled"):
        assert metrics[-1]["loss/entropy_bonus"] > 0 and "loss/entropy_smoothing" in metrics[-1]
    assert metrics[-1]["eval/success_rate"] is not None
    assert (tmp_path / "run" / "eval" / "step-000002" / "summary.json").is_file()
    # Every rollout is stored, with the token ids training used.
    trajs = read_trajectories(tmp_path / "run" / "trajectories" / "step-000001.jsonl")
    assert len(trajs) == 8 and all(t.turns[0].completion_token_ids for t in trajs)
    # Each episode records which weights played it: step 2's were those after step 1's update.
    assert {t.policy.weights_step for t in trajs} == {0}
    assert {t.policy.weights_step for t in read_trajectories(tmp_path / "run" / "trajectories" / "step-000002.jsonl")} == {1}
    evaluated = read_trajectories(tmp_path / "run" / "eval" / "step-000002" / "trajectories.jsonl")
    assert {t.policy.weights_step for t in evaluated} == {2}
    assert "(weights after 2 training steps)" in (tmp_path / "run" / "eval" / "step-000002" / "summary.md").read_text()
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and read_state(ckpt).step == 2
    before, after = _weights(tiny_model_dir), _weights(ckpt / "model")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert list((tmp_path / "run" / "tensorboard").iterdir())


def test_step_jobs_are_a_function_of_seed_and_step() -> None:
    cfg = TrainConfig(env=TOY, tasks_per_step=2, samples_per_task=3)
    tasks = ["a", "b", "c", "d"]
    assert step_jobs(tasks, cfg, 4) == step_jobs(list(reversed(tasks)), cfg, 4)
    assert step_jobs(tasks, cfg, 4) != step_jobs(tasks, cfg, 5)
    jobs = step_jobs(tasks, cfg, 0)
    assert len(jobs) == 6 and len({j.group_id for j in jobs}) == 2


def test_a_run_directory_is_never_overwritten(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_model_dir, tmp_path / "run", steps=1, eval_episodes=0)
    Trainer(cfg, tmp_path / "run", show_progress=False).run()
    with pytest.raises(AgentGymError, match="already holds a training run"):
        Trainer(cfg, tmp_path / "run", show_progress=False).run()
    with pytest.raises(AgentGymError, match="nothing to resume"):
        Trainer(cfg, tmp_path / "other", resume=True, show_progress=False).run()


def test_bad_configs_are_refused_clearly() -> None:
    with pytest.raises(ValueError, match="samples_per_task must be at least 2"):
        TrainConfig(env=TOY, algo="grpo", samples_per_task=1)
    with pytest.raises(ValueError, match="base_url needs rollout_backend vllm"):
        TrainConfig(env=TOY, rollout_backend="inprocess", base_url="http://x/v1")


def _agentgym(*args: str, **kwargs: object) -> subprocess.Popen:
    script = (
        "import agentgym, sys; agentgym.register('toy-letter', 'tests.toy_envs:LetterEnv'); "
        "from agentgym.cli import main; sys.argv = ['agentgym'] + sys.argv[1:]; main()"
    )
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=Path(__file__).parents[1], **kwargs)  # type: ignore[call-overload]


def _kill_9_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 300) -> None:
    """SIGKILL `proc` as soon as `ready()` holds; fail with its output if it exits first or `timeout` passes."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.parametrize("staleness", [0, 1], ids=["sync", "async"])
def test_resume_after_kill_9_loses_nothing(tiny_model_dir: Path, tmp_path: Path, staleness: int) -> None:
    run = tmp_path / "run"
    args = ["train", "--env", TOY, "--model", str(tiny_model_dir), "--rollout", "inprocess", "--steps", "4",
            "--out", str(run), "--quiet", "tasks_per_step=2", "samples_per_task=4", "eval_episodes=0",
            "rollout.sampling.max_tokens=6", "update.precision=fp32", "update.lr=1e-3",
            f"rollout.max_staleness={staleness}",
            # Slow episodes, so the kill lands in the middle of a step's rollouts.
            "env_kwargs.turns=3"]
    proc = _agentgym(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    step2 = run / "trajectories" / "step-000002.jsonl"
    # Killed once step 1's checkpoint is written and step 2 has recorded an episode.
    _kill_9_when(proc, lambda: latest_checkpoint(run / "checkpoints") is not None
                 and step2.exists() and step2.stat().st_size > 0)
    recorded_before = {t.trajectory_id for t in read_trajectories(step2)}
    assert recorded_before
    done_before = read_state(latest_checkpoint(run / "checkpoints")).step  # type: ignore[arg-type]
    assert done_before in (1, 2)

    resumed = _agentgym(*args, "--resume", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out.decode()
    assert "resuming from" in out.decode()
    state = read_state(latest_checkpoint(run / "checkpoints"))  # type: ignore[arg-type]
    assert state.step == 4 and len(state.entropy_history) == 4
    # Every episode finished before the kill is still there, and was reused rather than replayed.
    after = read_trajectories(step2)
    assert recorded_before <= {t.trajectory_id for t in after}
    assert len(after) == 8
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
    assert len(lines) >= 4
    for number in range(1, 5):  # every batch within the staleness bound, resumed or not
        versions = {t.policy.weights_step for t in read_trajectories(run / "trajectories" / f"step-{number:06d}.jsonl")}
        assert versions and all(number - 1 - staleness <= v <= number - 1 for v in versions), (number, versions)


def test_plot_command_writes_pngs(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_model_dir, tmp_path / "run", steps=2, eval_episodes=0)
    Trainer(cfg, tmp_path / "run", show_progress=False).run()
    proc = _agentgym("plot", str(tmp_path / "run"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out.decode()
    pngs = {p.name for p in (tmp_path / "run" / "plots").glob("*.png")}
    assert {"success_rate.png", "entropy.png", "clip_fraction.png", "summary.png"} <= pngs
    assert {"advantage_collapse.png", "advantage_abs.png", "reward_model_time.png"} <= pngs  # reward-model diagnostics


@pytest.mark.slow
def test_training_against_a_vllm_server_keeps_it_at_the_trainers_weights(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Rollouts come from a real vLLM server; after training its logprobs are the final checkpoint's."""
    import shutil

    from transformers import AutoModelForCausalLM

    from agentgym.serve import VLLMServer
    from agentgym.trainers.weight_sync import score_prompt_logprobs

    served = tmp_path / "served"
    shutil.copytree(tiny_model_dir, served)
    with VLLMServer(served, name="tiny", startup_timeout=600) as server:
        ids = list(range(10, 40))
        before = score_prompt_logprobs(server.base_url, "tiny", ids)
        cfg = _config(served, tmp_path / "run", rollout_backend="vllm", base_url=server.base_url, served_model="tiny",
                      steps=2, eval_episodes=0)
        Trainer(cfg, tmp_path / "run", show_progress=False).run()
        after = score_prompt_logprobs(server.base_url, "tiny", ids)
    model = AutoModelForCausalLM.from_pretrained(latest_checkpoint(tmp_path / "run" / "checkpoints") / "model",  # type: ignore[operator]
                                                 dtype=torch.float32)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0]
    expected = torch.log_softmax(logits, -1)[:-1].gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1)
    # float32 on both sides: the server matched the trainer to ~5e-7 in tests/test_weight_sync.py.
    assert max(abs(a - e) for a, e in zip(after, expected.tolist(), strict=True)) < 1e-3
    assert max(abs(a - b) for a, b in zip(after, before, strict=True)) > 1e-3
    trajs = read_trajectories(tmp_path / "run" / "trajectories" / "step-000002.jsonl")
    assert all(t.policy.kind == "openai" and t.turns[0].completion_logprobs for t in trajs)


def test_lora_training_checkpoints_adapters_and_resumes(tiny_model_dir: Path, tmp_path: Path) -> None:
    lora = {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    cfg = _config(tiny_model_dir, tmp_path / "run", steps=1, eval_episodes=0, lora=lora)
    Trainer(cfg, tmp_path / "run", show_progress=False).run()
    ckpt = latest_checkpoint(tmp_path / "run" / "checkpoints")
    assert ckpt is not None and (ckpt / "model" / "adapter_model.safetensors").is_file()
    more = cfg.model_copy(update={"steps": 2})
    Trainer(more, tmp_path / "run", resume=True, show_progress=False).run()
    assert read_state(latest_checkpoint(tmp_path / "run" / "checkpoints")).step == 2  # type: ignore[arg-type]


def test_sft_command_learns_the_recorded_replies(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`agentgym sft` on text-only (walkthrough-style) trajectories: the loss falls and the model dir loads."""
    from agentgym.store import TrajectoryWriter
    from tests.test_trainer_batches import _traj

    data = tmp_path / "walk.jsonl"
    with TrajectoryWriter(data) as writer:
        for i in range(8):
            traj = _traj([([1], [2], None), ([1], [3], None)], f"w{i}")
            for turn in traj.turns:
                turn.prompt_token_ids = turn.completion_token_ids = turn.completion_logprobs = None
            traj.success = i < 6  # two failures, left out by default
            writer.write(traj)
    proc = _agentgym("sft", "--data", str(data), "--model", str(tiny_model_dir), "--epochs", "6", "--lr", "1e-2",
                     "--out", str(tmp_path / "sft"), "--quiet", "batch_size=4", "update.precision=fp32",
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out.decode()
    assert "on 12 turns" in out.decode()
    losses = [m["sft/loss"] for m in read_metrics(tmp_path / "sft")]
    assert len(losses) == 18 and losses[-1] < losses[0] / 2
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp_path / "sft" / "model") is not None
    again = _agentgym("sft", "--data", str(data), "--model", str(tiny_model_dir), "--out", str(tmp_path / "sft"),
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = again.communicate(timeout=300)
    assert again.returncode == 2 and "already exists" in out.decode()
    missing = _agentgym("sft", "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "x"),
                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = missing.communicate(timeout=300)
    assert missing.returncode == 2 and "not found" in out.decode()


def test_entropy_probe_is_measured_on_the_same_turns_at_every_step(tiny_reply_model_dir: Path, tmp_path: Path) -> None:
    from agentgym.trainers.policy_model import load_trainable
    from agentgym.trainers.probe import load_probe, probe_entropy

    model = tiny_reply_model_dir
    first = _config(model, tmp_path / "first", steps=1, eval_episodes=0)
    Trainer(first, tmp_path / "first", show_progress=False).run()
    probe_file = tmp_path / "first" / "trajectories" / "step-000001.jsonl"
    # A strong EPO entropy bonus updates the policy at every step whatever the rewards (a GRPO step
    # alone does nothing when all rollouts of a group score alike), and the fitted model's entropy is
    # low enough to have room to rise.
    cfg = _config(model, tmp_path / "run", eval_episodes=0, entropy_probe=str(probe_file), entropy_probe_turns=5,
                  **{"update.epo.enabled": True, "update.epo.entropy_coef": 1.0})
    Trainer(cfg, tmp_path / "run", show_progress=False).run()
    records = {m["step"]: m for m in read_metrics(tmp_path / "run")}
    assert sorted(records) == [0, 1, 2]
    # Step 0 is the starting model: recomputing on the same turns must give the same number.
    trainable = load_trainable(str(model))
    probe = load_probe(probe_file, trainable, 5, 2048)
    assert len(probe) == 5
    expected = probe_entropy(trainable, probe, 4096, "fp32")
    assert records[0]["policy/probe_entropy"] == pytest.approx(expected, abs=1e-6)
    # Training moves the policy, so later measurements on the same turns differ from the start.
    assert abs(records[2]["policy/probe_entropy"] - expected) > 1e-5
    with pytest.raises(AgentGymError, match="not a file"):
        load_probe(tmp_path / "missing.jsonl", trainable, 5, 2048)


def test_dynamic_sampling_trains_on_groups_that_disagree_and_records_every_draw(tiny_model_dir: Path, tmp_path: Path) -> None:
    # A rare letter: most groups of the random tiny model score 0 on every rollout, so steps draw again.
    cfg = _config(tiny_model_dir, tmp_path / "run", max_draws=3, eval_episodes=0, env_kwargs={"letter": "q"})
    Trainer(cfg, tmp_path / "run", show_progress=False).run()
    metrics = read_metrics(tmp_path / "run")
    assert max(m["rollout/draws"] for m in metrics) > 1
    for m in metrics:
        draws = int(m["rollout/draws"])
        assert 1 <= draws <= 3
        # Every draw's episodes are played and kept on disk, trained on or not.
        assert m["rollout/episodes"] == draws * cfg.tasks_per_step * cfg.samples_per_task
        played = read_trajectories(tmp_path / "run" / "trajectories" / f"step-{m['step']:06d}.jsonl")
        assert len(played) == m["rollout/episodes"] and len({t.group_id for t in played}) == draws * cfg.tasks_per_step
        assert m["train/groups"] <= cfg.tasks_per_step
        if draws < 3:  # it stopped early, so it had found a full batch of groups that disagree
            assert m["train/groups"] == cfg.tasks_per_step
        # A group in which no turn of any rollout earned a reward has no signal and is never trained on.
        rewarded = {t.group_id for t in played if any(u.reward != 0.0 for u in t.turns)}
        assert m["train/groups"] <= len(rewarded)


def test_held_out_seeds_never_meet_training_seeds() -> None:
    from agentgym.trainers.loop import eval_jobs

    # With seed 10 the old scheme gave training seed 1,000,030 (step 0) to held-out episode 20 as well.
    for seed in (0, 10, 12345):
        cfg = TrainConfig(env=TOY, seed=seed, eval_episodes=400, max_draws=2)
        tasks = [f"t{i}" for i in range(30)]
        train = {j.seed for step in range(50) for draw in range(2) for j in step_jobs(tasks, cfg, step, draw)}
        held_out = {j.seed for j in eval_jobs(tasks, cfg)}
        assert train and held_out and not train & held_out
        assert max(train) < 2**31 <= min(held_out)  # by construction, not by luck


def test_episodes_that_ended_with_an_error_are_counted_and_never_trained_on(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_model_dir, tmp_path / "run", steps=1, eval_episodes=0, tasks_per_step=3,
                  **{"env_kwargs.crash_task": "letter-1"})
    Trainer(cfg, tmp_path / "run", show_progress=False).run()
    (m,) = read_metrics(tmp_path / "run")
    assert m["rollout/episodes"] == 12 and m["rollout/errors"] == 4  # every episode is played and stored...
    assert m["train/excluded_errors"] == 4 and m["train/groups"] == 2  # ...the crashed group is not trained on
    stored = read_trajectories(tmp_path / "run" / "trajectories" / "step-000001.jsonl")
    assert sum(t.error is not None for t in stored) == 4


def test_after_a_resume_the_kl_reference_is_still_the_starting_model(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentgym.trainers import loop

    references: list[dict[str, torch.Tensor]] = []
    real_step = loop.policy_gradient_step

    def spy(*args: object, ref_model: object = None, **kwargs: object) -> dict[str, float]:
        references.append({k: v.detach().clone() for k, v in ref_model.state_dict().items()})  # type: ignore[attr-defined]
        return real_step(*args, ref_model=ref_model, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(loop, "policy_gradient_step", spy)
    run = tmp_path / "run"
    Trainer(_config(tiny_model_dir, run, steps=1, eval_episodes=0, **{"update.kl_coef": 0.5}), run, show_progress=False).run()
    Trainer(_config(tiny_model_dir, run, steps=2, eval_episodes=0, **{"update.kl_coef": 0.5}), run, resume=True,
            show_progress=False).run()
    assert len(references) == 2
    start = _weights(tiny_model_dir)
    checkpoint = _weights(run / "checkpoints" / "step-000001" / "model")
    name = next(k for k in start if not torch.equal(start[k], checkpoint[k]))  # a weight step 1 moved
    for ref in references:
        assert torch.equal(ref[name], start[name])


def test_two_runs_with_the_same_seed_play_the_same_episodes(tiny_model_dir: Path, tmp_path: Path) -> None:
    def played(run: Path) -> list[tuple[str, int, list[list[int]]]]:
        Trainer(_config(tiny_model_dir, run, eval_episodes=0), run, show_progress=False).run()
        out = []
        for path in sorted((run / "trajectories").glob("step-*.jsonl")):
            for t in read_trajectories(path):
                out.append((t.group_id, t.sample_index, [u.completion_token_ids or [] for u in t.turns]))
        return sorted(out)

    first, second = played(tmp_path / "a"), played(tmp_path / "b")
    assert len(first) == 16 and first == second  # token for token, step 2 included (after an update)
    assert len({tuple(map(tuple, ids)) for _, _, ids in first}) > 1  # and not one reply played everywhere


def test_asynchronous_rollouts_stay_within_the_staleness_bound(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = _config(tiny_model_dir, run, steps=4, eval_episodes=4, **{"rollout.max_staleness": 1})
    result = Trainer(cfg, run, show_progress=False).run()
    assert result.steps == 4
    for number in range(1, 5):
        versions = {t.policy.weights_step for t in read_trajectories(run / "trajectories" / f"step-{number:06d}.jsonl")}
        # The batch of step s (0-based s = number - 1) is played by the weights of step s - 1 or newer.
        assert versions and all(number - 2 <= v <= number - 1 for v in versions), (number, versions)
    metrics = read_metrics(run)
    assert all(m["rollout/staleness_max"] <= 1 for m in metrics)
    assert all(m["policy/tis_ratio_mean"] > 0 for m in metrics if m.get("train/samples"))
    evaluated = read_trajectories(run / "eval" / "step-000004" / "trajectories.jsonl")
    assert {t.policy.weights_step for t in evaluated} == {4}


def test_the_trainers_heartbeat_line_says_where_the_run_is(tmp_path: Path) -> None:
    trainer = Trainer(TrainConfig(env=TOY, steps=4), tmp_path / "run", show_progress=False)
    assert trainer._status_line().startswith("train step 1/4: starting · 0 episodes, 0 tokens played")
    trainer._phase = (2, "rollouts")
    trainer._episodes, trainer._tokens = 40, 1234
    trainer._last = {"rollout/success_rate": 0.5, "loss/policy": -0.0123}
    trainer._step_seconds = [60.0, 80.0]
    line = trainer._status_line()
    assert "train step 3/4: rollouts · 40 episodes, 1234 tokens played" in line
    assert "last step success 0.50, loss -0.0123" in line and "about 2m20s left" in line


def test_a_dead_server_or_a_policy_that_fails_every_episode_stops_the_run(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from agentgym.types import ErrorRecord, PolicyInfo, SamplingParams, Trajectory

    trainer = Trainer(TrainConfig(env=TOY, steps=1), tmp_path / "run", show_progress=False)
    log = tmp_path / "vllm.log"
    log.write_text("RuntimeError: CPU Generator does not use offset\n")
    trainer._server = SimpleNamespace(is_running=lambda: False, process=SimpleNamespace(returncode=1), log_path=log,
                                      log_tail=lambda: log.read_text())
    with pytest.raises(AgentGymError, match="vLLM server exited .code 1. during step 1's rollouts(.|\n)*does not use offset"):
        trainer._fail_if_the_policy_is_gone([], "step 1's rollouts")
    trainer._server = None

    def traj(where: str | None) -> Trajectory:
        error = ErrorRecord(type="ServerUnreachableError", message="connection refused", traceback="", where=where) if where else None
        return Trajectory(trajectory_id="t", env_id=TOY, task_id="x", seed=0, group_id="g",
                          policy=PolicyInfo(kind="openai"), sampling=SamplingParams(), error=error, started_at=0.0)

    with pytest.raises(AgentGymError, match="every episode of the held-out evaluation failed in the policy.*connection refused"):
        trainer._fail_if_the_policy_is_gone([traj("policy"), traj("policy")], "the held-out evaluation")
    trainer._fail_if_the_policy_is_gone([traj("policy"), traj(None)], "x")  # one good episode: the run goes on
    trainer._fail_if_the_policy_is_gone([traj("env"), traj("env")], "x")  # env failures are the env's, recorded


def _failing_reward_model():  # noqa: ANN202 - a RewardModel
    """A reward model that raises on task letter-1's group and pays the env's rewards elsewhere."""
    from agentgym.reward_models.base import RewardModel, RewardScores

    class FailsOnLetter1(RewardModel):
        name = "flaky"

        async def score(self, group, scorer=None):  # noqa: ANN001, ANN202
            if group[0].task_id == "letter-1":
                raise RuntimeError("reward server down")
            return RewardScores([[u.reward for u in t.turns] for t in group])

    return FailsOnLetter1()


def test_a_reward_model_that_raises_loses_only_its_group_and_is_recorded(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_model_dir, tmp_path / "run", steps=1, eval_episodes=0, tasks_per_step=3)
    Trainer(cfg, tmp_path / "run", show_progress=False, reward_fn=_failing_reward_model()).run()
    (m,) = read_metrics(tmp_path / "run")
    assert m["reward/errors"] == 4 and m["train/excluded_errors"] == 4 and m["train/groups"] == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "scores" / "step-000001.jsonl").read_text().splitlines()]
    failed = [r for r in rows if "reward_error" in r]
    assert len(failed) == 4 and all("reward server down" in r["reward_error"]["message"] for r in failed)
    stored = {t.trajectory_id: t for t in read_trajectories(tmp_path / "run" / "trajectories" / "step-000001.jsonl")}
    scored = [r for r in rows if "rewards" in r]
    assert len(scored) == 8
    for r in scored:  # what each trained trajectory got: its env rewards, one advantage per turn
        assert r["rewards"] == [u.reward for u in stored[r["trajectory_id"]].turns]
        assert len(r["advantages"]) == len(r["rewards"])


def test_gated_rewards_pay_step_signals_only_on_trajectories_that_reach_tau(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_model_dir, tmp_path / "run", steps=1, eval_episodes=0,
                  **{"reward.name": "gra", "reward.signals": {"valid_action": 0.25}, "reward.tau": 1.0})
    assert cfg.estimator == "grpo_turn"  # dense rewards: baselines per turn index
    Trainer(cfg, tmp_path / "run", show_progress=False).run()
    stored = {t.trajectory_id: t for t in read_trajectories(tmp_path / "run" / "trajectories" / "step-000001.jsonl")}
    rows = [json.loads(line) for line in (tmp_path / "run" / "scores" / "step-000001.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    for r in rows:
        t = stored[r["trajectory_id"]]
        bonus = 0.25 if t.total_reward >= 1.0 else 0.0  # every toy step is a valid action
        assert r["rewards"] == [u.reward + bonus for u in t.turns]
    (m,) = read_metrics(tmp_path / "run")
    assert 0.0 <= m["reward/gate_open_fraction"] <= 1.0 and "train/zero_advantage_groups" in m


def test_igpo_on_an_env_without_answers_stops_with_a_clear_error(tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = _config(tiny_model_dir, tmp_path / "run", steps=1, eval_episodes=0, **{"reward.name": "igpo"})
    with pytest.raises(AgentGymError, match="reward model 'igpo' failed on every group of step 1.*answer"):
        Trainer(cfg, tmp_path / "run", show_progress=False).run()


def test_an_unknown_advantage_estimator_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown advantage estimator 'grpo_trun'.*did you mean 'grpo_turn'"):
        TrainConfig(env=TOY, reward={"advantage": "grpo_trun"})
