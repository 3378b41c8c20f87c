"""The ALFWorld env on alfworld's own engine: generated games, and an official-format trial written by hand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gymnasium as gym
import pytest
from gymnasium.utils.env_checker import check_env

import agentgym
from agentgym.envs.text.alfworld_env import ALFWorldEnv
from agentgym.envs.text.alfworld_games import TASK_TYPES, list_games, make_games, split_scenes
from agentgym.errors import EnvConfigError


@pytest.fixture(scope="session")
def alfw_games() -> Path:
    """Twelve generated games (two per task type over the three splits), made once per machine and reused."""
    out = Path(os.environ["AGENTGYM_CACHE"]) / "test-alfworld-n12-s0"
    make_games(out, n=12, seed=0, workers=2)
    return out


@pytest.fixture(autouse=True)
def _no_official_data(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own ALFWorld download must not stand in for the games a test means.
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)


def _trials(games: Path) -> list[Path]:
    return [t for split in ("train", "valid_seen", "valid_unseen") for t in list_games(games, split)]


def test_gymnasium_env_checker_passes(alfw_games: Path) -> None:
    env = gym.make("agentgym/alfworld", split="valid_seen", data_dir=str(alfw_games))
    check_env(env.unwrapped)
    env.close()


def test_generator_is_deterministic(tmp_path: Path) -> None:
    # One worker against two: the files must not depend on which process made which game.
    a = make_games(tmp_path / "a", n=4, seed=7, workers=1)
    b = make_games(tmp_path / "b", n=4, seed=7, workers=2)
    assert [p.relative_to(tmp_path / "a") for p in a] == [p.relative_to(tmp_path / "b") for p in b]
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 4 * 3 + 3
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    assert not list(tmp_path.glob(".*partial*"))  # the set was renamed into place whole


def test_game_set_is_in_alfworlds_format_with_every_task_type(alfw_games: Path) -> None:
    trials = _trials(alfw_games)
    assert len(trials) == 12
    types = set()
    for trial in trials:
        traj = json.loads((trial / "traj_data.json").read_text())
        game = json.loads((trial / "game.tw-pddl").read_text())
        types.add(traj["task_type"])
        assert trial.parent.name.startswith(traj["task_type"] + "-") and trial.name.startswith("trial_")
        assert set(traj["pddl_params"]) >= {"object_target", "parent_target", "toggle_target", "mrecep_target", "object_sliced"}
        assert traj["turk_annotations"]["anns"][0]["task_desc"] and traj["scene"]["floor_plan"].startswith("FloorPlan")
        assert set(game) == {"pddl_domain", "grammar", "pddl_problem", "solvable", "walkthrough"} and game["solvable"] is True
        assert "UNKNOWN GOAL" not in game["grammar"] and traj["turk_annotations"]["anns"][0]["task_desc"] in game["grammar"]
        assert game["pddl_problem"] == (trial / "initial_state.pddl").read_text() and "(:goal" in game["pddl_problem"]
    assert types == set(TASK_TYPES)
    assert (alfw_games / "logic" / "alfred.pddl").is_file() and (alfw_games / "logic" / "alfred.twl2").is_file()


def test_valid_unseen_rooms_never_appear_in_train(alfw_games: Path) -> None:
    def scenes(split: str) -> set[int]:
        return {json.loads((t / "traj_data.json").read_text())["scene"]["scene_num"] for t in list_games(alfw_games, split)}

    assert scenes("valid_unseen") and scenes("valid_unseen").isdisjoint(scenes("train") | scenes("valid_seen"))
    assert set(split_scenes("valid_unseen")).isdisjoint(split_scenes("train"))
    assert split_scenes("valid_seen") == split_scenes("train")


def test_walkthrough_solves_every_game(alfw_games: Path) -> None:
    for split in ("train", "valid_seen", "valid_unseen"):
        env = agentgym.make("alfworld", split=split, data_dir=str(alfw_games))
        for task in env.task_ids():
            obs, info = env.reset(options={"task": task})
            assert info["goal"] and info["answer"] == info["goal"] and f"Your task is to: {info['goal']}." in obs
            assert info["walkthrough"] and info["admissible_actions"] and "Available actions:" in obs
            for command in info["walkthrough"]:
                obs, reward, terminated, truncated, step = env.step(command)
                assert step["signals"]["valid_action"] is True, (task, command, obs)
            assert terminated and not truncated and step["success"] is True and reward == 1.0, task
        env.close()


def test_bad_and_empty_commands_are_invalid_and_harmless(alfw_games: Path) -> None:
    env = agentgym.make("alfworld", split="train", data_dir=str(alfw_games), max_turns=4)
    task = env.task_ids()[0]
    first, info = env.reset(options={"task": task})
    obs, reward, terminated, truncated, step = env.step("  \n ")
    assert "no command" in obs and step["signals"]["valid_action"] is False and not terminated
    obs, reward, terminated, truncated, step = env.step("dance with the fridge")
    assert obs.startswith("Nothing happens.") and step["signals"]["valid_action"] is False and reward == 0.0
    assert step["admissible_actions"] == info["admissible_actions"] and not terminated
    obs, reward, terminated, truncated, step = env.step(info["walkthrough"][0])
    assert step["signals"]["valid_action"] is True
    obs, reward, terminated, truncated, step = env.step("look")
    assert truncated and step["success"] is False
    again, _ = env.reset(options={"task": task})
    assert again == first
    env.close()


def test_games_load_safely_from_threads(alfw_games: Path) -> None:
    # TextWorld's grammar parser and fast-downward's translator are module state; rollouts use threads.
    argv = list(sys.argv)
    envs = [agentgym.make("alfworld", split="train", data_dir=str(alfw_games)) for _ in range(3)]
    tasks = envs[0].task_ids()[:3]
    with ThreadPoolExecutor(3) as pool:
        infos = list(pool.map(lambda et: et[0].reset(options={"task": et[1]})[1], zip(envs, tasks)))
    assert [i["task_id"] for i in infos] == list(tasks) and all(i["walkthrough"] for i in infos)
    assert sys.argv == argv  # the planner's translator overwrites sys.argv; the env puts it back
    for env in envs:
        env.close()


@pytest.mark.timeout(60)
def test_no_games_is_a_clear_error_not_a_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EnvConfigError, match=r"no ALFWorld split 'train' in .*agentgym alfworld make-games"):
        ALFWorldEnv(data_dir=str(tmp_path))
    (tmp_path / "json_2.1.1" / "valid_seen" / "pick_and_place_simple-Mug-None-Desk-301" / "trial_x").mkdir(parents=True)
    with pytest.raises(EnvConfigError, match=r"no ALFWorld games .* in .*valid_seen.*make-games"):
        ALFWorldEnv(split="valid_seen", data_dir=str(tmp_path))
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    with pytest.raises(EnvConfigError, match=r"^ALFWORLD_DATA=.*no ALFWorld games"):
        agentgym.make("alfworld", split="valid_seen")
    with pytest.raises(EnvConfigError, match="unknown ALFWorld split 'test'"):
        ALFWorldEnv(split="test", data_dir=str(tmp_path))


def test_make_games_cli_rejects_bad_input_in_one_line(tmp_path: Path) -> None:
    for args in (["--n", "0", "--out", str(tmp_path / "g")], ["--n", "2", "--out", str(tmp_path / "file" / "g")]):
        (tmp_path / "file").write_text("not a directory")
        done = subprocess.run([sys.executable, "-m", "agentgym.cli", "alfworld", "make-games", *args],
                              capture_output=True, text=True, timeout=60)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), done.stderr


# -- a trial in alfworld's official format, written by hand (not by this project's generator) ----------

_HAND_TRIAL = "pick_heat_then_place_in_recep-Egg-None-DiningTable-7/trial_T20190906_180231_377411"

_HAND_TRAJ = {
    "task_id": "trial_T20190906_180231_377411",
    "task_type": "pick_heat_then_place_in_recep",
    "pddl_params": {"object_target": "Egg", "parent_target": "DiningTable", "toggle_target": "",
                    "mrecep_target": "", "object_sliced": False},
    "scene": {"floor_plan": "FloorPlan7", "scene_num": 7, "random_seed": 3152837,
              "init_action": {"action": "TeleportFull", "x": 0.0, "y": 0.9, "z": 0.0, "rotation": 0, "horizon": 30},
              "object_poses": [], "object_toggles": [], "dirty_and_empty": False},
    "turk_annotations": {"anns": [{"task_desc": "Put a warm egg on the table.",
                                   "high_descs": ["Walk to the fridge.", "Take the egg out.", "Warm it up.", "Set it on the table."],
                                   "votes": [1, 1, 1]}]},
}

_HAND_PROBLEM = """(define (problem plan_trial_T20190906_180231_377411)
(:domain alfred)
(:objects
    agent1 - agent
    EggType - otype
    AppleType - otype
    MugType - otype
    KnifeType - otype
    ButterKnifeType - otype
    CounterTopType - rtype
    DiningTableType - rtype
    FridgeType - rtype
    MicrowaveType - rtype
    SinkBasinType - rtype
    CabinetType - rtype
    Egg_bar__minus_02_dot_04_bar__plus_00_dot_81_bar__plus_01_dot_24 - object
    Apple_bar__plus_00_dot_31_bar__plus_00_dot_82_bar__minus_01_dot_12 - object
    Mug_bar__minus_00_dot_61_bar__plus_00_dot_96_bar__minus_02_dot_35 - object
    CounterTop_bar__minus_00_dot_52_bar__plus_00_dot_93_bar__minus_02_dot_40 - receptacle
    DiningTable_bar__plus_00_dot_17_bar__plus_00_dot_01_bar__minus_01_dot_00 - receptacle
    Fridge_bar__minus_02_dot_10_bar__plus_00_dot_00_bar__plus_01_dot_07 - receptacle
    Microwave_bar__minus_01_dot_32_bar__plus_01_dot_52_bar__minus_02_dot_45 - receptacle
    Sink_bar__minus_01_dot_92_bar__plus_00_dot_92_bar__minus_00_dot_70_bar_SinkBasin - receptacle
    Cabinet_bar__minus_01_dot_85_bar__plus_00_dot_40_bar__minus_02_dot_10 - receptacle
    loc_bar__minus_2_bar__minus_7_bar_2_bar_45 - location
    loc_bar_1_bar__minus_2_bar_3_bar_60 - location
    loc_bar__minus_5_bar_4_bar_3_bar_15 - location
    loc_bar__minus_5_bar__minus_7_bar_2_bar__minus_30 - location
    loc_bar__minus_6_bar__minus_3_bar_3_bar_45 - location
    loc_bar__minus_6_bar__minus_7_bar_2_bar_60 - location
    loc_bar_0_bar_0_bar_0_bar_30 - location
)
(:init
    (= (total-cost) 0)
    (receptacleType CounterTop_bar__minus_00_dot_52_bar__plus_00_dot_93_bar__minus_02_dot_40 CounterTopType)
    (receptacleType DiningTable_bar__plus_00_dot_17_bar__plus_00_dot_01_bar__minus_01_dot_00 DiningTableType)
    (receptacleType Fridge_bar__minus_02_dot_10_bar__plus_00_dot_00_bar__plus_01_dot_07 FridgeType)
    (receptacleType Microwave_bar__minus_01_dot_32_bar__plus_01_dot_52_bar__minus_02_dot_45 MicrowaveType)
    (receptacleType Sink_bar__minus_01_dot_92_bar__plus_00_dot_92_bar__minus_00_dot_70_bar_SinkBasin SinkBasinType)
    (receptacleType Cabinet_bar__minus_01_dot_85_bar__plus_00_dot_40_bar__minus_02_dot_10 CabinetType)
    (openable Fridge_bar__minus_02_dot_10_bar__plus_00_dot_00_bar__plus_01_dot_07)
    (openable Microwave_bar__minus_01_dot_32_bar__plus_01_dot_52_bar__minus_02_dot_45)
    (openable Cabinet_bar__minus_01_dot_85_bar__plus_00_dot_40_bar__minus_02_dot_10)
    (receptacleAtLocation CounterTop_bar__minus_00_dot_52_bar__plus_00_dot_93_bar__minus_02_dot_40 loc_bar__minus_2_bar__minus_7_bar_2_bar_45)
    (receptacleAtLocation DiningTable_bar__plus_00_dot_17_bar__plus_00_dot_01_bar__minus_01_dot_00 loc_bar_1_bar__minus_2_bar_3_bar_60)
    (receptacleAtLocation Fridge_bar__minus_02_dot_10_bar__plus_00_dot_00_bar__plus_01_dot_07 loc_bar__minus_5_bar_4_bar_3_bar_15)
    (receptacleAtLocation Microwave_bar__minus_01_dot_32_bar__plus_01_dot_52_bar__minus_02_dot_45 loc_bar__minus_5_bar__minus_7_bar_2_bar__minus_30)
    (receptacleAtLocation Sink_bar__minus_01_dot_92_bar__plus_00_dot_92_bar__minus_00_dot_70_bar_SinkBasin loc_bar__minus_6_bar__minus_3_bar_3_bar_45)
    (receptacleAtLocation Cabinet_bar__minus_01_dot_85_bar__plus_00_dot_40_bar__minus_02_dot_10 loc_bar__minus_6_bar__minus_7_bar_2_bar_60)
    (canContain CounterTopType EggType)
    (canContain CounterTopType AppleType)
    (canContain CounterTopType MugType)
    (canContain DiningTableType EggType)
    (canContain DiningTableType AppleType)
    (canContain DiningTableType MugType)
    (canContain FridgeType EggType)
    (canContain FridgeType AppleType)
    (canContain FridgeType MugType)
    (canContain MicrowaveType EggType)
    (canContain MicrowaveType AppleType)
    (canContain MicrowaveType MugType)
    (canContain SinkBasinType EggType)
    (canContain SinkBasinType AppleType)
    (canContain SinkBasinType MugType)
    (canContain CabinetType MugType)
    (objectType Egg_bar__minus_02_dot_04_bar__plus_00_dot_81_bar__plus_01_dot_24 EggType)
    (objectType Apple_bar__plus_00_dot_31_bar__plus_00_dot_82_bar__minus_01_dot_12 AppleType)
    (objectType Mug_bar__minus_00_dot_61_bar__plus_00_dot_96_bar__minus_02_dot_35 MugType)
    (pickupable Egg_bar__minus_02_dot_04_bar__plus_00_dot_81_bar__plus_01_dot_24)
    (pickupable Apple_bar__plus_00_dot_31_bar__plus_00_dot_82_bar__minus_01_dot_12)
    (pickupable Mug_bar__minus_00_dot_61_bar__plus_00_dot_96_bar__minus_02_dot_35)
    (heatable Egg_bar__minus_02_dot_04_bar__plus_00_dot_81_bar__plus_01_dot_24)
    (heatable Apple_bar__plus_00_dot_31_bar__plus_00_dot_82_bar__minus_01_dot_12)
    (heatable Mug_bar__minus_00_dot_61_bar__plus_00_dot_96_bar__minus_02_dot_35)
    (isReceptacleObject Mug_bar__minus_00_dot_61_bar__plus_00_dot_96_bar__minus_02_dot_35)
    (inReceptacle Egg_bar__minus_02_dot_04_bar__plus_00_dot_81_bar__plus_01_dot_24 Fridge_bar__minus_02_dot_10_bar__plus_00_dot_00_bar__plus_01_dot_07)
    (inReceptacle Apple_bar__plus_00_dot_31_bar__plus_00_dot_82_bar__minus_01_dot_12 DiningTable_bar__plus_00_dot_17_bar__plus_00_dot_01_bar__minus_01_dot_00)
    (inReceptacle Mug_bar__minus_00_dot_61_bar__plus_00_dot_96_bar__minus_02_dot_35 CounterTop_bar__minus_00_dot_52_bar__plus_00_dot_93_bar__minus_02_dot_40)
    (objectAtLocation Egg_bar__minus_02_dot_04_bar__plus_00_dot_81_bar__plus_01_dot_24 loc_bar__minus_5_bar_4_bar_3_bar_15)
    (objectAtLocation Apple_bar__plus_00_dot_31_bar__plus_00_dot_82_bar__minus_01_dot_12 loc_bar_1_bar__minus_2_bar_3_bar_60)
    (objectAtLocation Mug_bar__minus_00_dot_61_bar__plus_00_dot_96_bar__minus_02_dot_35 loc_bar__minus_2_bar__minus_7_bar_2_bar_45)
    (atLocation agent1 loc_bar_0_bar_0_bar_0_bar_30)
)
(:goal
    (and
        (exists (?r - receptacle)
            (exists (?o - object)
                (and
                    (heatable ?o)
                    (objectType ?o EggType)
                    (receptacleType ?r DiningTableType)
                    (isHot ?o)
                    (inReceptacle ?o ?r)
                )
            )
        )
    )
)
)
"""


@pytest.mark.timeout(120)
def test_a_hand_written_official_trial_plays_through_alfworld_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trial = tmp_path / "json_2.1.1" / "train" / _HAND_TRIAL
    trial.mkdir(parents=True)
    (trial / "traj_data.json").write_text(json.dumps(_HAND_TRAJ, indent=2))
    (trial / "initial_state.pddl").write_text(_HAND_PROBLEM)
    # alfworld's own loader skips movable-receptacle trials; so must this env.
    movable = tmp_path / "json_2.1.1" / "train" / "pick_and_place_with_movable_recep-Egg-Bowl-DiningTable-7" / "trial_T1"
    movable.mkdir(parents=True)
    (movable / "traj_data.json").write_text(json.dumps(_HAND_TRAJ))
    (movable / "initial_state.pddl").write_text(_HAND_PROBLEM)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))

    env = agentgym.make("alfworld", split="train")
    assert env.task_ids() == [_HAND_TRIAL]
    obs, info = env.reset(options={"task": _HAND_TRIAL})
    assert info["goal"] in ("put a hot egg in diningtable", "heat some egg and put it in diningtable")
    assert "a fridge 1" in obs and "a sinkbasin 1" in obs and info["task_type"] == "pick_heat_then_place_in_recep"
    plan = info["walkthrough"]
    assert "open fridge 1" in plan and "heat egg 1 with microwave 1" in plan and plan[-1] == "move egg 1 to diningtable 1"
    for command in plan:
        obs, reward, terminated, truncated, step = env.step(command)
        assert step["signals"]["valid_action"] is True, (command, obs)
    assert terminated and step["success"] is True and reward == 1.0
    again, info2 = env.reset(options={"task": _HAND_TRIAL})
    assert info2["walkthrough"] == plan and info2["goal"] == info["goal"]
    env.close()
