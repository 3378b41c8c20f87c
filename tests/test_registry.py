"""The registry: specs, make with overrides, errors that name the fix, the gymnasium mirror."""

from __future__ import annotations

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
