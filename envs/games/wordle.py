"""Wordle: find a hidden five-letter word in six guesses from per-letter feedback.

Rules as in the real game: each letter of a guess is marked G (right letter, right place),
Y (in the word, elsewhere) or . (not in the word). Repeated letters are marked like the real
game: greens first, then yellows left to right up to the number of copies the answer has left.

Design (documented for the README and the eval configs):
- Words come from `data/wordle-words.txt`, written by this project: the words before its
  `# guesses only` line are the answers (and accepted guesses); the rarer words after it are
  accepted guesses only. Nothing is fetched.
- A reply that is not a five-letter word of the list is answered with `valid_action: False`
  and is not a guess. It still takes a turn of the base class, so `max_turns` (default 10)
  bounds the turns and `max_guesses` (default 6) the real guesses.
- Reward 1.0 on solving, 0 otherwise; no bonus for fewer guesses.
- The walkthrough is an entropy-maximising solver replayed against the known answer.
"""

from __future__ import annotations

import random
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from agentgym.env import EpisodeStart, StepOutcome, TextEnv
from agentgym.errors import EnvConfigError

WORD_LENGTH = 5
DEFAULT_WORDS = Path(__file__).with_name("data") / "wordle-words.txt"
_GUESSES_ONLY_MARK = "# guesses only"
# Feedback is coded as a base-3 number, one digit per position (0 = absent, 1 = yellow, 2 = green).
_MARKS = {0: ".", 1: "Y", 2: "G"}
_POWERS = 3 ** np.arange(WORD_LENGTH)
# Solver guesses are cut here: the entropy solver needs at most 6 on the shipped list, and a
# custom list must not make a reset loop for long.
_MAX_SOLVER_GUESSES = 12

LEGEND = (
    "G = right letter in the right place, Y = in the word but in another place, "
    ". = not in the word (or no more copies of it)"
)
INSTRUCTIONS = (
    "You are playing Wordle. Each turn reply with exactly one guess: a five-letter English word, "
    "such as 'crane'. Reply with the word only: no explanation, no quotes."
)


# -- feedback --------------------------------------------------------------------------


def feedback(guess: str, answer: str) -> str:
    """The marks of `guess` against `answer`, one of G/Y/. per letter (as real Wordle marks repeats)."""
    if len(guess) != len(answer):
        raise ValueError(f"guess {guess!r} and answer {answer!r} differ in length")
    marks = ["."] * len(guess)
    unmatched: Counter[str] = Counter()
    for i, (g, a) in enumerate(zip(guess, answer)):
        if g == a:
            marks[i] = "G"
        else:
            unmatched[a] += 1
    # Yellows go left to right while the answer has copies of the letter left over after the greens.
    for i, g in enumerate(guess):
        if marks[i] != "G" and unmatched[g] > 0:
            marks[i] = "Y"
            unmatched[g] -= 1
    return "".join(marks)


def pattern_code(marks: str) -> int:
    """The base-3 code of a feedback string such as 'GY..G' (the codes of `pattern_matrix`)."""
    digits = {".": 0, "Y": 1, "G": 2}
    return sum(digits[m] * 3**i for i, m in enumerate(marks))


def pattern_marks(code: int) -> str:
    """The feedback string of a base-3 code: the inverse of `pattern_code`."""
    return "".join(_MARKS[(code // 3**i) % 3] for i in range(WORD_LENGTH))


def _letters(words: Sequence[str]) -> np.ndarray:
    """The words as an (n, 5) array of byte codes."""
    return np.frombuffer("".join(words).encode("ascii"), dtype=np.uint8).reshape(len(words), WORD_LENGTH)


def pattern_matrix(guesses: Sequence[str], answers: Sequence[str]) -> np.ndarray:
    """Feedback codes of every guess (rows) against every answer (columns), as uint8."""
    g, a = _letters(guesses), _letters(answers)
    green = g[:, None, :] == a[None, :, :]
    code = np.where(green, 2, 0).astype(np.int32) * _POWERS
    for i in range(WORD_LENGTH):
        letter = g[:, i][:, None]
        # A non-green letter is yellow while the answer's non-green copies of it outnumber the
        # guess's earlier non-green copies, which took theirs first (left to right, as in Wordle).
        available = sum(((a[None, :, k] == letter) & ~green[:, :, k]) for k in range(WORD_LENGTH))
        taken = sum(((g[:, j] == g[:, i])[:, None] & ~green[:, :, j]) for j in range(i))
        yellow = ~green[:, :, i] & (np.asarray(available) > np.asarray(taken))
        code[:, :, i] += yellow * _POWERS[i]
    return code.sum(axis=2).astype(np.uint8)


# -- the word list ---------------------------------------------------------------------


@dataclass(frozen=True)
class WordList:
    """The answers (sorted) and the accepted guesses (the answers first, then the guess-only words)."""

    answers: tuple[str, ...]
    guesses: tuple[str, ...]
    index: dict[str, int] = field(repr=False, compare=False, default_factory=dict)


@lru_cache(maxsize=8)
def load_words(path: str = str(DEFAULT_WORDS)) -> WordList:
    """Read a word file: one word a line, '#' comments, answers before the '# guesses only' line."""
    answers: list[str] = []
    extra: list[str] = []
    target = answers
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip().lower()
        if line == _GUESSES_ONLY_MARK:
            target = extra
            continue
        if not line or line.startswith("#"):
            continue
        if len(line) != WORD_LENGTH or not line.isascii() or not line.isalpha():
            raise EnvConfigError(f"words_file {path}: line {number} ({raw!r}) is not a five-letter word")
        target.append(line)
    if not answers:
        raise EnvConfigError(f"words_file {path} has no answers (words before the '{_GUESSES_ONLY_MARK}' line)")
    sorted_answers = tuple(sorted(set(answers)))
    guesses = sorted_answers + tuple(sorted(set(extra) - set(sorted_answers)))
    return WordList(sorted_answers, guesses, {w: i for i, w in enumerate(guesses)})


# -- the entropy solver ----------------------------------------------------------------


class EntropySolver:
    """Guesses the word whose feedback has the most expected information over the answers still possible."""

    def __init__(self, words: WordList) -> None:
        self.words = words
        self.matrix = pattern_matrix(words.guesses, words.answers)
        # The next guess depends only on the feedback seen so far: memoised on that history, the
        # solver's decision tree is computed once per branch, not once per answer.
        self._next: dict[tuple[int, ...], int] = {}
        self._solutions: dict[str, tuple[str, ...]] = {}
        self._lock = threading.Lock()  # envs of the rollout engine's threads share one solver

    def best_guess(self, candidates: np.ndarray) -> int:
        """The row of the guess with the highest feedback entropy over `candidates` (answer columns).

        Ties go to a guess that could itself be the answer, then to the earlier word.
        """
        rows = len(self.words.guesses)
        if len(candidates) <= 2:  # a candidate already splits one or two words as well as any guess can
            return int(candidates[0])
        entropy = _row_entropies(self.matrix[:, candidates])
        is_candidate = np.zeros(rows, dtype=bool)
        is_candidate[candidates] = True  # answers are the first rows of the guess list
        best = np.flatnonzero(entropy >= entropy.max() - 1e-9)
        preferred = best[is_candidate[best]]
        return int(preferred[0] if preferred.size else best[0])

    def first_guess(self) -> int:
        """The opening guess, computed once: it is the same for every answer."""
        return self._next_guess((), np.arange(len(self.words.answers)))

    def _next_guess(self, history: tuple[int, ...], candidates: np.ndarray) -> int:
        """The guess after the feedback codes `history`, which leave `candidates` (memoised)."""
        if history not in self._next:
            self._next[history] = self.best_guess(candidates)
        return self._next[history]

    def solve(self, answer: str) -> tuple[str, ...]:
        """The guesses the solver plays against `answer`, the last one being `answer` (cached)."""
        with self._lock:
            if answer not in self._solutions:
                self._solutions[answer] = self._play(answer)
            return self._solutions[answer]

    def _play(self, answer: str) -> tuple[str, ...]:
        target = self.words.answers.index(answer)
        candidates = np.arange(len(self.words.answers))
        played: list[str] = []
        history: tuple[int, ...] = ()
        row = self.first_guess()
        while len(played) < _MAX_SOLVER_GUESSES:
            played.append(self.words.guesses[row])
            if row == target:
                break
            code = self.matrix[row, target]
            candidates = candidates[self.matrix[row, candidates] == code]
            history += (int(code),)
            row = self._next_guess(history, candidates)
        return tuple(played)


def _row_entropies(codes: np.ndarray) -> np.ndarray:
    """The Shannon entropy (bits) of the values in each row of `codes`, from the runs of the sorted rows."""
    n_rows, n_cols = codes.shape
    ordered = np.sort(codes, axis=1)
    starts = np.ones_like(ordered, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    where = np.flatnonzero(starts)
    runs = np.diff(np.append(where, n_rows * n_cols))  # rows always start a run, so no run crosses rows
    p = runs / n_cols
    return np.bincount(where // n_cols, weights=-p * np.log2(p), minlength=n_rows)


_SOLVERS_LOCK = threading.Lock()


def solver_for(path: str = str(DEFAULT_WORDS)) -> EntropySolver:
    """The solver of a word file, built once per process even when envs reset from many threads."""
    with _SOLVERS_LOCK:
        return _build_solver(path)


@lru_cache(maxsize=8)
def _build_solver(path: str) -> EntropySolver:
    """Build a solver: its pattern matrix takes most of a second on the shipped list."""
    return EntropySolver(load_words(path))


def normalise_guess(text: str) -> str:
    """The guess in a reply: the letters of its first non-empty line, lower-case ('C R A N E.' -> 'crane')."""
    for line in text.strip().splitlines():
        letters = re.sub(r"[^a-z]", "", line.lower())
        if letters:
            return letters
    return ""


# -- the env ---------------------------------------------------------------------------


class WordleEnv(TextEnv):
    """Wordle on the project's word list: one task per answer, ids `wordle-0000` ... in a fixed shuffled order."""

    def __init__(
        self,
        max_guesses: int = 6,
        max_turns: int = 10,
        words_file: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        if int(max_guesses) < 1:
            raise EnvConfigError(f"max_guesses must be at least 1, got {max_guesses}")
        if int(max_turns) < int(max_guesses):
            raise EnvConfigError(f"max_turns ({max_turns}) must be at least max_guesses ({max_guesses})")
        super().__init__(max_turns=int(max_turns), render_mode=render_mode)
        self.max_guesses = int(max_guesses)
        self.words_file = str(Path(words_file).expanduser().resolve()) if words_file else str(DEFAULT_WORDS)
        if not Path(self.words_file).is_file():
            raise EnvConfigError(f"words_file {self.words_file} does not exist")
        self.words = load_words(self.words_file)
        # Task order is a fixed shuffle so that the first tasks (what `eval --episodes 50` plays)
        # are a spread of the list, not fifty words starting with 'a'.
        order = list(self.words.answers)
        random.Random(0).shuffle(order)
        self._tasks = {f"wordle-{i:04d}": word for i, word in enumerate(order)}
        self._answer = ""
        self._board: list[tuple[str, str]] = []
        self._candidates = np.arange(0)

    def task_ids(self) -> Sequence[str]:
        """One task per answer word."""
        return list(self._tasks)

    def start(self, task_id: str) -> EpisodeStart:
        """A fresh board for the task's answer, with the solver's guesses as the walkthrough."""
        self._answer = self._tasks[task_id]
        self._board = []
        self._candidates = np.arange(len(self.words.answers))
        walkthrough = list(solver_for(self.words_file).solve(self._answer)[: self.max_guesses])
        observation = (
            f"Guess the hidden five-letter English word. You have {self.max_guesses} guesses. "
            f"After each guess every letter is marked: {LEGEND}. A letter that appears twice in your guess "
            "but once in the word is marked only once. Replies that are not five-letter words of the "
            "game's list are refused and do not use up a guess."
        )
        return EpisodeStart(
            observation=observation,
            instructions=INSTRUCTIONS,
            info={"walkthrough": walkthrough, "answer": self._answer, "max_guesses": self.max_guesses},
        )

    def act(self, action: str) -> StepOutcome:
        """Mark a valid guess and filter the candidates; refuse anything else without using a guess."""
        guess = normalise_guess(action)
        problem = self._problem(guess)
        if problem:
            left = self.max_guesses - len(self._board)
            text = f"{problem} That did not count as a guess; you have {left} left. Reply with one five-letter word."
            return StepOutcome(observation=self._with_board(text), signals=self._signals(False))
        marks = feedback(guess, self._answer)
        self._board.append((guess, marks))
        row = self.words.index[guess]
        code = pattern_code(marks)
        self._candidates = self._candidates[solver_for(self.words_file).matrix[row, self._candidates] == code]
        solved = guess == self._answer
        out_of_guesses = len(self._board) >= self.max_guesses
        if solved:
            text = f"Solved! The word was {self._answer.upper()}, found in {len(self._board)} guesses."
        elif out_of_guesses:
            text = f"Out of guesses. The word was {self._answer.upper()}."
        else:
            text = f"Guess {len(self._board)} of {self.max_guesses}: {_spaced(guess)}"
        return StepOutcome(
            observation=self._with_board(text),
            reward=1.0 if solved else 0.0,
            terminated=solved or out_of_guesses,
            success=True if solved else (False if out_of_guesses else None),
            signals=self._signals(True),
            info={"guess": guess, "feedback": marks},
        )

    def _problem(self, guess: str) -> str:
        """Why `guess` cannot be played, or '' when it can."""
        if not guess:
            return "Your reply contained no word."
        if len(guess) != WORD_LENGTH:
            return f"'{guess}' is not a five-letter word."
        if guess not in self.words.index:
            return f"'{guess}' is not in the game's word list."
        return ""

    def _signals(self, valid: bool) -> dict[str, Any]:
        """The step signals: validity, guesses used, answers still possible, greens of the latest guess."""
        greens = self._board[-1][1].count("G") if self._board else 0
        return {
            "valid_action": valid,
            "guesses_used": len(self._board),
            "candidates_left": int(len(self._candidates)),
            "greens": greens,
        }

    def _with_board(self, text: str) -> str:
        """`text` followed by every guess so far with its marks, and the letters known to be absent."""
        if not self._board:
            return text
        lines = [text, "", f"Board ({LEGEND}):"]
        lines += [f"{n}. {_spaced(g)}   {' '.join(m)}" for n, (g, m) in enumerate(self._board, 1)]
        absent = _absent_letters(self._board)
        lines.append(f"Letters not in the word: {', '.join(absent).upper() if absent else 'none known yet'}")
        lines.append(f"Guesses left: {self.max_guesses - len(self._board)}")
        return "\n".join(lines)


def _spaced(word: str) -> str:
    """'crane' -> 'C R A N E', aligned with its marks."""
    return " ".join(word.upper())


def _absent_letters(board: Sequence[tuple[str, str]]) -> list[str]:
    """Letters guessed that never got G or Y: the answer has none of them.

    A '.' on a repeated letter only says there are no more copies, so a letter counts as
    absent only when none of its marks on the board is G or Y.
    """
    seen = {g for guess, _ in board for g in guess}
    present = {g for guess, marks in board for g, m in zip(guess, marks) if m != "."}
    return sorted(seen - present)
