"""ArCHer: the critic's formulas on hand-worked numbers, the replay buffer, and `--algo archer` end to end."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch

from agentgym.plotting import plot_run
from agentgym.store import read_trajectories
from agentgym.trainers.algorithms import UnknownAlgorithmError, get_algorithm
from agentgym.trainers.algorithms.archer import ArCHer, transitions_of
from agentgym.trainers.algorithms.critic import (
    TwinCritic,
    critic_losses,
    q_targets,
    soft_update_,
    turn_advantage,
    v_targets,
)
from agentgym.trainers.algorithms.replay import ReplayBuffer, Transitions
from agentgym.trainers.checkpoint import latest_checkpoint, read_state
from agentgym.trainers.config import TrainConfig
from agentgym.trainers.loop import Trainer
from agentgym.trainers.run_log import read_metrics
from agentgym.trainers.turn_encoder import TurnFeatures
from tests.test_trainer_loop import TOY, _agentgym, _config, _kill_9_when, _toy_env, _weights  # noqa: F401  (_toy_env registers TOY)


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


# ---- formulas, on numbers worked out by hand ------------------------------------------------


def test_q_target_is_reward_plus_discounted_next_value_unless_done() -> None:
    # 1 + 0.9*2 = 2.8;  done: 0 + 0 = 0;  0.5 + 0.9*(-1) = -0.4
    got = q_targets(t(1.0, 0.0, 0.5), t(0, 1, 0), t(2.0, 5.0, -1.0), gamma=0.9)
    assert torch.allclose(got, t(2.8, 0.0, -0.4))
    with pytest.raises(ValueError, match="gamma"):
        q_targets(t(1.0), t(0), t(1.0), gamma=1.5)


def test_v_target_is_the_smaller_twin_q() -> None:
    assert torch.equal(v_targets(t(1, 3), t(2, -1)), t(1, -1))


def test_critic_losses_sum_each_twins_mean_squared_error() -> None:
    # Q1 errors (0, 2) -> 2; Q2 errors (-1, 2) -> 2.5; L_Q = 4.5.  V1 (-1, 1) -> 1; V2 (0, 2) -> 2; L_V = 3.
    loss_q, loss_v = critic_losses((t(1, 2), t(0, 2)), (t(0, 0), t(1, 1)), t(1, 0), t(1, -1))
    assert loss_q.item() == pytest.approx(4.5) and loss_v.item() == pytest.approx(3.0)


def test_turn_advantage_is_min_q_minus_min_v() -> None:
    # min Q = (1, 3), min V = (0.5, 2): A = (0.5, 1)
    assert torch.allclose(turn_advantage(t(1, 4), t(2, 3), t(0.5, 5), t(1, 2)), t(0.5, 1.0))


def test_soft_update_moves_the_target_tau_of_the_way() -> None:
    online, target = torch.nn.Linear(1, 1, bias=False), torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        online.weight.fill_(1.0)
        target.weight.fill_(0.0)
    soft_update_(target, online, 0.1)
    assert target.weight.item() == pytest.approx(0.1)
    soft_update_(target, online, 0.1)  # 0.1 + 0.1 (1 - 0.1) = 0.19
    assert target.weight.item() == pytest.approx(0.19)
    with pytest.raises(ValueError, match="tau"):
        soft_update_(target, online, 0.0)


def test_transitions_link_each_turn_to_the_next_state_and_end_the_episode() -> None:
    f = TurnFeatures(state=torch.tensor([[1.0], [2.0]]), turn=torch.tensor([[10.0, 11.0], [20.0, 21.0]]))
    g = TurnFeatures(state=torch.tensor([[3.0]]), turn=torch.tensor([[30.0, 31.0]]))
    tr = transitions_of([f, g], [[0.0, 1.0], [0.5]])
    assert tr.next_state.squeeze(-1).tolist() == [2.0, 0.0, 0.0]
    assert tr.done.tolist() == [0.0, 1.0, 1.0] and tr.reward.tolist() == [0.0, 1.0, 0.5]
    with pytest.raises(ValueError, match="2 turns was given 1 rewards"):
        transitions_of([f], [[1.0]])


# ---- the replay buffer ----------------------------------------------------------------------


def _transitions(n: int, value: float) -> Transitions:
    return Transitions(torch.full((n, 2), value), torch.full((n, 4), value), torch.zeros(n, 2), torch.full((n,), value),
                       torch.ones(n))


def test_the_replay_buffer_persists_each_step_and_keeps_the_newest_capacity(tmp_path: Path) -> None:
    buf = ReplayBuffer(tmp_path / "replay", capacity=5)
    buf.add(1, _transitions(3, 1.0))
    buf.add(2, _transitions(3, 2.0))
    assert len(buf) == 5 and buf.all().reward.tolist() == [1.0, 1.0, 2.0, 2.0, 2.0]
    buf.add(3, _transitions(5, 3.0))  # steps 1 and 2 are wholly older than the newest 5: dropped, files deleted
    assert buf.steps == [3] and sorted(p.name for p in (tmp_path / "replay").iterdir()) == ["step-000003.safetensors"]
    again = ReplayBuffer(tmp_path / "replay", capacity=5)
    again.load(3)
    assert torch.equal(again.all().turn, buf.all().turn)


def test_a_resume_reads_the_steps_it_checkpointed_and_drops_a_later_ones_file(tmp_path: Path) -> None:
    buf = ReplayBuffer(tmp_path / "replay", capacity=100)
    for step in (1, 2, 3):
        buf.add(step, _transitions(2, float(step)))
    resumed = ReplayBuffer(tmp_path / "replay", capacity=100)
    resumed.load(2)  # the checkpoint is step 2's: step 3 is played again
    assert resumed.steps == [1, 2] and not (tmp_path / "replay" / "step-000003.safetensors").exists()
    resumed.add(3, _transitions(1, 9.0))
    assert resumed.all().reward.tolist() == [1.0, 1.0, 2.0, 2.0, 9.0]
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(tmp_path / "x", capacity=0)


def test_sampling_is_uniform_over_the_buffer_and_seeded(tmp_path: Path) -> None:
    buf = ReplayBuffer(tmp_path / "replay", capacity=100)
    buf.add(1, Transitions(torch.arange(10.0)[:, None], torch.zeros(10, 1), torch.zeros(10, 1), torch.arange(10.0), torch.ones(10)))
    a = buf.sample(2000, torch.Generator().manual_seed(0)).reward
    b = buf.sample(2000, torch.Generator().manual_seed(0)).reward
    assert torch.equal(a, b)
    counts = torch.bincount(a.long(), minlength=10)
    assert counts.min() > 120 and counts.max() < 280  # 200 expected per transition


# ---- the critic learns --------------------------------------------------------------------


def test_the_critic_learns_that_a_rewarded_action_has_the_higher_advantage(tmp_path: Path) -> None:
    """Two-turn episodes from one state: action A then a neutral turn earns 1, action B earns 0."""
    cfg = TrainConfig(env=TOY, algo="archer", samples_per_task=1, gamma=0.9,
                      archer={"critic_updates": 300, "batch_size": 32, "lr": 3e-3, "hidden": 32})
    algo = ArCHer(cfg, tmp_path)
    torch.manual_seed(0)
    algo.critic = TwinCritic(2, 2, 32)
    algo.target = TwinCritic(2, 2, 32).requires_grad_(False)
    algo.target.load_state_dict(algo.critic.state_dict())
    algo.optimizer = torch.optim.AdamW(algo.critic.parameters(), lr=3e-3)
    start, after_a, after_b = [1.0, 0.0], [0.0, 1.0], [0.0, -1.0]
    good = TurnFeatures(torch.tensor([start, after_a]), torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    bad = TurnFeatures(torch.tensor([start, after_b]), torch.tensor([[-1.0, 0.0], [0.0, 0.0]]))
    algo.buffer.add(1, transitions_of([good, bad] * 8, [[0.0, 1.0], [0.0, 0.0]] * 8))
    metrics = algo._train_critic(step=0)
    assert metrics["critic/q_loss"] >= 0 and metrics["critic/td_error"] >= 0
    a_good, a_bad = algo._advantages([good, bad])
    # True values (gamma 0.9): Q(start, A) = 0.9, Q(start, B) = 0, V(start) under the buffer's mix between.
    assert a_good[0] > a_bad[0] + 0.3
    with torch.no_grad():
        q = torch.minimum(*algo.critic.q(torch.tensor([start, start]), torch.tensor([[1.0, 0.0], [-1.0, 0.0]])))
    assert q[0].item() == pytest.approx(0.9, abs=0.25) and q[1].item() == pytest.approx(0.0, abs=0.25)


# ---- the trainer ----------------------------------------------------------------------------


def test_algorithm_names_are_checked() -> None:
    with pytest.raises(UnknownAlgorithmError, match="did you mean 'archer'"):
        get_algorithm("archr")
    with pytest.raises(ValueError, match="unknown algo 'grpoo'; did you mean 'grpo'"):
        TrainConfig(env=TOY, algo="grpoo")
    assert TrainConfig(env=TOY, algo="archer", samples_per_task=1).algo == "archer"  # no groups needed
    with pytest.raises(ValueError, match="archer has no groups"):
        TrainConfig(env=TOY, algo="archer", max_draws=2)


@pytest.mark.parametrize("epo", [False, True], ids=["archer", "archer-epo"])
def test_archer_warms_the_critic_up_then_trains_the_actor_with_its_advantage(
    tiny_model_dir: Path, tmp_path: Path, epo: bool
) -> None:
    run = tmp_path / "run"
    cfg = _config(tiny_model_dir, run, algo="archer", steps=3, eval_episodes=0, samples_per_task=2, keep_checkpoints=3,
                  **{"archer.warmup_steps": 1, "archer.critic_updates": 10, "update.epo.enabled": epo})
    trainer = Trainer(cfg, run, show_progress=False)
    trainer.run()
    metrics = read_metrics(run)
    assert [m["train/actor_updated"] for m in metrics] == [0.0, 1.0, 1.0]
    for m in metrics:
        for key in ("critic/q_loss", "critic/v_loss", "critic/td_error", "critic/q_mean", "critic/v_mean",
                    "critic/advantage_std", "time/critic", "replay/transitions"):
            assert m[key] is not None, key
    assert metrics[0].get("time/update") is None and metrics[1]["time/update"] is not None
    if epo:
        assert metrics[-1]["loss/entropy_bonus"] > 0
    # Off-policy: the buffer holds every step's turns.
    turns = [sum(t.num_turns for t in read_trajectories(run / "trajectories" / f"step-{n:06d}.jsonl")) for n in (1, 2, 3)]
    assert metrics[-1]["replay/transitions"] == sum(turns)
    assert sorted(p.name for p in (run / "replay").iterdir()) == [f"step-{n:06d}.safetensors" for n in (1, 2, 3)]
    # The actor trained on the critic's advantages, stored per trajectory.
    lines = (run / "scores" / "step-000002.archer.jsonl").read_text().splitlines()
    assert len(lines) == len(read_trajectories(run / "trajectories" / "step-000002.jsonl"))
    # The critic, its targets and its optimiser live on the trainer's device and are checkpointed.
    algo = trainer.algorithm
    assert isinstance(algo, ArCHer) and algo.critic is not None and algo.optimizer is not None
    device = torch.device(trainer.cfg.device)
    assert all(p.device.type == device.type for p in algo.critic.parameters())
    assert all(v.device.type == device.type for s in algo.optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.dim())
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None and (ckpt / "critic.pt").is_file()
    saved = torch.load(ckpt / "critic.pt", weights_only=True)
    assert all(torch.equal(saved["critic"][k].cpu(), v.cpu()) for k, v in algo.critic.state_dict().items())
    # Step 1 was the critic's alone: the policy's weights moved only after it.
    start, first, second = (_weights(p) for p in (tiny_model_dir, run / "checkpoints" / "step-000001" / "model", ckpt / "model"))
    assert all(torch.equal(start[k], first[k]) for k in start)
    assert any(not torch.equal(start[k], second[k]) for k in start)
    # `agentgym plot` draws the critic's panels.
    plot_run(run)
    assert {"critic_loss.png", "critic_values.png", "step_phases.png"} <= {p.name for p in (run / "plots").glob("*.png")}


def test_archer_resumes_after_kill_9_with_its_replay_buffer_and_critic(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--env", TOY, "--model", str(tiny_model_dir), "--rollout", "inprocess", "--steps", "4",
            "--algo", "archer", "--out", str(run), "--quiet", "tasks_per_step=2", "samples_per_task=2",
            "eval_episodes=0", "rollout.sampling.max_tokens=6", "update.precision=fp32", "update.lr=1e-3",
            "archer.critic_updates=10", "archer.warmup_steps=1", "env_kwargs.turns=3"]
    proc = _agentgym(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    step2 = run / "trajectories" / "step-000002.jsonl"
    _kill_9_when(proc, lambda: latest_checkpoint(run / "checkpoints") is not None
                 and step2.exists() and step2.stat().st_size > 0)
    done = read_state(latest_checkpoint(run / "checkpoints")).step  # type: ignore[arg-type]
    kept = {n: (run / "replay" / f"step-{n:06d}.safetensors").read_bytes() for n in range(1, done + 1)}
    assert kept, "step 1's transitions were in the buffer when its checkpoint was written"
    critic_before = torch.load(latest_checkpoint(run / "checkpoints") / "critic.pt", weights_only=True)  # type: ignore[operator]

    resumed = _agentgym(*args, "--resume", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out.decode()
    # The checkpointed steps' transitions are the same bytes; the later steps were added to them.
    for n, data in kept.items():
        assert (run / "replay" / f"step-{n:06d}.safetensors").read_bytes() == data
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3, 4]
    turns = sum(t.num_turns for n in range(1, 5) for t in read_trajectories(run / "trajectories" / f"step-{n:06d}.jsonl"))
    assert metrics[-1]["replay/transitions"] == turns
    # The resumed critic went on from the checkpoint's (its input statistics were not fitted afresh).
    critic_after = torch.load(latest_checkpoint(run / "checkpoints") / "critic.pt", weights_only=True)  # type: ignore[operator]
    assert torch.equal(critic_before["critic"]["state_norm.mean"], critic_after["critic"]["state_norm.mean"])
