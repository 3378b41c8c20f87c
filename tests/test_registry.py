"""The registry: specs, make with overrides, errors that name the fix, the gymnasium mirror."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import pytest

import agentgym
from agentgym.errors import EnvConfigError, RegistrationError, UnknownEnvError
from agentgym.registry import Registry

COUNTDOWN = "tests.toy_envs:CountdownEnv"


def test_make_merges_overrides_over_a_copy_of_the_defaults(registry: Registry) -> None:
    registry.register("countdown", COUNTDOWN, max_turns=7, starts=[5])
    env = registry.make("countdown", max_turns=3)
    assert env.max_turns == 3 and env.starts == [5]
    assert registry.make("countdown").max_turns == 7  # the override did not stick to the spec
    assert registry.spec("countdown").kwargs == {"max_turns": 7, "starts": [5]}


def test_spec_is_serialisable(registry: Registry) -> None:
    spec = registry.register("countdown", COUNTDOWN, description="toy", max_turns=7)
    again = type(spec).model_validate_json(spec.model_dump_json())
    assert again == spec and again.gym_id == "agentgym/countdown"


def test_unknown_id_suggests_the_closest(registry: Registry) -> None:
    registry.register("countdown", COUNTDOWN)
    with pytest.raises(UnknownEnvError, match="did you mean 'countdown'"):
        registry.make("countdwn")
    with pytest.raises(UnknownEnvError, match="known: countdown"):
        registry.make("zzz")


def test_unknown_option_is_named_with_a_suggestion(registry: Registry) -> None:
    registry.register("countdown", COUNTDOWN)
    with pytest.raises(EnvConfigError, match="no option 'max_turn'; did you mean 'max_turns'"):
        registry.make("countdown", max_turn=3)


def test_conflicting_registration_is_refused_identical_is_fine(registry: Registry) -> None:
    registry.register("countdown", COUNTDOWN, max_turns=4)
    registry.register("countdown", COUNTDOWN, max_turns=4)
    with pytest.raises(RegistrationError, match="already registered"):
        registry.register("countdown", "elsewhere:Env")


@pytest.mark.parametrize("bad_id", ["Has Space", "UPPER", "", "-lead"])
def test_bad_ids_are_refused(registry: Registry, bad_id: str) -> None:
    with pytest.raises(RegistrationError):
        registry.register(bad_id, COUNTDOWN)


def test_unloadable_entry_point_is_a_clear_error(registry: Registry) -> None:
    registry.register("ghost", "no_such_module.anywhere:Env")
    with pytest.raises(RegistrationError, match="cannot load entry point"):
        registry.make("ghost")


def test_default_registry_mirrors_into_gymnasium() -> None:
    try:
        agentgym.register("countdown-mirror", COUNTDOWN, max_turns=5)
        env = gym.make("agentgym/countdown-mirror")
        assert env.unwrapped.max_turns == 5
        assert isinstance(agentgym.make("countdown-mirror"), type(env.unwrapped))
    finally:
        agentgym.default_registry.unregister("countdown-mirror")
    assert "agentgym/countdown-mirror" not in gym.registry


def test_builtin_textworld_is_registered_through_the_entry_point() -> None:
    ids = [s.id for s in agentgym.list_envs()]
    assert "textworld" in ids
    assert "agentgym/textworld" in gym.registry


ABSENT_PLUGIN = "agentgym_absent_plugin_pkg.envs:register"


def _hook_that_raises() -> None:
    """A plugin hook whose package imports but whose registration fails."""
    raise RuntimeError("the plugin's games directory is missing")


def _plugin_registry(monkeypatch: pytest.MonkeyPatch, *entry_points: tuple[str, str]) -> Registry:
    """A registry whose `agentgym.envs` entry points are exactly `entry_points` (name, value)."""
    from importlib import metadata

    eps = [metadata.EntryPoint(name=n, value=v, group="agentgym.envs") for n, v in entry_points]
    monkeypatch.setattr(
        "agentgym.registry.metadata.entry_points", lambda group: eps if group == "agentgym.envs" else []
    )
    return Registry(load_plugins=True, mirror_to_gymnasium=False)


def test_failed_plugin_is_logged_and_named_when_its_env_is_unknown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    registry = _plugin_registry(monkeypatch, ("echo", ABSENT_PLUGIN))
    registry.register("echoes", COUNTDOWN)
    with caplog.at_level("WARNING", logger="agentgym.registry"):
        assert [s.id for s in registry.list_envs()] == ["echoes"]  # the rest of the registry still works
    (record,) = [r for r in caplog.records if r.name == "agentgym.registry"]
    assert record.levelname == "WARNING" and "'echo'" in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is ModuleNotFoundError  # the traceback is logged
    with pytest.raises(UnknownEnvError) as raised:
        registry.make("echo")
    message = str(raised.value)
    assert message.startswith(
        "unknown env 'echo'; the plugin 'echo' (agentgym_absent_plugin_pkg.envs:register) failed to load: "
        "ModuleNotFoundError: No module named 'agentgym_absent_plugin_pkg'"
    )
    assert "did you mean 'echoes'?" in message  # the suggestion is kept
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)
    with pytest.raises(UnknownEnvError, match="the plugin 'echo'"):
        registry.spec("echo")


def test_every_failed_plugin_is_remembered_and_known_ids_are_unaffected(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _plugin_registry(
        monkeypatch, ("echo", ABSENT_PLUGIN), ("games", "tests.test_registry:_hook_that_raises")
    )
    registry.register("countdown", COUNTDOWN)
    assert registry.make("countdown").max_turns == 10  # failures elsewhere do not touch a known id
    failures = registry.plugin_errors
    assert [(f.plugin, f.entry_point) for f in failures] == [
        ("echo", ABSENT_PLUGIN), ("games", "tests.test_registry:_hook_that_raises")
    ]
    assert isinstance(failures[1].__cause__, RuntimeError)
    with pytest.raises(UnknownEnvError, match=r"RuntimeError: the plugin's games directory is missing") as raised:
        registry.make("zzz")
    assert "the plugin 'echo'" in str(raised.value) and "known: countdown" in str(raised.value)
    assert isinstance(failures[0], RegistrationError)  # a plugin failure is one of the project's errors


def _env_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, body: str) -> str:
    """Write an importable env module `name` holding `body` and return its entry point `name:Env`."""
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    return f"{name}:Env"


def test_env_whose_optional_dependency_is_missing_names_it_and_chains_it(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = "import agentgym_absent_optional_dep\nEnv = 1\n"
    entry = _env_module(tmp_path, monkeypatch, "agentgym_needs_dep_env", body)
    registry.register("needs-dep", entry)
    with pytest.raises(RegistrationError) as raised:
        registry.make("needs-dep")
    message = str(raised.value)
    assert "env 'needs-dep': cannot load entry point 'agentgym_needs_dep_env:Env'" in message
    assert "ModuleNotFoundError: No module named 'agentgym_absent_optional_dep'" in message
    assert "install the package that provides 'agentgym_absent_optional_dep'" in message
    assert isinstance(raised.value.__cause__, ModuleNotFoundError)


def test_env_module_that_raises_on_import_is_wrapped_with_its_entry_point(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _env_module(tmp_path, monkeypatch, "agentgym_raising_env", "raise OSError('libgame.so: cannot open')\n")
    registry.register("raising", entry)
    with pytest.raises(RegistrationError, match=r"cannot load entry point 'agentgym_raising_env:Env': "
                       r"OSError: libgame.so: cannot open") as raised:
        registry.make("raising")
    assert isinstance(raised.value.__cause__, OSError)


def test_entry_point_naming_a_missing_attribute_says_to_check_the_name(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = _env_module(tmp_path, monkeypatch, "agentgym_no_attr_env", "Envv = 1\n")
    registry.register("no-attr", entry)
    expected = r"AttributeError: .*has no attribute 'Env'.*check the name after ':'"
    with pytest.raises(RegistrationError, match=expected):
        registry.make("no-attr")
