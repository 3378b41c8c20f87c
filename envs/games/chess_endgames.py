"""Chess endgames against Stockfish, LMRL-Gym style: the agent plays White with mating material and must mate.

Rules of the episode:
- Positions come from a seeded generator (`chess_positions`); one is kept only when Stockfish
  at `walkthrough_nodes` mates the opponent from it within `max_turns` moves, and that game is
  the walkthrough, so the walkthrough wins every task by construction. No tablebases are used.
- The opponent is Stockfish with Threads=1, a fixed node budget and a fresh `ucinewgame`
  before every search: its reply is a function of the game so far, so a replay is exact.
- Reward 1.0 when the agent's move mates (whatever the game's length), else 0. Stalemate,
  a capture leaving too little material, the fifty-move rule or threefold repetition ends
  the episode (terminated) with 0; `max_turns` agent replies, illegal ones included,
  truncate it.
"""

from __future__ import annotations

import os
import shutil
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import chess
import chess.engine

from agentgym.env import EpisodeStart, StepOutcome, TextEnv
from agentgym.envs.games.chess_positions import (
    DEFAULT_KINDS,
    find_position,
    game_over_reason,
    is_playable,
    material_balance,
    parse_kinds,
    parse_move,
    parse_task_id,
    task_id,
)
from agentgym.errors import EnvConfigError

DEBIAN_GAMES_DIR = "/usr/games"  # where Debian's `stockfish` package installs, often not on PATH
# A deadline on each search, far above what the node budgets take (milliseconds), so a hung
# engine raises instead of hanging a rollout worker; it never decides a move in practice.
MOVE_DEADLINE_S = 60.0
ENGINE_HASH_MB = 16  # fixed: the hash size changes which entries survive, hence the moves


def find_stockfish(path: str | None = None) -> str:
    """The Stockfish binary: `path` if given, else `stockfish` on PATH or in /usr/games; a clear error if absent."""
    if path:
        found = shutil.which(path)  # a path, or a name looked up on PATH
    else:
        found = shutil.which("stockfish", path=os.environ.get("PATH", "") + os.pathsep + DEBIAN_GAMES_DIR)
    if found is None:
        where = f"{path!r} is not an executable program" if path else f"no `stockfish` on PATH or in {DEBIAN_GAMES_DIR}"
        raise EnvConfigError(
            f"chess-endgames needs the Stockfish engine: {where}; install it with "
            "`apt-get install stockfish` (Debian/Ubuntu package `stockfish`) or pass stockfish_path=..."
        )
    return found


class _Engine:
    """One Stockfish process, started on first use, searching a fixed number of nodes on one thread."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._engine: chess.engine.SimpleEngine | None = None
        self._lock = threading.Lock()

    def best_move(self, board: chess.Board, nodes: int, game: object) -> chess.Move:
        """Stockfish's move after `nodes` nodes; a new `game` object clears its hash and history first."""
        engine = self._started()
        result = engine.play(board, chess.engine.Limit(nodes=nodes, time=MOVE_DEADLINE_S), game=game)
        if result.move is None:
            raise chess.engine.EngineError(f"Stockfish returned no move in {board.fen()}")
        return result.move

    def close(self) -> None:
        """Ask the engine to quit (with the engine's own deadline), then make sure its process is gone."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            try:
                engine.quit()
            finally:
                engine.close()

    def kill(self) -> None:
        """Stop the process without waiting (garbage collection and interpreter exit may not block)."""
        engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()

    def _started(self) -> chess.engine.SimpleEngine:
        with self._lock:
            if self._engine is None:
                self._engine = chess.engine.SimpleEngine.popen_uci(self.path, timeout=30.0)
                self._engine.configure({"Threads": 1, "Hash": ENGINE_HASH_MB})
                _track(self)
            return self._engine


_LIVE_ENGINES: weakref.WeakSet[_Engine] = weakref.WeakSet()
_EXIT_HOOK_LOCK = threading.Lock()
_exit_hook_registered = False


def _track(engine: _Engine) -> None:
    """Kill live engines before the interpreter joins its threads at exit.

    python-chess runs each engine's event loop in a non-daemon thread that ends only when the
    process does, and the process waits for its stdin, which closes only at exit: an env left
    unclosed would hang the interpreter. `atexit` runs after the join, too late; threading's
    own pre-join hook (private, present since Python 3.9) runs before it.
    """
    global _exit_hook_registered
    _LIVE_ENGINES.add(engine)
    with _EXIT_HOOK_LOCK:
        if not _exit_hook_registered:
            register = getattr(threading, "_register_atexit", None)
            if register is not None:
                register(_kill_live_engines)
            _exit_hook_registered = True


def _kill_live_engines() -> None:
    for engine in list(_LIVE_ENGINES):
        engine.kill()


def _kill_all(engines: tuple[_Engine, ...]) -> None:
    for engine in engines:
        engine.kill()


def opponent_reply(engine: _Engine, board: chess.Board, nodes: int) -> chess.Move:
    """The opponent's move: a fresh game per search, so it depends on nothing but the moves so far."""
    return engine.best_move(board, nodes, game=object())


def play_out(board: chess.Board, solver: _Engine, opponent: _Engine, solver_nodes: int, opponent_nodes: int, max_moves: int) -> list[str] | None:
    """White's moves in SAN if the solver mates the opponent within `max_moves` of its own, else None."""
    board = board.copy()
    game = object()  # one game for the solver: its hash carries over between its moves, which it needs in KR v K
    moves: list[str] = []
    for _ in range(max_moves):
        move = solver.best_move(board, solver_nodes, game)
        moves.append(board.san(move))
        board.push(move)
        if board.is_checkmate():
            return moves
        if game_over_reason(board) is not None:
            return None
        board.push(opponent_reply(opponent, board, opponent_nodes))
        if game_over_reason(board) is not None:
            return None
    return None


@dataclass(frozen=True)
class SolvedPosition:
    """A start position and the walkthrough that mates from it."""

    fen: str
    walkthrough: tuple[str, ...]
    kind: str | None


# Solving a position costs a Stockfish game (about a second); the result depends only on the key,
# so every env in the process shares it (the rollout engine builds one env per worker).
_SOLVED: dict[tuple[object, ...], SolvedPosition] = {}
_SOLVED_LOCK = threading.Lock()

INSTRUCTIONS = (
    "You are playing chess as White against a chess engine playing Black, in an endgame you can win. "
    "Each turn you see the board and reply with exactly one legal move, in SAN (such as Qe7+ or Kd2) "
    "or UCI (such as e2e4 or e7e8q). Reply with the move only. Checkmate Black within {max_turns} moves: "
    "stalemate, losing your pieces, threefold repetition or the fifty-move rule is a draw and scores nothing."
)


class ChessEndgamesEnv(TextEnv):
    """Mate a bare king with KQ, KR or KBB against Stockfish; task ids like `kqk-0007`, or `fen-0000` for given FENs."""

    def __init__(
        self,
        kinds: str | Sequence[str] = DEFAULT_KINDS,
        num_positions: int = 50,
        seed: int = 0,
        fens: str | Sequence[str] | None = None,
        opponent_nodes: int = 2000,
        walkthrough_nodes: int = 50000,
        max_turns: int = 40,
        show_legal_moves: bool = True,
        stockfish_path: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(max_turns=int(max_turns), render_mode=render_mode)
        if int(num_positions) < 1 or int(opponent_nodes) < 1 or int(walkthrough_nodes) < 1:
            raise EnvConfigError("num_positions, opponent_nodes and walkthrough_nodes must be at least 1")
        self.kinds = parse_kinds(kinds)
        self.num_positions = int(num_positions)
        self.positions_seed = int(seed)  # not `seed`: reset's seed picks tasks, this one makes them
        if isinstance(fens, str):  # from the command line: FENs hold spaces and slashes, never ';'
            fens = [f for f in fens.split(";") if f.strip()]
        self.fens = [_checked_fen(f) for f in fens] if fens is not None else None
        self.opponent_nodes = int(opponent_nodes)
        self.walkthrough_nodes = int(walkthrough_nodes)
        self.show_legal_moves = bool(show_legal_moves)
        self.stockfish_path = find_stockfish(stockfish_path)  # fail at construction, before any episode
        self._opponent = _Engine(self.stockfish_path)
        self._solver = _Engine(self.stockfish_path)  # its own process: sharing would disturb the opponent's state
        # Not `self._close_engines`: a finalizer holding the env would keep it alive forever.
        self._finalizer = weakref.finalize(self, _kill_all, (self._opponent, self._solver))
        self._board = chess.Board()
        self._moves_played = 0

    def task_ids(self) -> Sequence[str]:
        """Generated positions interleaved by kind (kqk-0000, krk-0000, ...), or one `fen-NNNN` per given FEN."""
        if self.fens is not None:
            return [f"fen-{i:04d}" for i in range(len(self.fens))]
        return [task_id(kind, i) for i in range(self.num_positions) for kind in self.kinds]

    def solve(self, task: str) -> SolvedPosition:
        """Generate and solve `task` now, uncached: its start FEN and the walkthrough game."""
        if self.fens is not None:
            fen = self._given_fen(task)
            return SolvedPosition(fen, tuple(self._mates(chess.Board(fen)) or ()), None)  # played even if unsolved
        kind, index = parse_task_id(task)
        board, moves = find_position(kind, index, self.positions_seed, self._mates)
        return SolvedPosition(board.fen(), tuple(moves), kind)

    def start(self, task_id: str) -> EpisodeStart:
        """Set up the task's position (solved once per process) with a fresh game for the opponent."""
        solved = self._solved(task_id)
        self._board = chess.Board(solved.fen)
        self._moves_played = 0
        text = f"You play White and have the first move.\n\n{self._describe()}"
        return EpisodeStart(
            observation=text,
            instructions=INSTRUCTIONS.format(max_turns=self.max_turns),
            admissible_actions=self._legal_san(),
            info={"walkthrough": list(solved.walkthrough), "answer": None, "fen": solved.fen, "kind": solved.kind},
        )

    def act(self, action: str) -> StepOutcome:
        """Play the agent's move, then the opponent's reply unless the game is over."""
        move = parse_move(self._board, action)
        if move is None:
            return self._invalid(action)
        san = self._board.san(move)
        self._board.push(move)
        self._moves_played += 1
        in_check = self._board.is_check()
        reason = game_over_reason(self._board)
        reply = None
        if reason is None:
            reply_move = opponent_reply(self._opponent, self._board, self.opponent_nodes)
            reply = self._board.san(reply_move)
            self._board.push(reply_move)
            reason = game_over_reason(self._board)
        won = reason == "checkmate"
        return StepOutcome(
            observation=self._after_move(san, reply, reason),
            reward=1.0 if won else 0.0,
            terminated=reason is not None,
            success=won if reason is not None else None,
            signals=self._signals(valid=True, in_check=in_check),
            admissible_actions=[] if reason else self._legal_san(),
            info={"fen": self._board.fen(), "move": san, "opponent_move": reply, "game_over": reason},
        )

    def close(self) -> None:
        """Stop both Stockfish processes."""
        self._finalizer.detach()
        for engine in (self._opponent, self._solver):
            engine.close()
        super().close()

    def _given_fen(self, task: str) -> str:
        return self.fens[int(task.removeprefix("fen-"))] if self.fens is not None else ""

    def _mates(self, board: chess.Board) -> list[str] | None:
        return play_out(board, self._solver, self._opponent, self.walkthrough_nodes, self.opponent_nodes, self.max_turns)

    def _solved(self, task: str) -> SolvedPosition:
        which = self._given_fen(task) if self.fens is not None else (task, self.positions_seed)
        key = (self.stockfish_path, which, self.opponent_nodes, self.walkthrough_nodes, self.max_turns)
        with _SOLVED_LOCK:
            cached = _SOLVED.get(key)
        if cached is None:  # solved outside the lock: two envs racing on one task both get the same answer
            cached = self.solve(task)
            with _SOLVED_LOCK:
                _SOLVED[key] = cached
        return cached

    def _invalid(self, action: str) -> StepOutcome:
        reply = action.strip().splitlines()[0][:40] if action.strip() else ""
        text = (
            f"{reply!r} is not a legal move here. Reply with one move in SAN or UCI. "
            f"Legal moves: {', '.join(self._legal_san())}\n\n{self._describe(with_moves=False)}"
        )
        return StepOutcome(
            observation=text,
            signals=self._signals(valid=False, in_check=False),
            admissible_actions=self._legal_san(),
            info={"fen": self._board.fen(), "move": None, "opponent_move": None, "game_over": None},
        )

    def _after_move(self, san: str, reply: str | None, reason: str | None) -> str:
        if reason == "checkmate":
            head = f"You played {san}: checkmate. You win."
        elif reason is not None:
            answered = f" Black replied {reply}." if reply else ""
            head = f"You played {san}.{answered} The game is drawn by {reason}."
        else:
            head = f"You played {san}. Black replied {reply}."
        return f"{head}\n\n{self._describe(with_moves=reason is None)}"

    def _describe(self, with_moves: bool = True) -> str:
        board = self._board
        side = "White (you)" if board.turn == chess.WHITE else "Black"
        check = f"{side.split()[0]} is in check." if board.is_check() else "No king is in check."
        lines = [_ascii_board(board), f"FEN: {board.fen()}", f"Side to move: {side}", check]
        if with_moves and self.show_legal_moves:
            lines.append(f"Legal moves: {', '.join(self._legal_san())}")
        return "\n".join(lines)

    def _legal_san(self) -> list[str]:
        return sorted(self._board.san(m) for m in self._board.legal_moves)

    def _signals(self, *, valid: bool, in_check: bool) -> dict[str, object]:
        return {
            "valid_action": valid,
            "in_check": in_check,
            "material_balance": material_balance(self._board),
            "moves_played": self._moves_played,
        }


def _ascii_board(board: chess.Board) -> str:
    """python-chess's board text with rank numbers and file letters, White at the bottom."""
    files = "  a b c d e f g h"
    rows = [f"{8 - i} {row}" for i, row in enumerate(str(board).splitlines())]
    return "\n".join([*rows, files])


def _checked_fen(fen: str) -> str:
    try:
        board = chess.Board(fen)
    except ValueError as exc:
        raise EnvConfigError(f"bad FEN {fen!r}: {exc}") from None
    if not is_playable(board):
        raise EnvConfigError(f"FEN {fen!r} is not a legal position with White to move and the game still going")
    return board.fen()
