"""SWE-bench task instances: the record, its loaders, and helpers on repos and diffs."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from unidiff import PatchedFile, PatchSet
from unidiff.errors import UnidiffParseError

from agentgym.tasks import TaskFileError, load_tasks

_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_TEST_LISTS = ("FAIL_TO_PASS", "PASS_TO_PASS")


class InstanceError(TaskFileError):
    """A SWE-bench instance record that is missing a field or holds a bad value."""


class PatchParseError(InstanceError):
    """A diff that unidiff cannot read."""


class SWEInstance(BaseModel):
    """One SWE-bench / SWE-Gym / SWE-smith task instance; keys beyond the SWE-bench schema are kept as extras."""

    # Extras kept, not refused: SWE-Gym, SWE-smith and SWE-bench variants each add their own keys.
    model_config = ConfigDict(frozen=True, extra="allow")

    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    patch: str
    FAIL_TO_PASS: list[str]
    PASS_TO_PASS: list[str]
    # Optional because SWE-smith instances lack them (its tests already live in the repo).
    hints_text: str = ""
    test_patch: str = ""
    version: str | None = None
    environment_setup_commit: str | None = None
    created_at: str | datetime | None = None
    image_name: str | None = None

    @field_validator("repo")
    @classmethod
    def _owner_name(cls, value: str) -> str:
        if not _REPO.match(value):
            raise ValueError(f"must look like 'owner/name', got {value!r}")
        return value

    @field_validator(*_TEST_LISTS, mode="before")
    @classmethod
    def _decode_test_list(cls, value: Any) -> Any:
        # SWE-bench files store these lists JSON-encoded; SWE-Gym and Parquet exports hold real lists.
        if isinstance(value, str):
            if not value.strip():
                return []
            try:
                value = json.loads(value)
            except json.JSONDecodeError as e:
                raise ValueError(f"not a JSON-encoded list of test ids: {e.msg}") from None
        if not isinstance(value, list | tuple) or not all(isinstance(t, str) for t in value):
            raise ValueError(f"must be a list of test ids (strings), got {type(value).__name__}")
        return list(value)

    @field_validator("version", mode="before")
    @classmethod
    def _version_str(cls, value: Any) -> Any:
        # Some exports wrote versions as numbers (0.12); trailing zeros already lost there cannot be recovered.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        return value

    @classmethod
    def from_record(cls, record: dict[str, Any], index: int | None = None) -> SWEInstance:
        """An instance from one file record; errors name the instance (its id, else `#index`) and the field."""
        try:
            return cls.model_validate(record)
        except ValidationError as e:
            who = record.get("instance_id") if isinstance(record.get("instance_id"), str) else None
            label = who or (f"#{index}" if index is not None else "(no id)")
            raise InstanceError(f"instance {label}: {_describe(e)}") from None

    def to_record(self) -> dict[str, Any]:
        """The record as SWE-bench files store it: test lists JSON-encoded, `created_at` a string, extras kept."""
        record = self.model_dump(mode="python")
        for key in _TEST_LISTS:
            record[key] = json.dumps(record[key])
        if isinstance(self.created_at, datetime):
            record["created_at"] = self.created_at.isoformat()
        return record


def load_instances(path: str | Path, split: str | None = None) -> list[SWEInstance]:
    """Instances from a task file or `datasets` directory (see agentgym.tasks.load_task_records)."""
    tasks = load_tasks(path, id_field="instance_id", split=split)
    return [SWEInstance.from_record(task.data, index=i) for i, task in enumerate(tasks)]


def repo_dirname(repo: str) -> str:
    """The local directory name SWE-bench uses for a repo: "owner/name" -> "owner__name"."""
    if not _REPO.match(repo):
        raise InstanceError(f"repo must look like 'owner/name', got {repo!r}")
    return repo.replace("/", "__")


def test_files(patch: str) -> list[str]:
    """The paths a diff touches (both sides of a rename), in diff order, without a/ b/ prefixes."""
    paths: list[str] = []
    for patched in parse_patch(patch):
        paths += [p for p in patched_paths(patched) if p not in paths]
    return paths


# pytest would collect test_files as a test when it is imported into a test module.
test_files.__test__ = False  # type: ignore[attr-defined]


def parse_patch(patch: str) -> PatchSet:
    """A unified diff parsed by unidiff; a diff it cannot read is one PatchParseError."""
    try:
        return PatchSet(patch)
    except UnidiffParseError as e:
        raise PatchParseError(f"cannot parse the diff: {e}") from None


def patched_paths(patched: PatchedFile) -> list[str]:
    """The paths one file of a diff touches: one, or the old and new path of a rename."""
    paths = []
    for side in (patched.source_file, patched.target_file):
        if side is None or side == "/dev/null":
            continue
        path = side[2:] if side.startswith(("a/", "b/")) else side
        if path not in paths:
            paths.append(path)
    return paths


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "record"
        if item["type"] == "missing":
            parts.append(f"missing field {field!r}")
        else:
            message = item["msg"].removeprefix("Value error, ")
            parts.append(f"field {field!r}: {message}")
    return "; ".join(parts)
