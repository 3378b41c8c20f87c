"""The engine-free half of chess-endgames: the seeded position generator, move parsing and the end-of-game rules."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import TypeVar

import chess

from agentgym.errors import AgentGymError, EnvConfigError

# White's pieces besides the king, per kind; Black has a bare king in every kind. KP v K is
# left out: whether a pawn ending is won needs a tablebase or deep search to tell.
KINDS: dict[str, tuple[chess.PieceType, ...]] = {
    "kqk": (chess.QUEEN,),
    "krk": (chess.ROOK,),
    "kbbk": (chess.BISHOP, chess.BISHOP),
}
DEFAULT_KINDS: tuple[str, ...] = tuple(KINDS)

# Random placements that are illegal or already over are redrawn; legal ones are the vast majority.
_MAX_DRAWS = 1000

PIECE_VALUES = {chess.PAWN: 1, chess.KNIGHT: 3, chess.BISHOP: 3, chess.ROOK: 5, chess.QUEEN: 9, chess.KING: 0}

_MOVE_NUMBER = re.compile(r"^\d+\.+")
_SQUARE_PAIR = re.compile(r"^([a-h][1-8])[-x]?([a-h][1-8])([qrbn]?)$")
_LOWER_SAN = re.compile(r"^[kqrbn][a-h]?[1-8]?x?[a-h][1-8]$")
_TASK_ID = re.compile(r"^([a-z]+)-(\d{4,})$")

T = TypeVar("T")


def parse_kinds(kinds: str | Sequence[str]) -> list[str]:
    """The kinds named in a list or a comma-separated string, checked against `KINDS`, in the order given."""
    names = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    cleaned = [str(n).strip().lower() for n in names if str(n).strip()]
    unknown = [n for n in cleaned if n not in KINDS]
    if unknown or not cleaned:
        raise EnvConfigError(f"unknown endgame kinds {unknown or kinds!r}; choose from {', '.join(KINDS)}")
    return list(dict.fromkeys(cleaned))  # a kind named twice is one kind


def task_id(kind: str, index: int) -> str:
    """The task id of position `index` of `kind`, e.g. `krk-0012`."""
    return f"{kind}-{index:04d}"


def parse_task_id(task: str) -> tuple[str, int]:
    """The kind and index in a task id made by `task_id`."""
    match = _TASK_ID.match(task)
    if match is None or match.group(1) not in KINDS:
        raise ValueError(f"not a generated chess task id: {task!r}")
    return match.group(1), int(match.group(2))


def is_playable(board: chess.Board) -> bool:
    """Legal, White to move, and not already over (mate, stalemate, a dead position)."""
    return board.turn == chess.WHITE and board.is_valid() and not board.is_game_over()


def candidate(kind: str, index: int, seed: int, attempt: int = 0) -> chess.Board:
    """A random playable position of `kind`, the same for the same (kind, index, seed, attempt).

    Each position has its own generator, seeded from a string (Python seeds those through
    SHA-512, independent of PYTHONHASHSEED), so discarding one position never shifts another.
    """
    rng = random.Random(f"chess-endgames:{seed}:{kind}:{index}:{attempt}")
    for _ in range(_MAX_DRAWS):
        board = _random_placement(rng, KINDS[kind])
        if is_playable(board):
            return board
    raise AgentGymError(f"no playable {kind} position in {_MAX_DRAWS} draws (seed {seed}, index {index})")


def find_position(
    kind: str, index: int, seed: int, accept: Callable[[chess.Board], T | None], max_attempts: int = 20
) -> tuple[chess.Board, T]:
    """The first candidate of (kind, index, seed) that `accept` returns a result for, with that result."""
    for attempt in range(max_attempts):
        board = candidate(kind, index, seed, attempt)
        result = accept(board.copy())
        if result is not None:
            return board, result
    raise AgentGymError(
        f"none of {max_attempts} {kind} candidates for index {index} (seed {seed}) was accepted; "
        "raise walkthrough_nodes or max_turns so the engine can mate within the limit"
    )


def parse_move(board: chess.Board, text: str) -> chess.Move | None:
    """The first legal move, in SAN or UCI, among the words of the reply's first non-empty line; None if none."""
    line = next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    for word in line.split():
        move = _parse_word(board, word)
        if move is not None:
            return move
    return None


def _parse_word(board: chess.Board, word: str) -> chess.Move | None:
    word = _MOVE_NUMBER.sub("", word.strip("`'\"*()[]<>")).rstrip(".,;:!?+#")
    if not word:
        return None
    pair = _SQUARE_PAIR.match(word.lower())
    attempts = [word]
    if pair:  # UCI, also written e2-e4, E2E4 or e7xe8q
        attempts.append("".join(pair.groups()))
    if _LOWER_SAN.match(word):  # qe7: SAN with the piece letter in lower case
        attempts.append(word[0].upper() + word[1:])
    for attempt in attempts:
        for parse in (board.parse_san, board.parse_uci):
            try:
                move = parse(attempt)
            except ValueError:  # python-chess's Invalid/Illegal/AmbiguousMoveError are ValueErrors
                continue
            if move and move in board.legal_moves:  # a null move (`--`, `0000`) is falsy
                return move
    return None


def game_over_reason(board: chess.Board) -> str | None:
    """Why the game is over now, checked without tablebases, or None while it goes on."""
    if board.is_checkmate():
        return "checkmate"
    if board.is_stalemate():
        return "stalemate"
    if board.is_insufficient_material():
        return "insufficient material to mate"
    if board.is_fifty_moves():
        return "the fifty-move rule"
    if board.is_repetition(3):
        return "threefold repetition"
    return None


def material_balance(board: chess.Board) -> int:
    """White's material minus Black's, in pawns (Q 9, R 5, B and N 3, P 1)."""
    return sum(PIECE_VALUES[p.piece_type] * (1 if p.color == chess.WHITE else -1) for p in board.piece_map().values())


def _random_placement(rng: random.Random, pieces: tuple[chess.PieceType, ...]) -> chess.Board:
    board = chess.Board(None)
    free = list(chess.SQUARES)
    rng.shuffle(free)
    board.set_piece_at(free.pop(), chess.Piece(chess.KING, chess.WHITE))
    board.set_piece_at(free.pop(), chess.Piece(chess.KING, chess.BLACK))
    first_bishop: chess.Square | None = None
    for piece in pieces:
        square = free.pop()
        if piece == chess.BISHOP and first_bishop is not None:
            # Two bishops on squares of one colour cannot mate; put the second on the other colour.
            square = next(s for s in free if _colour(s) != _colour(first_bishop))
            free.remove(square)
        elif piece == chess.BISHOP:
            first_bishop = square
        board.set_piece_at(square, chess.Piece(piece, chess.WHITE))
    board.turn = chess.WHITE
    return board


def _colour(square: chess.Square) -> bool:
    return bool(chess.BB_SQUARES[square] & chess.BB_LIGHT_SQUARES)
