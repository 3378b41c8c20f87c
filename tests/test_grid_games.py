"""The maze (fully observed) and text-nav (partially observed) games, and their shared BFS helper."""

from __future__ import annotations

import pytest
from gymnasium.utils.env_checker import check_env

import agentgym
from agentgym.envs.games.maze import generate_maze, normalise_move, render
from agentgym.envs.games.paths import distances_from, shortest_moves
from agentgym.envs.games.text_nav import OPPOSITE, generate_house, parse_command


@pytest.mark.filterwarnings("ignore:.*alternative render modes")  # built by agentgym.make, so no gymnasium spec
@pytest.mark.parametrize("env_id", ["maze", "text-nav"])
def test_gymnasium_env_checker_passes(env_id: str) -> None:
    env = agentgym.make(env_id)
    check_env(env.unwrapped)
    env.close()


# -- paths -----------------------------------------------------------------------------


def test_shortest_moves_and_distances_on_a_small_graph() -> None:
    # a - b - c in a line, and a shortcut a - c: the shortcut wins; d is cut off.
    graph = {
        "a": {"east": "b", "south": "c"}, "b": {"west": "a", "east": "c"}, "c": {"west": "b", "north": "a"}, "d": {},
    }
    assert shortest_moves(graph, "a", "c") == ["south"]
    assert shortest_moves(graph, "b", "b") == []
    assert shortest_moves(graph, "a", "d") is None
    assert distances_from(graph, "a") == {"a": 0, "b": 1, "c": 1}


# -- maze ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [2, 5, 9])
def test_maze_walkthrough_reaches_the_goal_on_every_maze(size: int) -> None:
    env = agentgym.make("maze", size=size, num_mazes=200 if size == 5 else 20)
    assert env.max_turns == 2 * size * size
    for task in env.task_ids():
        _, info = env.reset(options={"task": task})
        assert info["answer"] == " ".join(info["walkthrough"]) and info["walkthrough"]
        for move in info["walkthrough"]:
            _, reward, terminated, truncated, step = env.step(move)
            assert step["signals"]["valid_action"] is True
        assert terminated and not truncated and step["success"] is True and reward == 1.0
        assert step["signals"] == {"valid_action": True, "distance_to_goal": 0, "progress": 1.0}


def test_maze_observation_shows_the_whole_maze_and_moves_update_signals() -> None:
    env = agentgym.make("maze")
    obs, info = env.reset(options={"task": "maze-5x5-0007"})
    art = [line for line in obs.splitlines() if line.startswith("#")]
    assert len(art) == 11 and all(len(line) == 11 for line in art)
    assert sum(line.count("@") for line in art) == 1 and sum(line.count("G") for line in art) == 1
    moves = info["admissible_actions"]
    assert moves and f"Moves that do not hit a wall: {', '.join(moves)}." in obs
    _, _, _, _, step = env.step(info["walkthrough"][0])
    n = info["shortest_path_length"]
    assert step["signals"]["distance_to_goal"] == n - 1 and step["signals"]["progress"] == pytest.approx(1 / n)


def test_maze_wall_bumps_and_nonsense_are_invalid_and_do_not_move() -> None:
    env = agentgym.make("maze")
    obs, info = env.reset(options={"task": "maze-5x5-0003"})
    blocked = next(m for m in ("up", "down", "left", "right") if m not in info["admissible_actions"])
    after, reward, terminated, _, step = env.step(blocked.upper())
    assert "bumped into a wall" in after and step["signals"]["valid_action"] is False and not terminated
    assert after.split("\n\n", 1)[1] == obs.split("\n\n", 1)[1]  # the same maze, the agent where it was
    after, *_, step = env.step("fly to the moon")
    assert "is not a move" in after and step["signals"]["valid_action"] is False
    assert step["signals"]["distance_to_goal"] == info["shortest_path_length"]


@pytest.mark.parametrize(
    ("reply", "move"),
    [("up", "up"), ("North", "up"), ("go west.", "left"), ("E", "right"), ("'down'\nbecause", "down"), ("up up", None)],
)
def test_normalise_move(reply: str, move: str | None) -> None:
    assert normalise_move(reply) == move


def test_mazes_are_deterministic_and_differ_between_seeds() -> None:
    first = generate_maze(6, "agentgym-maze-6x6-0001")
    again = generate_maze(6, "agentgym-maze-6x6-0001")
    assert render(first, first.start) == render(again, again.start)
    texts = {render(m, m.start) for m in (generate_maze(6, f"agentgym-maze-6x6-{i:04d}") for i in range(10))}
    assert len(texts) == 10
    env, other = agentgym.make("maze"), agentgym.make("maze")
    assert env.reset(options={"task": "maze-5x5-0042"})[0] == other.reset(options={"task": "maze-5x5-0042"})[0]


def test_maze_is_perfect_and_its_passages_go_both_ways() -> None:
    maze = generate_maze(7, "agentgym-maze-7x7-0000")
    edges = sum(len(moves) for moves in maze.graph.values()) // 2
    assert edges == 7 * 7 - 1 and len(distances_from(maze.graph, maze.start)) == 49  # a spanning tree
    back = {"up": "down", "down": "up", "left": "right", "right": "left"}
    assert all(maze.graph[nxt][back[m]] == cell for cell, moves in maze.graph.items() for m, nxt in moves.items())


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"size": 1}, "size"), ({"size": 31}, "size"), ({"num_mazes": 0}, "num_mazes"),
     ({"step_penalty": -0.1}, "step_penalty"), ({"max_turns": 0}, "max_turns")],
)
def test_maze_bad_kwargs_are_value_errors_naming_the_kwarg(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        agentgym.make("maze", **kwargs)


def test_maze_step_penalty_and_turn_limit() -> None:
    env = agentgym.make("maze", step_penalty=0.01, max_turns=3)
    _, info = env.reset(options={"task": "maze-5x5-0000"})
    assert info["shortest_path_length"] > 3
    steps = [env.step(m) for m in info["walkthrough"][:3]]
    assert [s[1] for s in steps] == [-0.01] * 3
    _, _, terminated, truncated, last = steps[-1]
    assert truncated and not terminated and last["success"] is False


# -- text-nav --------------------------------------------------------------------------


@pytest.mark.parametrize("num_rooms", [2, 8, 24])
def test_nav_walkthrough_reaches_the_goal_room_in_every_house(num_rooms: int) -> None:
    env = agentgym.make("text-nav", num_rooms=num_rooms, num_houses=200 if num_rooms == 8 else 20)
    assert env.max_turns == 4 * num_rooms
    for task in env.task_ids():
        _, info = env.reset(options={"task": task})
        for command in info["walkthrough"]:
            obs, reward, terminated, truncated, step = env.step(command)
            assert step["signals"]["valid_action"] is True
        assert terminated and not truncated and step["success"] is True and reward == 1.0
        assert f"You are in the {info['answer']}." in obs and step["signals"]["progress"] == 1.0


def test_nav_observation_shows_the_room_and_exits_but_never_the_map() -> None:
    env = agentgym.make("text-nav")
    obs, info = env.reset(options={"task": "nav-0007"})
    house = generate_house(8, "agentgym-nav-8-nav-0007")
    here = house.exits[house.start]
    assert f"find the {info['answer']}" in obs and f"You are in the {house.start}." in obs
    assert f"Exits: {', '.join(here)}." in obs and info["admissible_actions"] == [f"go {d}" for d in here]
    hidden = [room for room in house.exits if room not in (house.start, house.goal)]
    assert not any(f" {room}" in obs for room in hidden)
    look, _, _, _, step = env.step("look")
    assert step["signals"]["valid_action"] is True and look == obs.split("\n\n", 1)[1]


def test_nav_blocked_directions_and_unknown_commands_are_invalid() -> None:
    env = agentgym.make("text-nav")
    _, info = env.reset(options={"task": "nav-0001"})
    blocked = next(d for d in ("north", "east", "south", "west") if f"go {d}" not in info["admissible_actions"])
    obs, _, terminated, _, step = env.step(blocked[0])
    assert f"You can't go {blocked} from here." in obs and step["signals"]["valid_action"] is False and not terminated
    obs, *_, step = env.step("eat the sofa")
    assert "is not a command" in obs and step["signals"]["valid_action"] is False
    assert step["signals"]["distance_to_goal"] == info["shortest_path_length"]


@pytest.mark.parametrize(
    ("reply", "command"),
    [("go north", "north"), ("N", "north"), ("West.", "west"), ("look", "look"), ("go up", None),
     ("go to the hall", None)],
)
def test_parse_command(reply: str, command: str | None) -> None:
    assert parse_command(reply) == command


def test_houses_are_deterministic_consistent_and_differ_between_seeds() -> None:
    first = generate_house(8, "agentgym-nav-8-nav-0003")
    assert first == generate_house(8, "agentgym-nav-8-nav-0003")
    assert len({repr(generate_house(8, f"agentgym-nav-8-nav-{i:04d}")) for i in range(10)}) == 10
    # Doors work both ways, along the opposite direction, and every room can be reached.
    doors = [(room, d, other) for room, exits in first.exits.items() for d, other in exits.items()]
    assert all(first.exits[other][OPPOSITE[d]] == room for room, d, other in doors)
    assert len(distances_from(first.exits, first.start)) == 8


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [({"num_rooms": 1}, "num_rooms"), ({"num_rooms": 99}, "num_rooms"), ({"num_houses": 0}, "num_houses"),
     ({"max_turns": 0}, "max_turns")],
)
def test_nav_bad_kwargs_are_value_errors_naming_the_kwarg(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        agentgym.make("text-nav", **kwargs)
