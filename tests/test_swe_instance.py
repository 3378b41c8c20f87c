"""Task files and SWE-bench instances: every format loads the same records, and bad input says what is wrong."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from agentgym.envs.swe.instance import InstanceError, SWEInstance, load_instances, repo_dirname, test_files
from agentgym.tasks import Task, TaskFileError, load_task_records, load_tasks

TEST_PATCH = """diff --git a/tests/test_units.py b/tests/test_units.py
--- a/tests/test_units.py
+++ b/tests/test_units.py
@@ -1,2 +1,3 @@
 import pytest
+from pkg import units
 def test_a(): pass
diff --git a/old_helper.py b/new_helper.py
similarity index 90%
rename from old_helper.py
rename to new_helper.py
--- a/old_helper.py
+++ b/new_helper.py
@@ -1 +1 @@
-x = 1
+x = 2
diff --git a/data/fixture.json b/data/fixture.json
new file mode 100644
--- /dev/null
+++ b/data/fixture.json
@@ -0,0 +1 @@
+{}
"""


def swe_record(instance_id: str = "astropy__astropy-12907", **changes: object) -> dict:
    """A record shaped like a SWE-Gym row: JSON-encoded test lists, a numeric version, SWE-Gym's extra keys."""
    record = {
        "instance_id": instance_id,
        "repo": "astropy/astropy",
        "base_commit": "d16bfe05a744909de4b27f5875fe0d4ed41ce607",
        "problem_statement": "Modeling's `separability_matrix` does not compute separability correctly",
        "hints_text": "",
        "patch": "diff --git a/astropy/modeling/separable.py b/astropy/modeling/separable.py\n",
        "test_patch": TEST_PATCH,
        "FAIL_TO_PASS": json.dumps(["astropy/modeling/tests/test_separable.py::test_separable[compound_model6-result6]"]),
        "PASS_TO_PASS": json.dumps(["astropy/modeling/tests/test_separable.py::test_coord_matrix", "test x[a b]"]),
        "version": 4.3,
        "environment_setup_commit": "298ccb478e6bf092953bca67a3d29dc6c35f6752",
        "created_at": "2022-03-03T15:14:54Z",
        # Keys SWE-bench's schema lacks: SWE-Gym and SWE-smith add these.
        "FAIL_TO_FAIL": "[]",
        "image_name": "swebench/sweb.eval.x86_64.astropy_1776_astropy-12907",
        "difficulty": "15 min - 1 hour",
    }
    record.update(changes)
    return record


def write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def test_every_format_loads_the_same_records(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"instance_id": f"t{i}", "n": i, "tags": ["a", str(i)]} for i in range(3)]
    write_jsonl(tmp_path / "t.jsonl", records)
    (tmp_path / "t.json").write_text(json.dumps(records))
    pq.write_table(pa.Table.from_pylist(records), tmp_path / "t.parquet")
    datasets.Dataset.from_list(records).save_to_disk(str(tmp_path / "ds"))

    for name in ("t.jsonl", "t.json", "t.parquet", "ds"):
        assert load_task_records(tmp_path / name) == records, name
    tasks = load_tasks(tmp_path / "t.parquet")
    assert [t.task_id for t in tasks] == ["t0", "t1", "t2"]
    assert tasks[2] == Task(task_id="t2", data=records[2])


def test_dataset_dict_split_choice(tmp_path):
    import datasets

    rows = lambda tag: [{"instance_id": f"{tag}{i}"} for i in range(2)]  # noqa: E731
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows("tr")), "test": datasets.Dataset.from_list(rows("te"))}
    ).save_to_disk(str(tmp_path / "dd"))
    datasets.DatasetDict({"dev": datasets.Dataset.from_list(rows("dv"))}).save_to_disk(str(tmp_path / "one"))

    assert [t.task_id for t in load_tasks(tmp_path / "dd")] == ["te0", "te1"]  # "test" by default
    assert [t.task_id for t in load_tasks(tmp_path / "dd", split="train")] == ["tr0", "tr1"]
    assert [t.task_id for t in load_tasks(tmp_path / "one")] == ["dv0", "dv1"]  # the only split
    with pytest.raises(TaskFileError, match=r"no split 'dev'.*'train', 'test'|no split 'dev'.*'test', 'train'"):
        load_tasks(tmp_path / "dd", split="dev")


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("t.jsonl", '{"instance_id": "a"}\n\n{"instance_id": "b",\n', r"t\.jsonl:3: bad JSON"),
        ("t.jsonl", '{"instance_id": "a"}\n[1, 2]\n', r"t\.jsonl:2: a record must be a JSON object, got list"),
        ("t.json", '{"instance_id": "a"}', r"must hold an array of objects, got dict"),
        ("t.json", '[{"instance_id": "a"}, 3]', r"record #1 must be an object, got int"),
        ("t.csv", "instance_id\na\n", r"unknown task file format '\.csv'"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(TaskFileError, match=message):
        load_task_records(tmp_path / name)


def test_missing_file_and_plain_directory(tmp_path):
    with pytest.raises(TaskFileError, match="task file not found"):
        load_task_records(tmp_path / "nope.jsonl")
    (tmp_path / "plain").mkdir()
    with pytest.raises(TaskFileError, match="save_to_disk"):
        load_task_records(tmp_path / "plain")
    write_jsonl(tmp_path / "t.jsonl", [{"instance_id": "a"}])
    with pytest.raises(TaskFileError, match="split='test' only applies"):
        load_task_records(tmp_path / "t.jsonl", split="test")


def test_duplicate_and_missing_ids_are_refused(tmp_path):
    write_jsonl(tmp_path / "dup.jsonl", [{"instance_id": "a"}, {"instance_id": "b"}, {"instance_id": "a"}])
    with pytest.raises(TaskFileError, match=r"duplicate task id 'a' \(records #0 and #2\)"):
        load_tasks(tmp_path / "dup.jsonl")
    write_jsonl(tmp_path / "noid.jsonl", [{"instance_id": "a"}, {"id": "b"}])
    with pytest.raises(TaskFileError, match=r"record #1: missing field 'instance_id'"):
        load_tasks(tmp_path / "noid.jsonl")
    with pytest.raises(TaskFileError, match=r"record #0: missing field 'id'"):
        load_tasks(tmp_path / "noid.jsonl", id_field="id")
    write_jsonl(tmp_path / "ids.jsonl", [{"id": 7}, {"id": "x"}])
    assert [t.task_id for t in load_tasks(tmp_path / "ids.jsonl", id_field="id")] == ["7", "x"]


def test_swe_gym_record_loads_with_lists_and_string_version(tmp_path):
    write_jsonl(tmp_path / "swe.jsonl", [swe_record(), swe_record("astropy__astropy-13033", FAIL_TO_PASS=["t::a"])])
    first, second = load_instances(tmp_path / "swe.jsonl")

    assert first.FAIL_TO_PASS == ["astropy/modeling/tests/test_separable.py::test_separable[compound_model6-result6]"]
    assert first.PASS_TO_PASS[1] == "test x[a b]"
    assert second.FAIL_TO_PASS == ["t::a"]  # a real list is taken as it is
    assert first.version == "4.3"
    assert first.image_name.startswith("swebench/")
    assert first.model_extra == {"FAIL_TO_FAIL": "[]", "difficulty": "15 min - 1 hour"}


def test_to_record_round_trips_as_swe_bench_stores_it(tmp_path):
    instance = SWEInstance.from_record(swe_record(created_at=datetime(2022, 3, 3, 15, 14, tzinfo=timezone.utc)))
    record = instance.to_record()
    assert json.loads(record["FAIL_TO_PASS"]) == instance.FAIL_TO_PASS
    assert isinstance(record["PASS_TO_PASS"], str)
    assert record["created_at"] == "2022-03-03T15:14:00+00:00"
    assert record["difficulty"] == "15 min - 1 hour"
    write_jsonl(tmp_path / "back.jsonl", [record])
    again = load_instances(tmp_path / "back.jsonl")[0]
    assert again.model_dump(exclude={"created_at"}) == instance.model_dump(exclude={"created_at"})


def test_instance_errors_name_the_instance_and_field():
    record = swe_record()
    del record["base_commit"]
    with pytest.raises(InstanceError, match=r"^instance astropy__astropy-12907: missing field 'base_commit'$"):
        SWEInstance.from_record(record)
    record = swe_record()
    del record["instance_id"]
    with pytest.raises(InstanceError, match=r"^instance #4: missing field 'instance_id'$"):
        SWEInstance.from_record(record, index=4)
    with pytest.raises(InstanceError, match=r"field 'repo': must look like 'owner/name', got 'astropy'"):
        SWEInstance.from_record(swe_record(repo="astropy"))
    with pytest.raises(InstanceError, match=r"field 'FAIL_TO_PASS': not a JSON-encoded list"):
        SWEInstance.from_record(swe_record(FAIL_TO_PASS="[oops"))
    with pytest.raises(InstanceError, match=r"field 'PASS_TO_PASS': must be a list of test ids"):
        SWEInstance.from_record(swe_record(PASS_TO_PASS='{"a": 1}'))


def test_missing_field_in_a_file_names_the_instance(tmp_path):
    bad = swe_record("django__django-1")
    del bad["patch"]
    write_jsonl(tmp_path / "swe.jsonl", [swe_record(), bad])
    with pytest.raises(InstanceError, match=r"instance django__django-1: missing field 'patch'"):
        load_instances(tmp_path / "swe.jsonl")


def test_repo_dirname_and_test_files():
    assert repo_dirname("astropy/astropy") == "astropy__astropy"
    assert repo_dirname("psf/requests") == "psf__requests"
    with pytest.raises(InstanceError, match="owner/name"):
        repo_dirname("requests")
    assert test_files(TEST_PATCH) == ["tests/test_units.py", "old_helper.py", "new_helper.py", "data/fixture.json"]
    assert test_files("") == []
