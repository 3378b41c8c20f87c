"""SWE environment specs: parser names checked against swebench, version lookup with fallback, YAML round trip."""

from __future__ import annotations

import pytest
from swebench.harness.log_parsers import PARSER_REGISTRY

from agentgym.envs.swe.instance import SWEInstance
from agentgym.envs.swe.specs import RepoSpec, SpecError, SpecSet, load_specs

SPECS_YAML = """
specs:
  - repo: psf/requests
    version: "2.0"
    pip: [pytest==7.4.4]
    install: [pip install -e .]
    test_cmd: pytest -rA -p no:cacheprovider
    log_parser: pytest
  - repo: psf/requests
    apt: [libssl-dev]
    log_parser: parse_log_requests
    test_timeout_s: 120
  - repo: django/django
    version: "4.0"
    test_cmd: ./tests/runtests.py --verbosity 2
    test_targets: none
    log_parser: django
"""


def instance(repo: str, version: str | None) -> SWEInstance:
    """The smallest instance a spec lookup needs."""
    return SWEInstance(
        instance_id=f"{repo.replace('/', '__')}-1", repo=repo, base_commit="abc", problem_statement="p",
        patch="", FAIL_TO_PASS=[], PASS_TO_PASS=[], version=version,
    )


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "specs.yaml"
    path.write_text(SPECS_YAML)
    return path


def test_short_and_full_parser_names_are_swebench_names(spec_file):
    specs = load_specs(spec_file)
    assert [s.log_parser for s in specs.specs] == ["parse_log_pytest", "parse_log_requests", "parse_log_django"]
    assert all(s.log_parser in PARSER_REGISTRY for s in specs.specs)


def test_unknown_parser_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("- repo: psf/requests\n  log_parser: pytets\n")
    with pytest.raises(SpecError) as caught:
        load_specs(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "spec #0 (psf/requests)" in message
    assert "unknown log parser 'pytets'" in message
    assert "did you mean parse_log_pytest" in message
    with pytest.raises(ValueError, match="valid names include parse_log_django"):
        RepoSpec(repo="a/b", log_parser="nosuchthing")


def test_exact_version_first_then_any_version(spec_file):
    specs = load_specs(spec_file)
    exact = specs.for_instance(instance("psf/requests", "2.0"))
    assert exact.test_cmd == "pytest -rA -p no:cacheprovider"
    fallback = specs.for_instance(instance("psf/requests", "2.31"))
    assert fallback.version is None and fallback.apt == ["libssl-dev"] and fallback.test_timeout_s == 120
    assert specs.for_instance(instance("psf/requests", None)) is fallback
    with pytest.raises(SpecError, match=r"no spec for repo 'django/django' version '3\.2' \(it has versions 4\.0\)"):
        specs.for_instance(instance("django/django", "3.2"))
    with pytest.raises(SpecError, match=r"repo 'pallets/flask'.*no spec names this repo"):
        specs.for_instance(instance("pallets/flask", "2.0"))


def test_dump_then_load_gives_the_same_specs(spec_file, tmp_path):
    specs = load_specs(spec_file)
    out = tmp_path / "out.yaml"
    specs.dump(out)
    assert load_specs(out) == specs
    # A version that looks like a number must survive as text, trailing zero and all.
    tricky = SpecSet(specs=[RepoSpec(repo="a/b", version="3.10")])
    tricky.dump(out)
    assert load_specs(out).specs[0].version == "3.10"


def test_swe_bench_nested_layout_loads(tmp_path):
    # {repo: {version: spec}}, as SWE-bench keeps its specs and the task builder writes them.
    path = tmp_path / "nested.yaml"
    path.write_text(
        "toy/calc:\n"
        "  '1.0': {pip: [pytest==9.2.0], test_cmd: python3 -m pytest -rA, log_parser: parse_log_pytest}\n"
        "  null: {test_cmd: pytest -x}\n"
    )
    specs = load_specs(path)
    assert specs.lookup("toy/calc", "1.0").pip == ["pytest==9.2.0"]
    assert specs.lookup("toy/calc", "2.0").test_cmd == "pytest -x"
    path.write_text("toy/calc:\n  1.10: {test_cmd: pytest}\n")
    with pytest.raises(SpecError, match=r"spec #0 \(toy/calc\): version: 1\.1 is a number"):
        load_specs(path)


def test_bad_spec_files(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("- repo: a/b\n  version: 3.10\n")
    with pytest.raises(SpecError, match=r"version: 3\.1 is a number; quote it"):
        load_specs(path)
    path.write_text("- repo: a/b\n- repo: a/b\n")
    with pytest.raises(SpecError, match=r"two specs for repo 'a/b' version None"):
        load_specs(path)
    path.write_text("- repo: a/b\n  tset_cmd: pytest\n")
    with pytest.raises(SpecError, match=r"spec #0 \(a/b\): tset_cmd: Extra inputs"):
        load_specs(path)
    path.write_text("specs: {repo: a/b}\n")
    with pytest.raises(SpecError, match="expected a list of specs"):
        load_specs(path)
    path.write_text("a/b: [pytest]\n")
    with pytest.raises(SpecError, match="repo 'a/b' must map versions to specs"):
        load_specs(path)
    path.write_text("- repo: [unclosed\n")
    with pytest.raises(SpecError, match="bad YAML"):
        load_specs(path)
    with pytest.raises(SpecError, match="spec file not found"):
        load_specs(tmp_path / "missing.yaml")
