"""The chess-endgames env: seeded positions, move parsing, Stockfish as a deterministic opponent."""

from __future__ import annotations

import gc
import os
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import chess
import pytest
from gymnasium.utils.env_checker import check_env

import agentgym
from agentgym.envs.games import chess_endgames
from agentgym.envs.games.chess_positions import KINDS, candidate, find_position, is_playable, parse_move
from agentgym.errors import AgentGymError, EnvConfigError

# White mates with Qg7# (the king guards g7) or stalemates with Qg6.
MATE_OR_STALEMATE = "7k/5K2/8/8/8/8/8/6Q1 w - - 0 1"


def _stockfish_children() -> list[int]:
    """Stockfish processes started by this test process, read from /proc (psutil may be absent)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        comm, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
        if comm == "stockfish" and int(rest[1]) == os.getpid():
            found.append(int(entry.name))
    return found


def _wait_for_no_stockfish(seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while _stockfish_children() and time.monotonic() < deadline:
        time.sleep(0.05)
    return _stockfish_children()


@pytest.fixture()
def hand_env() -> Iterator[chess_endgames.ChessEndgamesEnv]:
    """The env on the hand-chosen mate-or-stalemate position (task `fen-0000`)."""
    env = agentgym.make("chess-endgames", fens=[MATE_OR_STALEMATE]).unwrapped
    yield env
    env.close()


def test_gymnasium_env_checker_passes() -> None:
    env = agentgym.make("chess-endgames", num_positions=3)
    check_env(env.unwrapped)
    env.close()
    assert _wait_for_no_stockfish() == []


@pytest.mark.parametrize(
    "reply",
    ["Qg7#", "Qg7", "g1g7", "G1G7", "g1-g7", "qg7", "I play Qg7#.", "`Qg7+`", "1. Qg7!!", "**Qg7**\nit mates", "Let me see: Qg7"],
)
def test_parse_move_reads_san_and_uci_tolerantly(reply: str) -> None:
    assert parse_move(chess.Board(MATE_OR_STALEMATE), reply) == chess.Move.from_uci("g1g7")


@pytest.mark.parametrize("reply", ["", "hello", "Qh3", "0000", "--", "Ke5", "g1h3"])
def test_parse_move_rejects_what_is_not_a_legal_move(reply: str) -> None:
    assert parse_move(chess.Board(MATE_OR_STALEMATE), reply) is None


def test_san_and_uci_lead_to_the_same_game(hand_env: chess_endgames.ChessEndgamesEnv) -> None:
    results = []
    for move in ("Qg2", "g1g2"):
        hand_env.reset(options={"task": "fen-0000"})
        obs, reward, terminated, truncated, info = hand_env.step(move)
        assert info["signals"]["valid_action"] is True and info["move"] == "Qg2" and not terminated
        assert f"Black replied {info['opponent_move']}" in obs and info["signals"]["moves_played"] == 1
        results.append(info["fen"])
    assert results[0] == results[1]  # the opponent replies deterministically


def test_illegal_move_lists_legal_moves_and_leaves_the_board(hand_env: chess_endgames.ChessEndgamesEnv) -> None:
    _, start = hand_env.reset(options={"task": "fen-0000"})
    for bad in ("Ke5", "castle please"):
        obs, reward, terminated, truncated, info = hand_env.step(bad)
        assert info["signals"]["valid_action"] is False and reward == 0.0 and not terminated
        assert "Legal moves: " in obs and "Qg7#" in obs and info["admissible_actions"] == start["admissible_actions"]
        assert info["fen"] == start["fen"] and info["signals"]["moves_played"] == 0


def test_mate_in_one_scores_one_in_one_move(hand_env: chess_endgames.ChessEndgamesEnv) -> None:
    obs, info = hand_env.reset(options={"task": "fen-0000"})
    assert len(info["walkthrough"]) == 1 and info["walkthrough"][0].endswith("#")  # Qg7# or Qh1#
    assert "Side to move: White (you)" in obs and f"FEN: {info['fen']}" in obs
    obs, reward, terminated, truncated, info = hand_env.step("Qg7#")
    assert (reward, terminated, truncated, info["success"], info["turn"]) == (1.0, True, False, True, 1)
    assert info["signals"]["in_check"] is True and info["signals"]["material_balance"] == 9 and "checkmate" in obs


def test_stalemating_the_opponent_ends_with_nothing(hand_env: chess_endgames.ChessEndgamesEnv) -> None:
    hand_env.reset(options={"task": "fen-0000"})
    obs, reward, terminated, truncated, info = hand_env.step("Qg6")
    assert (reward, terminated, info["success"], info["game_over"]) == (0.0, True, False, "stalemate")
    assert "drawn by stalemate" in obs and info["admissible_actions"] == []


def test_max_turns_truncates_without_success() -> None:
    env = agentgym.make("chess-endgames", fens=[MATE_OR_STALEMATE], max_turns=2)
    env.reset(options={"task": "fen-0000"})
    env.step("nonsense")
    obs, reward, terminated, truncated, info = env.step("Qg2")
    assert truncated and not terminated and info["success"] is False
    env.close()


def test_generator_is_deterministic_and_every_position_playable() -> None:
    for kind in KINDS:
        boards = [candidate(kind, i, seed=7) for i in range(50)]
        assert [b.fen() for b in boards] == [candidate(kind, i, seed=7).fen() for i in range(50)]
        assert all(is_playable(b) for b in boards) and len({b.fen() for b in boards}) == 50
        assert candidate(kind, 0, seed=7).fen() != candidate(kind, 0, seed=8).fen()
    bishops = candidate("kbbk", 3, seed=7).pieces(chess.BISHOP, chess.WHITE)
    assert len({bool(chess.BB_SQUARES[s] & chess.BB_LIGHT_SQUARES) for s in bishops}) == 2


def test_a_rejected_candidate_is_redrawn_for_its_index_alone() -> None:
    seen: list[str] = []
    board, result = find_position("krk", 4, 0, lambda b: seen.append(b.fen()) or (len(seen) if len(seen) > 1 else None))
    assert result == 2 and board.fen() == candidate("krk", 4, 0, attempt=1).fen() != seen[0]
    with pytest.raises(AgentGymError, match="raise walkthrough_nodes or max_turns"):
        find_position("krk", 4, 0, lambda b: None, max_attempts=3)


def test_solving_is_deterministic_across_envs() -> None:
    first, second = (agentgym.make("chess-endgames", kinds="krk", seed=3).unwrapped for _ in range(2))
    assert first.solve("krk-0001") == second.solve("krk-0001")  # solve() bypasses the shared cache
    first.close(), second.close()


def test_walkthrough_mates_on_a_sample_of_each_kind() -> None:
    env = agentgym.make("chess-endgames", num_positions=2, seed=11)
    for task in env.unwrapped.task_ids():
        _, start = env.reset(options={"task": task})
        assert is_playable(chess.Board(start["fen"])) and start["kind"] == task.split("-")[0]
        for move in start["walkthrough"]:
            obs, reward, terminated, truncated, info = env.step(move)
            assert info["signals"]["valid_action"] is True
        assert terminated and reward == 1.0 and info["success"] is True, (task, start["walkthrough"], obs)
    env.close()


def test_no_stockfish_survives_close_or_garbage_collection() -> None:
    env = agentgym.make("chess-endgames", fens=[MATE_OR_STALEMATE])
    env.reset(options={"task": "fen-0000"})
    env.step("Qg2")
    assert _stockfish_children()  # the opponent and the solver are running
    env.close()
    assert _wait_for_no_stockfish() == []
    dropped = agentgym.make("chess-endgames", fens=[MATE_OR_STALEMATE])
    dropped.reset(options={"task": "fen-0000"})
    dropped.step("Qg2")
    alive = weakref.ref(dropped.unwrapped)
    del dropped
    gc.collect()
    assert alive() is None and _wait_for_no_stockfish() == []


def test_missing_stockfish_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(EnvConfigError, match=r"apt-get install stockfish"):
        agentgym.make("chess-endgames", stockfish_path=str(tmp_path / "no-stockfish"))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(chess_endgames, "DEBIAN_GAMES_DIR", str(tmp_path))
    with pytest.raises(EnvConfigError, match=r"no `stockfish` on PATH or in .*Debian/Ubuntu package `stockfish`"):
        agentgym.make("chess-endgames")


def test_bad_options_are_config_errors() -> None:
    with pytest.raises(EnvConfigError, match="unknown endgame kinds"):
        agentgym.make("chess-endgames", kinds="kqk,kpk")
    env = agentgym.make("chess-endgames", fens=f"{MATE_OR_STALEMATE};{MATE_OR_STALEMATE}")  # as --env-opt gives it
    assert env.unwrapped.task_ids() == ["fen-0000", "fen-0001"]
    env.close()
    with pytest.raises(EnvConfigError, match="not a legal position"):
        agentgym.make("chess-endgames", fens=["7k/5K2/8/8/8/8/8/6Q1 b - - 0 1"])  # Black to move
