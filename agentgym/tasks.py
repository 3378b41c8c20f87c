"""Task records and the task files they come from (JSONL, JSON, Parquet, `datasets` directories), for any env."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from agentgym.errors import AgentGymError


class TaskFileError(AgentGymError, ValueError):
    """A task file that cannot be read: missing, of an unknown format, or holding records that are not tasks."""


class Task(BaseModel):
    """One task an env can play: its id and the record it was read from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task_id: str
    data: dict[str, Any]


_FORMATS = ".jsonl, .json, .parquet, or a directory written by datasets' save_to_disk"


def load_task_records(path: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """The records of a task file or `datasets` directory, in file order; `split` picks one of a DatasetDict."""
    path = Path(path)
    if not path.exists():
        raise TaskFileError(f"task file not found: {path}")
    if path.is_dir():
        return _read_datasets_dir(path, split)
    if split is not None:
        # A split that silently does nothing would hide a wrong path in a config.
        raise TaskFileError(f"{path}: split={split!r} only applies to a DatasetDict directory, not a {path.suffix} file")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".json":
        return _read_json(path)
    if suffix == ".parquet":
        return _read_parquet(path)
    raise TaskFileError(f"{path}: unknown task file format {path.suffix or '(no suffix)'!r}; use {_FORMATS}")


def load_tasks(path: str | Path, id_field: str = "instance_id", split: str | None = None) -> list[Task]:
    """Tasks keyed by each record's `id_field`; a record without it or a repeated id is refused."""
    return tasks_from_records(load_task_records(path, split=split), id_field=id_field, source=str(path))


def tasks_from_records(records: list[dict[str, Any]], id_field: str = "instance_id", source: str = "tasks") -> list[Task]:
    """Tasks keyed by each record's `id_field`; `source` names where the records came from in errors."""
    tasks: list[Task] = []
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        if id_field not in record:
            raise TaskFileError(f"{source}: record #{index}: missing field {id_field!r}")
        raw = record[id_field]
        # Integer ids are common in hand-written task files; anything else is a mistake worth naming.
        if isinstance(raw, bool) or not isinstance(raw, str | int) or raw == "":
            raise TaskFileError(f"{source}: record #{index}: {id_field!r} must be a non-empty string, got {raw!r}")
        task_id = str(raw)
        if task_id in seen:
            raise TaskFileError(f"{source}: duplicate task id {task_id!r} (records #{seen[task_id]} and #{index})")
        seen[task_id] = index
        tasks.append(Task(task_id=task_id, data=record))
    return tasks


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    records = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise TaskFileError(f"{path}:{line_no}: bad JSON: {e.msg} (column {e.colno})") from None
            if not isinstance(record, dict):
                raise TaskFileError(f"{path}:{line_no}: a record must be a JSON object, got {type(record).__name__}")
            records.append(record)
    return records


def _read_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise TaskFileError(f"{path}: bad JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, list):
        raise TaskFileError(f"{path}: a .json task file must hold an array of objects, got {type(data).__name__}")
    return _objects_only(data, path)


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise TaskFileError(f"{path}: not a readable Parquet file: {e}") from None
    return table.to_pylist()


def _read_datasets_dir(path: Path, split: str | None) -> list[dict[str, Any]]:
    is_dict = (path / "dataset_dict.json").is_file()
    if not is_dict and not (path / "state.json").is_file():
        raise TaskFileError(
            f"{path}: a directory must be written by datasets' save_to_disk (no dataset_dict.json or state.json in it)"
        )
    if split is not None and not is_dict:
        raise TaskFileError(f"{path}: split={split!r} given, but this directory holds one Dataset, not a DatasetDict")
    import datasets  # imported here: it takes a second or two and only directories need it

    try:
        loaded = datasets.load_from_disk(str(path))
    except (OSError, ValueError) as e:
        raise TaskFileError(f"{path}: cannot load the datasets directory: {e}") from None
    if isinstance(loaded, datasets.DatasetDict):
        loaded = loaded[_pick_split(path, list(loaded.keys()), split)]
    return _objects_only(loaded.to_list(), path)


def _pick_split(path: Path, splits: list[str], split: str | None) -> str:
    if split is None:
        # SWE-bench and SWE-Gym publish their tasks as "test" and "train"; "test" is the evaluation split.
        if "test" in splits:
            return "test"
        if splits:
            return splits[0]
        raise TaskFileError(f"{path}: the DatasetDict has no splits")
    if split not in splits:
        raise TaskFileError(f"{path}: no split {split!r}; the DatasetDict has {', '.join(map(repr, splits))}")
    return split


def _objects_only(records: list[Any], path: Path) -> list[dict[str, Any]]:
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise TaskFileError(f"{path}: record #{index} must be an object, got {type(record).__name__}")
    return records
