"""The trajectory store: append-only JSONL, torn-tail tolerance, Parquet that `datasets` loads."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from agentgym.errors import StoreError
from agentgym.parquet import export_parquet
from agentgym.store import TrajectoryWriter, read_trajectories
from agentgym.types import ErrorRecord, Message, PolicyInfo, SamplingParams, Trajectory, Turn


def make_traj(i: int, *, with_tokens: bool = True) -> Trajectory:
    turns = [
        Turn(index=k, prompt_messages=[0, 2 * k + 1],
             completion=f"act {k}", action=f"act {k}", observation=f"obs {k + 1}", reward=0.5 * k,
             prompt_token_ids=[1, 2, 3] if with_tokens else None,
             completion_token_ids=[7, 8] if with_tokens else None,
             completion_logprobs=[-0.25, -1.5] if with_tokens else None,
             signals={"valid_action": k % 2 == 0, "progress": k / 3}, prompt_tokens=3, completion_tokens=2)
        for k in range(3)
    ]
    messages = [Message(role="system", content="rules"), Message(role="user", content="obs 0")]
    for k in range(3):
        messages += [Message(role="assistant", content=f"act {k}"), Message(role="user", content=f"obs {k + 1}")]
    return Trajectory(
        messages=messages, trajectory_id=f"t{i}", env_id="toy", task_id=f"task-{i}", seed=i, group_id=f"task-{i}:{i}",
        policy=PolicyInfo(kind="scripted", weights_step=i if i else None), sampling=SamplingParams(), turns=turns, total_reward=1.5,
        success=i % 2 == 0, terminated=True, started_at=time.time(),
        error=ErrorRecord(type="RuntimeError", message="x", traceback="tb", where="env") if i == 1 else None,
    )


def test_round_trip_and_append_never_truncates(tmp_path: Path) -> None:
    path = tmp_path / "trajectories.jsonl"
    with TrajectoryWriter(path) as w:
        w.write(make_traj(0))
    with TrajectoryWriter(path) as w:  # a second writer continues the file
        w.write(make_traj(1))
        w.write(make_traj(2, with_tokens=False))
    back = read_trajectories(path)
    assert [t.trajectory_id for t in back] == ["t0", "t1", "t2"]
    assert back[0] == make_traj(0).model_copy(update={"started_at": back[0].started_at})
    assert back[1].error.where == "env" and back[2].turns[0].completion_token_ids is None
    assert [m.content for m in back[0].prompt(2)] == ["rules", "obs 2"]


def test_each_trajectory_is_on_disk_before_write_returns(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    w = TrajectoryWriter(path)
    w.write(make_traj(0))
    assert len(read_trajectories(path)) == 1  # read while the writer is still open
    w.close()


def test_torn_last_line_is_skipped_but_a_bad_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TrajectoryWriter(path) as w:
        w.write(make_traj(0))
        w.write(make_traj(1))
    whole = path.read_text()
    path.write_text(whole + whole.splitlines()[0][:40])  # what a kill mid-write leaves
    assert [t.trajectory_id for t in read_trajectories(path)] == ["t0", "t1"]
    with pytest.raises(StoreError):
        read_trajectories(path, strict=True)
    path.write_text("{not json}\n" + whole)
    with pytest.raises(StoreError, match=":1:"):
        read_trajectories(path)
    with pytest.raises(StoreError, match="no trajectory file"):
        read_trajectories(tmp_path / "missing.jsonl")


def test_unknown_fields_are_refused() -> None:
    data = make_traj(0).model_dump()
    data["surprise"] = 1
    with pytest.raises(ValueError):
        Trajectory.model_validate(data)


def test_parquet_export_loads_in_pyarrow_and_datasets(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with TrajectoryWriter(path) as w:
        for i in range(3):
            w.write(make_traj(i, with_tokens=i != 2))
    out = export_parquet(path, tmp_path / "t.parquet")
    table = pq.read_table(out)
    assert table.num_rows == 3 and table.column("num_turns").to_pylist() == [3, 3, 3]

    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(out), split="train")
    assert ds[0]["turns"][1]["completion_token_ids"] == [7, 8]
    assert ds[0]["turns"][1]["completion_logprobs"] == [-0.25, -1.5]
    assert ds[2]["turns"][0]["completion_token_ids"] is None
    assert ds[1]["error_type"] == "RuntimeError" and ds[0]["success"] is True
    assert ds[0]["turns"][2]["prompt_messages"] == [0, 5]
    assert ds[0]["messages"][5] == {"role": "user", "content": "obs 2", "tool_call_id": None, "tool_calls_json": None}
    assert [row["policy_weights_step"] for row in ds] == [None, 1, 2]
