"""RunLog (metrics.jsonl + TensorBoard), resume and crash semantics, and plot_run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from agentgym.errors import AgentGymError
from agentgym.plotting import plot_run
from agentgym.trainers.run_log import (
    EVAL_SUCCESS_RATE,
    METRICS_FILE,
    POLICY_ENTROPY,
    ROLLOUT_REWARD_MEAN,
    ROLLOUT_SUCCESS_RATE,
    TENSORBOARD_DIR,
    RunLog,
    read_metrics,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _lines(run_dir: Path) -> list[str]:
    return (run_dir / METRICS_FILE).read_text().splitlines()


def _tb_scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / TENSORBOARD_DIR))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_log_and_read_back(tmp_path: Path) -> None:
    with RunLog(tmp_path, tensorboard=False) as log:
        for step in range(3):
            log.log(step, {ROLLOUT_SUCCESS_RATE: step / 4, "train/loss": 1.0 - step, "n": step})
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == [0, 1, 2]
    assert [r[ROLLOUT_SUCCESS_RATE] for r in records] == [0.0, 0.25, 0.5]
    assert records[2]["n"] == 2 and isinstance(records[2]["n"], int)
    assert all(isinstance(r["time"], float) for r in records)
    # one JSON object per line, each line complete
    assert [json.loads(line)["step"] for line in _lines(tmp_path)] == [0, 1, 2]


def test_none_and_non_finite_are_null_in_json_and_skipped_in_tensorboard(tmp_path: Path) -> None:
    with RunLog(tmp_path) as log:
        log.log(0, {"a": 1.5, "b": None, "c": math.nan, "d": math.inf})
        log.log(1, {"a": 2.5, "b": 3.0})
    first = json.loads(_lines(tmp_path)[0])  # strict JSON: no NaN / Infinity literals
    assert first["b"] is None and first["c"] is None and first["d"] is None
    assert _tb_scalars(tmp_path, "a") == [(0, 1.5), (1, 2.5)]
    assert _tb_scalars(tmp_path, "b") == [(1, 3.0)]


def test_tensorboard_scalar_written_with_tag_as_key(tmp_path: Path) -> None:
    with RunLog(tmp_path) as log:
        log.log(0, {ROLLOUT_SUCCESS_RATE: 0.25})
        log.log(1, {ROLLOUT_SUCCESS_RATE: 0.5})
    assert list((tmp_path / TENSORBOARD_DIR).glob("events.out.tfevents.*"))
    assert _tb_scalars(tmp_path, ROLLOUT_SUCCESS_RATE) == [(0, 0.25), (1, 0.5)]


def test_resume_keeps_old_lines_and_last_record_wins(tmp_path: Path) -> None:
    with RunLog(tmp_path) as log:
        for step in range(5):
            log.log(step, {"x": float(step)})
    with RunLog(tmp_path, resume_step=2) as log:
        log.log(3, {"x": 30.0})
        log.log(4, {"x": 40.0})
    records = read_metrics(tmp_path)
    assert [(r["step"], r["x"]) for r in records] == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    # nothing recorded is deleted: the old lines for steps 3 and 4 are still there
    lines = [json.loads(line) for line in _lines(tmp_path)]
    assert [(r["step"], r["x"]) for r in lines] == [
        (0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (3, 30.0), (4, 40.0),
    ]
    # TensorBoard purges steps > 2 of the first run: the curve does not double back
    assert _tb_scalars(tmp_path, "x") == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]


def test_torn_last_line_is_tolerated(tmp_path: Path) -> None:
    with RunLog(tmp_path, tensorboard=False) as log:
        log.log(0, {"x": 0.0})
        log.log(1, {"x": 1.0})
    with open(tmp_path / METRICS_FILE, "a") as f:  # a crash in the middle of writing step 2
        f.write('{"step":2,"time":1.0,"x":')
    assert [r["step"] for r in read_metrics(tmp_path)] == [0, 1]
    with RunLog(tmp_path, resume_step=1, tensorboard=False) as log:
        log.log(2, {"x": 2.0})
    lines = _lines(tmp_path)
    assert lines[2] == '{"step":2,"time":1.0,"x":'  # kept, not deleted
    assert json.loads(lines[3])["x"] == 2.0  # the new record starts on its own line
    assert [(r["step"], r["x"]) for r in read_metrics(tmp_path)] == [(0, 0.0), (1, 1.0), (2, 2.0)]


def test_bad_input_and_closed_log(tmp_path: Path) -> None:
    log = RunLog(tmp_path, tensorboard=False)
    with pytest.raises(AgentGymError, match="reserved"):
        log.log(0, {"step": 1.0})
    with pytest.raises(AgentGymError, match="must be a number"):
        log.log(0, {"x": "high"})
    log.close()
    log.close()  # idempotent
    with pytest.raises(AgentGymError, match="closed"):
        log.log(0, {"x": 1.0})


def test_read_metrics_without_file_raises(tmp_path: Path) -> None:
    with pytest.raises(AgentGymError, match="no metrics.jsonl in .*is it a training run directory"):
        read_metrics(tmp_path)


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC), path


def test_plot_run_writes_present_panels_and_summary(tmp_path: Path) -> None:
    with RunLog(tmp_path, tensorboard=False) as log:
        for step in range(6):
            metrics: dict[str, float | None] = {
                ROLLOUT_SUCCESS_RATE: step / 10,
                ROLLOUT_REWARD_MEAN: step * 0.5,
                POLICY_ENTROPY: None if step == 2 else 1.0 / (step + 1),
            }
            if step % 2 == 0:
                metrics[EVAL_SUCCESS_RATE] = step / 8
            log.log(step, metrics)
    paths = plot_run(tmp_path)
    assert [p.name for p in paths] == ["success_rate.png", "reward.png", "entropy.png", "summary.png"]
    assert all(p.parent == tmp_path / "plots" for p in paths)
    for p in paths:
        _assert_png(p)
    # absent panels are skipped, not drawn empty
    assert not (tmp_path / "plots" / "kl.png").exists()
    assert not (tmp_path / "plots" / "clip_fraction.png").exists()

    out = tmp_path / "elsewhere" / "figs"
    paths = plot_run(tmp_path, out)
    assert {p.name for p in out.iterdir()} == {p.name for p in paths}


def test_plot_run_without_plottable_metrics_raises(tmp_path: Path) -> None:
    with RunLog(tmp_path, tensorboard=False) as log:
        log.log(0, {"train/loss": 1.0, POLICY_ENTROPY: None})
    with pytest.raises(AgentGymError, match="nothing to plot"):
        plot_run(tmp_path)
    assert not (tmp_path / "plots").exists()
    with pytest.raises(AgentGymError, match="no metrics.jsonl"):
        plot_run(tmp_path / "missing")


def test_the_progress_line_shows_a_dash_for_what_a_step_did_not_measure() -> None:
    from agentgym.trainers.loop import shown_metric

    # A step whose rollouts all scored alike makes no update, so it has no policy entropy (NaN).
    metrics = {ROLLOUT_SUCCESS_RATE: 1.0, POLICY_ENTROPY: math.nan}
    assert shown_metric(metrics, ROLLOUT_SUCCESS_RATE, 2) == "1.00"
    assert shown_metric(metrics, POLICY_ENTROPY, 3) == "-"
    assert shown_metric(metrics, ROLLOUT_REWARD_MEAN, 2) == "-"
    assert shown_metric({POLICY_ENTROPY: 0.22149}, POLICY_ENTROPY, 3) == "0.221"
