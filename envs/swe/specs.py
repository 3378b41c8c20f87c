"""Per-(repo, version) environment specs for SWE tasks, kept in YAML as SWE-bench keeps its own."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from swebench.harness.log_parsers import PARSER_REGISTRY

from agentgym.envs.swe.instance import SWEInstance
from agentgym.errors import EnvConfigError

_PARSER_PREFIX = "parse_log_"


class SpecError(EnvConfigError):
    """A spec file that cannot be read, a bad spec, or no spec for an instance."""


class RepoSpec(BaseModel):
    """How to build and test one repo at one version (or at any version when `version` is None)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: str = Field(description="GitHub 'owner/name'.")
    version: str | None = Field(None, description="The instances' `version` this spec is for; None: any version.")
    python: str = Field("3.11", description="Informational: images use Debian bookworm's python3.")
    install: list[str] = Field(default_factory=list, description="Shell commands run in /testbed at image build.")
    pip: list[str] = Field(default_factory=list, description="Requirement specs the tests need; the host downloads the wheels.")
    apt: list[str] = Field(default_factory=list, description="Debian packages the build or the tests need.")
    test_cmd: str = Field("python -m pytest -rA", description="The test command; test targets are appended to it.")
    test_targets: Literal["test_ids", "test_files", "none"] = Field(
        "test_ids",
        description="What follows test_cmd: the FAIL_TO_PASS + PASS_TO_PASS ids (pytest node ids), "
        "the files the test patch touches, or nothing.",
    )
    log_parser: str = Field("parse_log_pytest", description="A swebench log parser, e.g. parse_log_pytest (or 'pytest').")
    test_timeout_s: float = Field(300, gt=0, description="Seconds the test command may run.")

    @field_validator("version", mode="before")
    @classmethod
    def _quoted_version(cls, value: Any) -> Any:
        # YAML reads `version: 3.10` as the float 3.1, which would then match the wrong instances.
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise ValueError(f"{value!r} is a number; quote it in YAML (e.g. '3.10') so no digit is lost")
        return value

    @field_validator("log_parser")
    @classmethod
    def _known_parser(cls, value: str) -> str:
        return parser_name(value)

    @field_validator("repo")
    @classmethod
    def _owner_name(cls, value: str) -> str:
        if value.count("/") != 1 or value.startswith("/") or value.endswith("/"):
            raise ValueError(f"must look like 'owner/name', got {value!r}")
        return value


def parser_name(name: str) -> str:
    """The full swebench parser name for `name` ("pytest" -> "parse_log_pytest"); unknown names raise ValueError."""
    for candidate in (name, _PARSER_PREFIX + name):
        if candidate in PARSER_REGISTRY:
            return candidate
    known = sorted(PARSER_REGISTRY)
    short = [k.removeprefix(_PARSER_PREFIX) for k in known]
    close = difflib.get_close_matches(name.removeprefix(_PARSER_PREFIX), short, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(_PARSER_PREFIX + c for c in close)}? " if close else ""
    sample = ", ".join(k for k in known if k.startswith("parse_log_pytest") or k == "parse_log_django")
    raise ValueError(f"unknown log parser {name!r}; {hint}valid names include {sample} ({len(known)} in swebench's PARSER_REGISTRY)")


class SpecSet(BaseModel):
    """The specs of a spec file, looked up by an instance's repo and version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    specs: list[RepoSpec]

    @model_validator(mode="after")
    def _unique(self) -> SpecSet:
        seen: set[tuple[str, str | None]] = set()
        for spec in self.specs:
            key = (spec.repo, spec.version)
            if key in seen:
                raise ValueError(f"two specs for repo {spec.repo!r} version {spec.version!r}")
            seen.add(key)
        return self

    def lookup(self, repo: str, version: str | None) -> RepoSpec:
        """The spec for exactly this repo and version, else the repo's any-version spec."""
        fallback = None
        for spec in self.specs:
            if spec.repo != repo:
                continue
            if version is not None and spec.version == version:
                return spec
            if spec.version is None:
                fallback = spec
        if fallback is not None:
            return fallback
        versions = sorted(str(s.version) for s in self.specs if s.repo == repo)
        have = f"it has versions {', '.join(versions)}" if versions else "no spec names this repo"
        raise SpecError(f"no spec for repo {repo!r} version {version!r} ({have}); add one, or one with no version")

    def for_instance(self, instance: SWEInstance) -> RepoSpec:
        """The spec that builds and tests `instance`."""
        return self.lookup(instance.repo, instance.version)

    def dump(self, path: str | Path) -> None:
        """Write the specs as YAML (`{specs: [...]}`) that load_specs reads back."""
        data = {"specs": [spec.model_dump(mode="json") for spec in self.specs]}
        Path(path).write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


def load_specs(path: str | Path) -> SpecSet:
    """The specs of a YAML file: a list of specs, `{specs: [...]}`, or SWE-bench's `{repo: {version: spec}}`."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise SpecError(f"{path}: bad YAML: {' '.join(str(e).split())}") from None
    if isinstance(data, dict) and set(data) == {"specs"}:
        data = data["specs"]
    elif isinstance(data, dict):
        data = _flatten_nested(path, data)
    if not isinstance(data, list):
        raise SpecError(
            f"{path}: expected a list of specs, a mapping {{specs: [...]}} or {{repo: {{version: spec}}}}, "
            f"got {type(data).__name__}"
        )
    specs = []
    for index, item in enumerate(data):
        specs.append(_one_spec(path, index, item))
    try:
        return SpecSet(specs=specs)
    except ValidationError as e:
        raise SpecError(f"{path}: {e.errors()[0]['msg'].removeprefix('Value error, ')}") from None


def _flatten_nested(path: Path, data: dict[Any, Any]) -> list[dict[str, Any]]:
    # SWE-bench's own layout (MAP_REPO_VERSION_TO_SPECS), which the task builder writes too; a null version key is "any".
    flat = []
    for repo, versions in data.items():
        if not isinstance(versions, dict):
            raise SpecError(f"{path}: repo {repo!r} must map versions to specs, got {type(versions).__name__}")
        for version, spec in versions.items():
            if not isinstance(spec, dict):
                raise SpecError(f"{path}: repo {repo!r} version {version!r}: a spec must be a mapping")
            flat.append({"repo": repo, "version": version, **spec})
    return flat


def _one_spec(path: Path, index: int, item: Any) -> RepoSpec:
    if not isinstance(item, dict):
        raise SpecError(f"{path}: spec #{index} must be a mapping, got {type(item).__name__}")
    try:
        return RepoSpec.model_validate(item)
    except ValidationError as e:
        label = f"spec #{index}" + (f" ({item['repo']})" if isinstance(item.get("repo"), str) else "")
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc'])) or 'spec'}: {err['msg'].removeprefix('Value error, ')}" for err in e.errors()
        )
        raise SpecError(f"{path}: {label}: {problems}") from None
