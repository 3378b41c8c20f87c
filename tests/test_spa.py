"""SPA: the reward formula and progress loss on hand numbers, a per-turn estimator trained on synthetic episodes, the reward block and the CLI."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from typer.testing import CliRunner

from agentgym.reward_models.compose import checked_score
from agentgym.reward_models.factory import RewardSettings, build_reward_model
from agentgym.reward_models.spa import (
    ProgressEstimator,
    ProgressModelError,
    ProgressRewards,
    clip_context,
    grounding,
    progress_loss,
    spa_rewards,
    train_progress,
)
from agentgym.rollout.prompts import ChatHistory
from agentgym.store import TrajectoryWriter
from agentgym.types import ErrorRecord, Message, PolicyInfo, SamplingParams, Trajectory, Turn

# The synthetic task: the episode succeeds (outcome 1) when some turn says GOOD, at most one turn does.
GOOD = "take the golden key"
NEUTRAL = ["look around", "go north", "open the box", "wait here", "go to the garden", "drop the apple"]
TURNS = 3
# What the estimator is trained with in these tests (the CLI test repeats it to check determinism).
TRAIN = {"epochs": 120, "lr": 1e-2, "seed": 0, "val_fraction": 0.25, "batch_size": 64}


def episode(i: int, good_turn: int | None, rng: random.Random, valid: list[bool] | None = None) -> Trajectory:
    """Episode i of TURNS turns as the rollout engine records it (full history in each prompt); GOOD at `good_turn`."""
    messages: list[Message] = []
    history = ChatHistory(messages, "find the key", f"room {i}: a dusty hall")
    turns = []
    for t in range(TURNS):
        reply = GOOD if t == good_turn else rng.choice(NEUTRAL)
        turns.append(Turn(
            index=t, prompt_messages=history.window_indices(None), completion=reply, action=reply,
            observation=f"you did step {t}", reward=1.0 if t == good_turn else 0.0,
            signals={"valid_action": True if valid is None else valid[t]},
        ))
        history.add(reply, f"you did step {t}")
    return Trajectory(
        trajectory_id=f"ep{i}", env_id="toy", task_id=f"task{i}", seed=i, group_id=f"g{i}", policy=PolicyInfo(kind="test"),
        sampling=SamplingParams(), started_at=0.0, messages=messages, turns=turns,
        total_reward=1.0 if good_turn is not None else 0.0, success=good_turn is not None,
    )


def synthetic(n: int, seed: int = 0) -> list[Trajectory]:
    """n episodes: half fail, the other half say GOOD at a uniformly drawn turn."""
    rng = random.Random(seed)
    return [episode(i, rng.choice([None] * TURNS + list(range(TURNS))), rng) for i in range(n)]


def broken(i: int) -> Trajectory:
    """An episode that ended with an env error: its outcome says nothing about its turns."""
    traj = episode(1000 + i, 0, random.Random(i))
    traj.error = ErrorRecord(type="RuntimeError", message="env crashed", traceback="", where="env")
    return traj


def write(path: Path, trajectories: list[Trajectory]) -> Path:
    with TrajectoryWriter(path, fsync=False) as writer:
        for traj in trajectories:
            writer.write(traj)
    return path


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """64 synthetic episodes, plus 2 with an error and 1 without turns (which training must skip and count)."""
    empty = episode(2000, None, random.Random(0)).model_copy(update={"turns": [], "trajectory_id": "empty"})
    return write(tmp_path_factory.mktemp("spa-data") / "trajs.jsonl", synthetic(64) + [broken(0), broken(1), empty])


@pytest.fixture(scope="module")
def trained(data_file: Path, tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, float]]:
    """A progress estimator trained on `data_file` with the tiny model as backbone, and its metrics."""
    out = tmp_path_factory.mktemp("spa-model") / "estimator"
    return out, train_progress([data_file], str(tiny_model_dir), out, **TRAIN)


@pytest.fixture(scope="module")
def estimator(trained: tuple[Path, dict[str, float]]) -> ProgressEstimator:
    return ProgressEstimator.load(trained[0])


# ---- the formulas ---------------------------------------------------------------------------


def test_spa_rewards_on_hand_numbers() -> None:
    # r_t = alpha c_t + beta g_t, alpha 1, beta 0.5:
    #   turn 0: 1 * 0.1 + 0.5 * 1 = 0.6;  turn 1: 1 * 0.6 + 0.5 * 0 = 0.6;  turn 2: 1 * -0.2 + 0.5 * 1 = 0.3
    assert spa_rewards([0.1, 0.6, -0.2], [1, 0, 1], 1.0, 0.5) == pytest.approx([0.6, 0.6, 0.3])
    # alpha 2, beta 0.1: 2 * 0.25 + 0.1 * 1 = 0.6;  2 * -0.5 + 0.1 * 0 = -1.0
    assert spa_rewards([0.25, -0.5], [1, 0], 2.0, 0.1) == pytest.approx([0.6, -1.0])
    # beta 0: the contributions alone.
    assert spa_rewards([0.3, 0.7], [1, 1], 1.0, 0.0) == pytest.approx([0.3, 0.7])
    with pytest.raises(ValueError, match="one value per turn"):
        spa_rewards([0.1, 0.2], [1], 1.0, 0.5)


def test_grounding_is_one_only_for_a_true_valid_action() -> None:
    traj = episode(0, None, random.Random(0), valid=[True, False, True])
    traj.turns[2].signals = {}  # missing: 0
    assert grounding(traj) == [1.0, 0.0, 0.0]
    traj.turns[2].signals = {"valid_action": 1}
    assert grounding(traj) == [1.0, 0.0, 1.0]


def test_progress_loss_on_hand_numbers_and_its_gradient() -> None:
    first = torch.tensor([0.2, 0.3], requires_grad=True)
    second = torch.tensor([0.5, 0.5, 0.5], requires_grad=True)
    # Sums 0.5 and 1.5 against outcomes 1 and 1: ((0.5 - 1)^2 + (1.5 - 1)^2) / 2 = (0.25 + 0.25) / 2 = 0.25
    loss = progress_loss([first, second], [1.0, 1.0])
    assert loss.item() == pytest.approx(0.25)
    loss.backward()
    # dL/dc_{i,t} = 2/N (sum_t c_{i,t} - R_i): 2/2 * (0.5 - 1) = -0.5 on every turn of the first (too low:
    # descent raises them), 2/2 * (1.5 - 1) = +0.5 on every turn of the second (too high: descent lowers them).
    assert first.grad.tolist() == pytest.approx([-0.5, -0.5])
    assert second.grad.tolist() == pytest.approx([0.5, 0.5, 0.5])
    # Exact sums: no loss.
    assert float(progress_loss([torch.tensor([0.25, 0.75])], [1.0])) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="outcomes"):
        progress_loss([first], [1.0, 0.0])


def test_clip_context_keeps_the_end_and_the_completion() -> None:
    assert clip_context([1, 2, 3], [4, 5], 10) == ([1, 2, 3, 4, 5], 2)
    assert clip_context([1, 2, 3], [4, 5], 3) == ([3, 4, 5], 2)
    assert clip_context([1, 2, 3], [4, 5, 6, 7], 3) == ([5, 6, 7], 3)  # a completion longer than the window
    assert clip_context([1, 2], [], 4) == ([1, 2], 1)  # an empty completion: its context's last token


# ---- the trained estimator ------------------------------------------------------------------


def test_training_reduces_the_loss_and_skips_broken_trajectories(trained: tuple[Path, dict[str, float]]) -> None:
    _, metrics = trained
    assert metrics["skipped_errors"] == 2 and metrics["skipped_empty"] == 1
    assert metrics["train_trajectories"] + metrics["val_trajectories"] == 64 and metrics["val_trajectories"] == 16
    assert metrics["turns"] == 64 * TURNS
    assert metrics["train_mse"] < 0.1 * metrics["train_mse_initial"], metrics
    # Held-out tasks too: the head learned what a turn did, not which episode it was in.
    assert metrics["val_mse"] < 0.5 * metrics["val_mse_initial"], metrics


def test_each_turn_gets_its_own_reward_and_the_good_turn_the_credit(estimator: ProgressEstimator) -> None:
    rng = random.Random(7)
    episodes = [episode(500 + k, good, rng) for k, good in enumerate([0, 1, 2, 0, 1, 2])]  # unseen tasks
    contributions = estimator.contributions(episodes)
    for traj, c in zip(episodes, contributions):
        rewards = spa_rewards(c, grounding(traj), 1.0, 0.5)
        good = next(t.index for t in traj.turns if t.reward > 0)
        # Not one value for every turn: the turn that said GOOD gets clearly more than the others.
        assert max(rewards) - min(rewards) > 0.2, (good, rewards)
        assert rewards.index(max(rewards)) == good, (good, rewards)
        assert sum(c) == pytest.approx(1.0, abs=0.4)  # calibrated: contributions add up to the outcome


def test_save_and_load_give_identical_rewards(estimator: ProgressEstimator, tmp_path: Path) -> None:
    episodes = synthetic(5, seed=3)
    before = estimator.contributions(episodes)
    estimator.save(tmp_path / "copy")
    again = ProgressEstimator.load(tmp_path / "copy")
    assert again.contributions(episodes) == before
    assert (again.alpha, again.beta, again.head_hidden) == (estimator.alpha, estimator.beta, estimator.head_hidden)


def test_recorded_token_ids_are_the_context_and_foreign_ids_are_refused(estimator: ProgressEstimator) -> None:
    traj = synthetic(1)[0]
    traj.turns[0].prompt_token_ids, traj.turns[0].completion_token_ids = [5, 6, 7], [8, 9]
    contexts = estimator.turn_contexts(traj)
    assert contexts[0] == ([5, 6, 7, 8, 9], 2)
    assert len(contexts[1][0]) > len(contexts[0][0])  # turn 1 from the chat template: the whole history so far
    traj.turns[0].completion_token_ids = [10**6]
    with pytest.raises(ProgressModelError, match="vocabulary"):
        estimator.turn_contexts(traj)


def test_loading_a_directory_without_an_estimator_says_so(tmp_path: Path) -> None:
    with pytest.raises(ProgressModelError, match="holds no SPA progress estimator.*train-progress"):
        ProgressEstimator.load(tmp_path)


# ---- the reward block -----------------------------------------------------------------------


async def test_spa_through_the_reward_block_scores_every_turn(
    trained: tuple[Path, dict[str, float]], estimator: ProgressEstimator
) -> None:
    settings = RewardSettings(name="spa", progress_model=str(trained[0]), beta=0.25)
    assert settings.advantage_for("grpo") == "grpo_turn"
    model = build_reward_model(settings)
    assert isinstance(model, ProgressRewards) and model.name == "spa"
    group = synthetic(4, seed=11)
    group[0] = episode(900, 1, random.Random(1), valid=[True, False, True])
    scores = await checked_score(model, group, None)  # refuses anything but one reward per turn
    assert [len(r) for r in scores.rewards] == [TURNS] * 4
    expected = [spa_rewards(c, grounding(t), 1.0, 0.25) for c, t in zip(estimator.contributions(group), group)]
    assert scores.rewards == expected
    assert set(scores.diagnostics) == {"contribution_mean", "contribution_spread", "calibration_gap"}
    assert scores.diagnostics["contribution_spread"] > 0.05


def test_spa_without_a_progress_model_is_refused_when_the_config_is_read() -> None:
    with pytest.raises(ValidationError, match="reward spa needs reward.progress_model=DIR"):
        RewardSettings(name="spa")
    with pytest.raises(ValueError):  # a ValidationError is a ValueError
        RewardSettings.model_validate({"name": "spa", "alpha": 2.0})
    # The other models keep their defaults and need none.
    assert RewardSettings(name="gra").progress_model is None


# ---- the CLI --------------------------------------------------------------------------------


def cli(*args: str) -> "object":
    from agentgym.cli import app

    return CliRunner().invoke(app, ["reward", "train-progress", *args])


def test_cli_trains_prints_the_mse_table_and_is_deterministic(
    data_file: Path, tiny_model_dir: Path, trained: tuple[Path, dict[str, float]], tmp_path: Path
) -> None:
    out = tmp_path / "cli-estimator"
    result = cli("--data", str(data_file), "--out", str(out), "--backbone", str(tiny_model_dir),
                 *[arg for k, v in TRAIN.items() for arg in (f"--{k.replace('_', '-')}", str(v))])
    assert result.exit_code == 0, result.output
    assert "MSE before" in result.stdout and "train" in result.stdout and "val" in result.stdout
    assert str(out) in result.stdout.replace("\n", "")
    # Same data, backbone and seed as the fixture's training: the very same head.
    assert (out / "head.safetensors").read_bytes() == (trained[0] / "head.safetensors").read_bytes()


def test_cli_bad_input_gets_one_clear_line(data_file: Path, tmp_path: Path) -> None:
    in_the_way = tmp_path / "a-file"
    in_the_way.write_text("")
    only_broken = write(tmp_path / "broken.jsonl", [broken(0), broken(1)])
    cases = [
        (["--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o1")], "not found"),
        (["--data", str(only_broken), "--out", str(tmp_path / "o2")], "no usable trajectories"),
        (["--data", str(data_file), "--out", str(in_the_way / "sub")], "cannot write the estimator"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
