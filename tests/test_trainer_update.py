"""One optimisation step: micro-batching is exact, EPO's terms reach the gradient, SFT lowers the loss."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from agentgym.trainers.batches import turn_samples
from agentgym.trainers.policy_model import TrainableModel, load_trainable
from agentgym.trainers.update import EPOConfig, UpdateConfig, policy_gradient_step, sft_step
from tests.test_trainer_batches import _traj


def _samples(trainable: TrainableModel) -> list:
    gen = torch.Generator().manual_seed(0)
    trajs, advantages = [], []
    for i, n in enumerate((6, 11, 8, 15)):
        prompt = torch.randint(5, 300, (n,), generator=gen).tolist()
        completion = torch.randint(5, 300, (3 + i,), generator=gen).tolist()
        trajs.append(_traj([(prompt, completion, [-3.0] * len(completion))], str(i)))
        advantages.append([(-1.0) ** i * (i + 1) / 2])
    return turn_samples(trajs, advantages)[0]


def _step(trainable: TrainableModel, samples: list, config: UpdateConfig, history: list[float] | None = None) -> dict:
    optim = torch.optim.SGD([p for p in trainable.model.parameters() if p.requires_grad], lr=0.1)
    return policy_gradient_step(trainable, optim, samples, config, step=0, total_steps=10,
                                entropy_history=history if history is not None else [])


def _params(trainable: TrainableModel) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in trainable.model.parameters()])


@pytest.mark.parametrize("aggregation,epo", [("token", False), ("sequence", False), ("token", True)])
def test_micro_batches_give_the_full_batch_update(tiny_model_dir: Path, aggregation: str, epo: bool) -> None:
    """Gradient accumulation is exact, EPO's non-linear smoothing penalty included."""
    base = load_trainable(str(tiny_model_dir))
    samples = _samples(base)
    one, many = copy.deepcopy(base), copy.deepcopy(base)
    cfg = dict(precision="fp32", aggregation=aggregation, max_grad_norm=1e9,
               epo=EPOConfig(enabled=epo, entropy_coef=0.5, smoothing_coef=5.0))
    history = [0.1] * 3  # far below the current entropy: the smoothing penalty is active
    m1 = _step(one, samples, UpdateConfig(micro_batch_tokens=100_000, **cfg), list(history))
    m2 = _step(many, samples, UpdateConfig(micro_batch_tokens=64, **cfg), list(history))
    if epo:
        assert m1["loss/entropy_smoothing"] > 0
    assert torch.allclose(_params(one), _params(many), atol=1e-6)
    assert not torch.allclose(_params(one), _params(base), atol=1e-6)  # the step did move the weights
    assert m1["loss/policy"] == pytest.approx(m2["loss/policy"], abs=1e-5)
    assert m1["policy/entropy"] == pytest.approx(m2["policy/entropy"], abs=1e-5)


def test_epo_terms_change_the_update_and_are_logged(tiny_model_dir: Path) -> None:
    base = load_trainable(str(tiny_model_dir))
    samples = _samples(base)
    plain, epo = copy.deepcopy(base), copy.deepcopy(base)
    _step(plain, samples, UpdateConfig(precision="fp32"))
    # A history far from the current entropy puts it outside the band: the smoothing term pulls.
    history = [0.1] * 5
    metrics = _step(epo, samples, UpdateConfig(precision="fp32", epo=EPOConfig(enabled=True, entropy_coef=0.5)), history)
    assert not torch.allclose(_params(plain), _params(epo), atol=1e-7)
    assert metrics["loss/entropy_smoothing"] > 0
    assert metrics["loss/entropy_bonus"] > 0
    assert metrics["epo/entropy_weight"] == pytest.approx(0.5)
    assert len(history) == 6 and history[-1] == pytest.approx(metrics["policy/entropy"])


def test_smoothing_alone_has_a_gradient(tiny_model_dir: Path) -> None:
    """With no PG signal and no bonus, the smoothing penalty by itself must move the weights."""
    base = load_trainable(str(tiny_model_dir))
    samples = _samples(base)
    for s in samples:
        s.advantage = 0.0
    moved = copy.deepcopy(base)
    cfg = UpdateConfig(precision="fp32", epo=EPOConfig(enabled=True, entropy_coef=0.0, smoothing_coef=1.0))
    metrics = _step(moved, samples, cfg, [0.1] * 5)
    assert metrics["loss/entropy_smoothing"] > 0
    assert not torch.allclose(_params(moved), _params(base), atol=1e-7)


def test_sft_step_lowers_the_loss(tiny_model_dir: Path) -> None:
    trainable = load_trainable(str(tiny_model_dir))
    samples = _samples(trainable)
    optim = torch.optim.AdamW(trainable.model.parameters(), lr=1e-2)
    cfg = UpdateConfig(precision="fp32")
    losses = [sft_step(trainable, optim, samples, cfg)["sft/loss"] for _ in range(5)]
    assert losses[-1] < losses[0] - 0.1


def test_lora_trains_only_adapters(tiny_model_dir: Path) -> None:
    from agentgym.trainers.policy_model import LoraSettings

    trainable = load_trainable(str(tiny_model_dir), lora=LoraSettings(r=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    frozen = {n: p.detach().clone() for n, p in trainable.model.named_parameters() if not p.requires_grad}
    samples = _samples(trainable)
    optim = torch.optim.AdamW([p for p in trainable.model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(2):  # LoRA's B starts at zero: the first step moves B, the second makes A matter too
        policy_gradient_step(trainable, optim, samples, UpdateConfig(precision="fp32"), step=0, total_steps=2,
                             entropy_history=[])
    for name, p in trainable.model.named_parameters():
        if name in frozen:
            assert torch.equal(p, frozen[name]), name
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in trainable.model.named_parameters())


def test_kl_to_the_reference_starts_at_zero_and_grows_as_the_policy_moves(tiny_model_dir: Path) -> None:
    trainable = load_trainable(str(tiny_model_dir))
    ref = copy.deepcopy(trainable.model).requires_grad_(False)
    samples = _samples(trainable)
    optim = torch.optim.AdamW(trainable.model.parameters(), lr=1e-2)
    cfg = UpdateConfig(precision="fp32", kl_coef=0.1)
    first = policy_gradient_step(trainable, optim, samples, cfg, step=0, total_steps=3, entropy_history=[], ref_model=ref)
    second = policy_gradient_step(trainable, optim, samples, cfg, step=1, total_steps=3, entropy_history=[], ref_model=ref)
    assert first["policy/kl"] == pytest.approx(0.0, abs=1e-6)
    assert second["policy/kl"] > 1e-4
    assert second["loss/kl"] == pytest.approx(0.1 * second["policy/kl"])


def test_sft_data_comes_in_one_order_whatever_order_the_episodes_finished_in(tmp_path: Path) -> None:
    from agentgym.store import TrajectoryWriter
    from agentgym.trainers.sft import load_sft_trajectories

    episodes = []
    for task, seed in (("b", 2), ("a", 9), ("a", 1), ("c", 0)):
        t = _traj([([1, 2], [3], [-0.1])], tid=f"{task}{seed}")
        episodes.append(t.model_copy(update={"task_id": task, "seed": seed, "success": True}))
    orders = {"finished-one-way": episodes, "finished-another": list(reversed(episodes))}
    loaded = []
    for name, order in orders.items():
        with TrajectoryWriter(tmp_path / f"{name}.jsonl") as writer:
            for t in order:
                writer.write(t)
        loaded.append([t.trajectory_id for t in load_sft_trajectories([str(tmp_path / f"{name}.jsonl")], only_success=True)])
    assert loaded[0] == loaded[1] == ["a1", "a9", "b2", "c0"]


class _Reached(Exception):
    """Raised by a spy once it has seen what the test checks."""


def test_update_steps_send_every_micro_batch_to_the_model_device(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the model on the meta device (no GPU needed), both steps hand scoring micro-batches on that device."""
    from agentgym.trainers import update

    trainable = load_trainable(str(tiny_model_dir), device="meta")
    samples = _samples(load_trainable(str(tiny_model_dir)))
    seen: list[set[str]] = []

    def spy(model, mb, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append({t.device.type for t in (mb.input_ids, mb.attention_mask, mb.loss_mask, mb.old_logprobs,
                                             mb.advantages, mb.row_weights)})
        raise _Reached

    monkeypatch.setattr(update, "score_policy_tokens", spy)
    optim = torch.optim.SGD(trainable.model.parameters(), lr=0.1)
    with pytest.raises(_Reached):
        sft_step(trainable, optim, samples, UpdateConfig(precision="fp32"))
    with pytest.raises(_Reached):
        policy_gradient_step(trainable, optim, samples, UpdateConfig(precision="fp32"), step=0, total_steps=1,
                             entropy_history=[])
    assert seen == [{"meta"}, {"meta"}]


def _text_only_walkthroughs(path: Path, n: int = 8) -> Path:
    """`n` successful two-turn trajectories without token ids, as a walkthrough policy records them."""
    from agentgym.store import TrajectoryWriter
    from tests.test_trainer_batches import _traj

    with TrajectoryWriter(path) as writer:
        for i in range(n):
            traj = _traj([([1], [2], None), ([1], [3], None)], f"w{i}")
            for turn in traj.turns:
                turn.prompt_token_ids = turn.completion_token_ids = turn.completion_logprobs = None
            traj.success = True
            writer.write(traj)
    return path


def test_sft_off_a_terminal_prints_heartbeat_lines_and_records_its_placement(tiny_model_dir: Path, tmp_path: Path) -> None:
    import io
    import re

    import yaml
    from rich.console import Console

    from agentgym import hardware
    from agentgym.progress import Heartbeat
    from agentgym.trainers.config import SFTConfig
    from agentgym.trainers.sft import run_sft

    class Clock:  # 20 s pass between any two readings: a line every second step
        now = 0.0

        def __call__(self) -> float:
            self.now += 20.0
            return self.now

    lines: list[str] = []
    log = io.StringIO()  # not a terminal, as a CI log or a redirected file is
    data = _text_only_walkthroughs(tmp_path / "walk.jsonl")
    cfg = SFTConfig(data=[str(data)], model=str(tiny_model_dir), epochs=3, batch_size=4, device="cpu")  # precision auto
    result = run_sft(cfg, tmp_path / "sft", console=Console(file=log, width=200),
                     heartbeat=Heartbeat(30, emit=lines.append, clock=Clock()))
    assert result.steps == 12  # 16 turns, 4 a step, 3 epochs
    assert len(lines) == 7  # steps 1, 3, 5, 7, 9, 11 and the last one
    pattern = r"sft step (\d+)/12 · loss \d+\.\d{3} · \d+ tokens/s · \S+ elapsed, \S+ left"
    assert all(re.fullmatch(pattern, line) for line in lines), lines
    assert [int(re.match(pattern, line).group(1)) for line in lines] == [1, 3, 5, 7, 9, 11, 12]
    expected = hardware.resolve_placement("cpu", "auto")
    assert log.getvalue().count(expected.describe()) == 1  # said once, at the start
    recorded = yaml.safe_load((tmp_path / "sft" / "config.yaml").read_text())
    assert recorded["device"] == "cpu" and recorded["update"]["precision"] == expected.precision  # resolved, not "auto"


def test_sft_cli_takes_device_and_precision_without_losing_sfts_learning_rate(tiny_model_dir: Path, tmp_path: Path) -> None:
    import yaml
    from typer.testing import CliRunner

    from agentgym.cli import app

    data = _text_only_walkthroughs(tmp_path / "walk.jsonl", n=2)
    result = CliRunner().invoke(app, ["sft", "--data", str(data), "--model", str(tiny_model_dir), "--epochs", "1",
                                      "--device", "cpu", "--precision", "fp32", "--quiet", "--out", str(tmp_path / "sft")])
    assert result.exit_code == 0, result.output
    assert "device cpu · precision fp32 (as asked)" in result.output
    recorded = yaml.safe_load((tmp_path / "sft" / "config.yaml").read_text())
    assert (recorded["device"], recorded["update"]["precision"]) == ("cpu", "fp32")
    assert recorded["update"]["lr"] == pytest.approx(1e-4)  # SFT's default, not UpdateConfig's RL one
