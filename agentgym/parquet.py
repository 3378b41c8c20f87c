"""Export trajectories to Parquet with a fixed schema (loadable by `datasets.load_dataset("parquet", ...)`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from agentgym.store import iter_trajectories
from agentgym.types import Trajectory

_MESSAGE = pa.struct([
    ("role", pa.string()), ("content", pa.string()), ("tool_call_id", pa.string()), ("tool_calls_json", pa.string()),
])
_TURN = pa.struct([
    ("index", pa.int32()),
    ("prompt_messages", pa.list_(pa.int32())),
    ("completion", pa.string()),
    ("action", pa.string()),
    ("prompt_token_ids", pa.list_(pa.int32())),
    ("completion_token_ids", pa.list_(pa.int32())),
    ("completion_logprobs", pa.list_(pa.float32())),
    ("finish_reason", pa.string()),
    ("observation", pa.string()),
    ("reward", pa.float64()),
    ("terminated", pa.bool_()),
    ("truncated", pa.bool_()),
    ("signals_json", pa.string()),
    ("policy_seconds", pa.float64()),
    ("env_seconds", pa.float64()),
])
SCHEMA = pa.schema([
    ("trajectory_id", pa.string()),
    ("env_id", pa.string()),
    ("task_id", pa.string()),
    ("seed", pa.int64()),
    ("group_id", pa.string()),
    ("sample_index", pa.int32()),
    ("policy_kind", pa.string()),
    ("policy_model", pa.string()),
    ("policy_weights_step", pa.int64()),
    ("sampling_json", pa.string()),
    ("env_kwargs_json", pa.string()),
    ("instructions", pa.string()),
    ("initial_observation", pa.string()),
    ("messages", pa.list_(_MESSAGE)),
    ("turns", pa.list_(_TURN)),
    ("num_turns", pa.int32()),
    ("total_reward", pa.float64()),
    ("success", pa.bool_()),
    ("terminated", pa.bool_()),
    ("truncated", pa.bool_()),
    ("truncation_reason", pa.string()),
    ("error_type", pa.string()),
    ("error_message", pa.string()),
    ("reset_info_json", pa.string()),
    ("final_info_json", pa.string()),
    ("started_at", pa.float64()),
    ("duration_seconds", pa.float64()),
])


def _row(t: Trajectory) -> dict[str, Any]:
    # Free-form dicts (signals, env kwargs) become JSON strings: Parquet needs one fixed type per column.
    return {
        "trajectory_id": t.trajectory_id, "env_id": t.env_id, "task_id": t.task_id, "seed": t.seed,
        "group_id": t.group_id, "sample_index": t.sample_index,
        "policy_kind": t.policy.kind, "policy_model": t.policy.model, "policy_weights_step": t.policy.weights_step,
        "sampling_json": t.sampling.model_dump_json(), "env_kwargs_json": json.dumps(t.env_kwargs, default=str),
        "instructions": t.instructions, "initial_observation": t.initial_observation,
        "messages": [
            {
                "role": m.role, "content": m.content, "tool_call_id": m.tool_call_id,
                "tool_calls_json": json.dumps([c.model_dump() for c in m.tool_calls]) if m.tool_calls else None,
            }
            for m in t.messages
        ],
        "turns": [
            {
                "index": u.index, "prompt_messages": u.prompt_messages,
                "completion": u.completion, "action": u.action,
                "prompt_token_ids": u.prompt_token_ids, "completion_token_ids": u.completion_token_ids,
                "completion_logprobs": u.completion_logprobs, "finish_reason": u.finish_reason,
                "observation": u.observation, "reward": u.reward, "terminated": u.terminated,
                "truncated": u.truncated, "signals_json": json.dumps(u.signals, default=str),
                "policy_seconds": u.policy_seconds, "env_seconds": u.env_seconds,
            }
            for u in t.turns
        ],
        "num_turns": t.num_turns, "total_reward": t.total_reward, "success": t.success,
        "terminated": t.terminated, "truncated": t.truncated, "truncation_reason": t.truncation_reason,
        "reset_info_json": json.dumps(t.reset_info, default=str), "final_info_json": json.dumps(t.final_info, default=str),
        "error_type": t.error.type if t.error else None, "error_message": t.error.message if t.error else None,
        "started_at": t.started_at, "duration_seconds": t.duration_seconds,
    }


def export_parquet(trajectories: Iterable[Trajectory] | str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write trajectories (or the trajectories of a JSONL file) to one Parquet file."""
    if isinstance(trajectories, (str, os.PathLike)):
        trajectories = iter_trajectories(trajectories)
    table = pa.Table.from_pylist([_row(t) for t in trajectories], schema=SCHEMA)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return out
