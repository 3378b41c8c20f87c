"""PPO: GAE and the clipped value loss on hand-worked numbers, the value head learning, and `--algo ppo` end to end."""

from __future__ import annotations

import math
import subprocess
from pathlib import Path

import pytest
import torch

from agentgym.plotting import plot_run
from agentgym.store import read_trajectories
from agentgym.trainers.algorithms import get_algorithm
from agentgym.trainers.algorithms.ppo import PPO
from agentgym.trainers.algorithms.value import ValueHead, explained_variance, gae, value_loss
from agentgym.trainers.checkpoint import latest_checkpoint, read_state
from agentgym.trainers.config import TrainConfig
from agentgym.trainers.loop import Trainer
from agentgym.trainers.run_log import read_metrics
from agentgym.trainers.turn_encoder import TurnFeatures
from agentgym.types import Message, PolicyInfo, SamplingParams, Trajectory, Turn
from tests.test_trainer_loop import TOY, _agentgym, _config, _kill_9_when, _toy_env, _weights  # noqa: F401  (_toy_env registers TOY)


def t(*xs: float) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.float32)


# ---- formulas, on numbers worked out by hand ------------------------------------------------


def test_gae_discounts_td_residuals_by_gamma_lambda_and_ends_at_the_last_turn() -> None:
    # r = (0, 0, 1), V = (0.5, 0.6, 0.8), γ = 0.9, V(s_3) = 0:
    #   δ = (0 + 0.9·0.6 − 0.5, 0 + 0.9·0.8 − 0.6, 1 − 0.8) = (0.04, 0.12, 0.2)
    # λ = 0.5 (γλ = 0.45): A_2 = 0.2, A_1 = 0.12 + 0.45·0.2 = 0.21, A_0 = 0.04 + 0.45·0.21 = 0.1345
    a, r = gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.8], gamma=0.9, lam=0.5)
    assert a == pytest.approx([0.1345, 0.21, 0.2])
    assert r == pytest.approx([0.6345, 0.81, 1.0])  # R = A + V
    # λ = 1: Monte Carlo, G = (0.81, 0.9, 1) minus V; λ = 0: the one-step residuals.
    assert gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.8], gamma=0.9, lam=1.0)[0] == pytest.approx([0.31, 0.3, 0.2])
    assert gae([0.0, 0.0, 1.0], [0.5, 0.6, 0.8], gamma=0.9, lam=0.0)[0] == pytest.approx([0.04, 0.12, 0.2])
    assert gae([], [], gamma=1.0, lam=0.95) == ([], [])
    with pytest.raises(ValueError, match="2 rewards for 1 values"):
        gae([0.0, 1.0], [0.0], gamma=1.0, lam=1.0)
    with pytest.raises(ValueError, match="lambda"):
        gae([1.0], [0.0], gamma=1.0, lam=1.5)


def test_value_loss_takes_the_larger_of_the_plain_and_clipped_errors() -> None:
    # V = (1, 0), V_old = (0.5, 0.5), R = (2, 0), ε = 0.2:
    #   row 0: (1 − 2)² = 1;  clipped 0.5 + 0.2 = 0.7, (0.7 − 2)² = 1.69 → 1.69
    #   row 1: (0 − 0)² = 0;  clipped 0.5 − 0.2 = 0.3, 0.3² = 0.09 → 0.09
    #   L = ½ (1.69 + 0.09) / 2 = 0.445, both rows clipped
    loss, clipped = value_loss(t(1.0, 0.0), t(0.5, 0.5), t(2.0, 0.0), clip=0.2)
    assert float(loss) == pytest.approx(0.445)
    assert float(clipped) == pytest.approx(1.0)
    plain, none = value_loss(t(1.0, 0.0), t(0.5, 0.5), t(2.0, 0.0), clip=None)
    assert float(plain) == pytest.approx(0.25) and float(none) == 0.0
    # Within ε of V_old the two terms are the same: nothing is clipped.
    inside, fraction = value_loss(t(0.6), t(0.5), t(2.0), clip=0.2)
    assert float(inside) == pytest.approx(0.5 * 1.96) and float(fraction) == 0.0
    # Gradient flows through V only, and the clipped term has none beyond ε.
    v = t(1.0, 0.0).requires_grad_()
    value_loss(v, t(0.5, 0.5), t(2.0, 0.0), clip=0.2)[0].backward()
    assert v.grad is not None and v.grad.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="shapes differ"):
        value_loss(t(1.0), t(1.0, 2.0), t(1.0), clip=0.2)


def test_explained_variance() -> None:
    returns = t(1.0, 2.0, 3.0)
    assert explained_variance(returns.clone(), returns) == pytest.approx(1.0)
    assert explained_variance(t(0.0, 0.0, 0.0), returns) == pytest.approx(0.0)
    # Var(R − V) = Var(1, 2, 3 − (3, 2, 1)) = Var(−2, 0, 2) = 8/3 against Var(R) = 2/3: 1 − 4 = −3.
    assert explained_variance(t(3.0, 2.0, 1.0), returns) == pytest.approx(-3.0)
    assert math.isnan(explained_variance(t(0.0, 1.0), t(1.0, 1.0)))


# ---- the value head learns ------------------------------------------------------------------


def _trajectory(tid: str, turns: int) -> Trajectory:
    steps = [Turn(index=i, prompt_messages=[0], completion="x", action="x", observation="o") for i in range(turns)]
    return Trajectory(trajectory_id=tid, env_id="toy", task_id=tid, seed=0, group_id=tid, policy=PolicyInfo(kind="x"),
                      sampling=SamplingParams(), started_at=0.0, messages=[Message(role="user", content="o")], turns=steps)


class _Features:
    """Stands in for the frozen backbone: each trajectory's turn states are given."""

    def __init__(self, states: dict[str, list[list[float]]]) -> None:
        self.states = states

    def trajectory_features(self, trajectories: list[Trajectory]) -> list[TurnFeatures]:
        out = []
        for traj in trajectories:
            s = torch.tensor(self.states[traj.trajectory_id])
            out.append(TurnFeatures(s, torch.cat([s, s], dim=-1)))
        return out


def test_the_value_head_learns_the_returns_and_gae_credits_the_good_start(tmp_path: Path) -> None:
    """Two-turn episodes: from state G the episode earns 1 at its end, from state B nothing; a shared second state."""
    cfg = TrainConfig(env=TOY, algo="ppo", samples_per_task=1, gamma=1.0,
                      ppo={"lam": 1.0, "hidden": 16, "lr": 1e-2, "value_epochs": 50, "batch_size": 8,
                           "value_clip": None, "normalize_advantages": False})
    algo = PPO(cfg, tmp_path)
    torch.manual_seed(0)
    algo.value = ValueHead(2, 16)
    algo.optimizer = torch.optim.AdamW(algo.value.parameters(), lr=1e-2)
    algo.encoder = _Features({"g": [[1.0, 0.0], [0.0, 1.0]], "b": [[-1.0, 0.0], [0.0, -1.0]]})  # type: ignore[assignment]
    trajs = [_trajectory("g", 2), _trajectory("b", 2)]
    rewards = [[0.0, 1.0], [0.0, 0.0]]
    first = algo.advantages(0, trajs, rewards, [[0.0, 0.0]] * 2)
    assert first.advantages[0][0] > first.advantages[1][0]  # the start that leads to the reward is credited
    for step in range(1, 6):
        last = algo.advantages(step, trajs, rewards, [[0.0, 0.0]] * 2)
    # The value head fits V(G) ≈ 1 and V(B) ≈ 0, so the λ = 1 advantages G_t − V(s_t) fall towards 0.
    with torch.no_grad():
        v = algo.value(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))
    assert v[0].item() == pytest.approx(1.0, abs=0.1) and v[1].item() == pytest.approx(0.0, abs=0.1)
    assert last.metrics["critic/explained_variance"] > 0.9 > first.metrics["critic/explained_variance"]
    assert max(abs(a) for row in last.advantages for a in row) < 0.15
    assert last.metrics["critic/v_loss"] < first.metrics["critic/v_loss"]
    # Advantages line up with the trajectories' turns; a reward list of the wrong length is refused.
    assert [len(row) for row in last.advantages] == [2, 2]
    with pytest.raises(ValueError, match="2 turns was given 1 rewards"):
        algo.advantages(6, trajs, [[1.0], [0.0, 0.0]], [[0.0]] * 2)


def test_ppo_is_a_registered_peer_that_needs_no_groups() -> None:
    assert get_algorithm("ppo") is PPO
    assert TrainConfig(env=TOY, algo="ppo", samples_per_task=1).ppo.lam == 0.95
    with pytest.raises(ValueError, match="ppo has no groups"):
        TrainConfig(env=TOY, algo="ppo", max_draws=2)
    with pytest.raises(ValueError, match="lam"):
        TrainConfig(env=TOY, algo="ppo", ppo={"lam": 2.0})


# ---- the trainer ----------------------------------------------------------------------------


@pytest.mark.parametrize("epo", [False, True], ids=["ppo", "ppo-epo"])
def test_ppo_trains_the_value_head_and_the_actor_on_gae_advantages(tiny_model_dir: Path, tmp_path: Path, epo: bool) -> None:
    run = tmp_path / "run"
    cfg = _config(tiny_model_dir, run, algo="ppo", steps=2, eval_episodes=0, samples_per_task=2,
                  **{"ppo.value_epochs": 2, "update.epo.enabled": epo})
    trainer = Trainer(cfg, run, show_progress=False)
    trainer.run()
    metrics = read_metrics(run)
    assert [m["train/actor_updated"] for m in metrics] == [1.0, 1.0]
    for m in metrics:
        for key in ("critic/v_loss", "critic/v_mean", "critic/return_mean", "critic/explained_variance",
                    "critic/advantage_std", "time/critic", "time/update"):
            assert m[key] is not None, key
    if epo:
        assert metrics[-1]["loss/entropy_bonus"] > 0
    lines = (run / "scores" / "step-000001.ppo.jsonl").read_text().splitlines()
    assert len(lines) == len(read_trajectories(run / "trajectories" / "step-000001.jsonl"))
    algo = trainer.algorithm
    assert isinstance(algo, PPO) and algo.value is not None and algo.optimizer is not None
    device = torch.device(trainer.cfg.device)
    assert all(p.device.type == device.type for p in algo.value.parameters())
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None and (ckpt / "value.pt").is_file()
    saved = torch.load(ckpt / "value.pt", weights_only=True)
    assert all(torch.equal(saved["value"][k].cpu(), v.cpu()) for k, v in algo.value.state_dict().items())
    start, after = _weights(tiny_model_dir), _weights(ckpt / "model")
    assert any(not torch.equal(start[k], after[k]) for k in start)
    plot_run(run)
    assert {"critic_loss.png", "critic_values.png", "critic_explained_variance.png"} <= {p.name for p in (run / "plots").glob("*.png")}


def test_ppo_resumes_after_kill_9_with_its_value_head(tiny_model_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["train", "--env", TOY, "--model", str(tiny_model_dir), "--rollout", "inprocess", "--steps", "3",
            "--algo", "ppo", "--out", str(run), "--quiet", "tasks_per_step=2", "samples_per_task=2",
            "eval_episodes=0", "rollout.sampling.max_tokens=6", "update.precision=fp32", "update.lr=1e-3",
            "ppo.value_epochs=2", "env_kwargs.turns=3"]
    proc = _agentgym(*args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _kill_9_when(proc, lambda: latest_checkpoint(run / "checkpoints") is not None)
    ckpt = latest_checkpoint(run / "checkpoints")
    assert ckpt is not None
    done = read_state(ckpt).step
    value_before = torch.load(ckpt / "value.pt", weights_only=True)
    resumed = _agentgym(*args, "--resume", stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, _ = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, out.decode()
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == [1, 2, 3]
    # The resumed value head went on from the checkpoint's: its input statistics were not fitted afresh,
    # and its optimiser counted the steps before the kill.
    value_after = torch.load(latest_checkpoint(run / "checkpoints") / "value.pt", weights_only=True)  # type: ignore[operator]
    assert torch.equal(value_before["value"]["state_norm.mean"], value_after["value"]["state_norm.mean"])
    steps_before = next(iter(value_before["optimizer"]["state"].values()))["step"]
    steps_after = next(iter(value_after["optimizer"]["state"].values()))["step"]
    assert float(steps_after) > float(steps_before) > 0 and done >= 1
