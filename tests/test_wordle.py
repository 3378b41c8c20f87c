"""Wordle: feedback on hand-worked cases, refused guesses, the entropy solver's walkthroughs."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

import agentgym
from agentgym.envs.games.wordle import (
    DEFAULT_WORDS,
    feedback,
    load_words,
    normalise_guess,
    pattern_code,
    pattern_marks,
    pattern_matrix,
    solver_for,
)
from agentgym.errors import EnvConfigError


def _wrong_guesses(answer: str, n: int) -> list[str]:
    """`n` words of the list that are not `answer`."""
    return [w for w in ("crane", "pious", "dwarf", "blunt", "stove", "ghost", "mirth") if w != answer][:n]


@pytest.mark.filterwarnings("ignore:.*alternative render modes")  # built by agentgym.make, so no gymnasium spec
def test_gymnasium_env_checker_passes_on_wordle() -> None:
    env = agentgym.make("wordle")
    check_env(env.unwrapped)
    env.close()


@pytest.mark.parametrize(
    ("guess", "answer", "marks"),
    [
        # A L L E Y / L L A M A: the second L is green; the first A and the other L are yellow
        # (the answer has two As but only one L left once the green L is taken).
        ("alley", "llama", "YGY.."),
        # L L A M A / A L L E Y: green L, the first L takes the answer's other L, only one A is yellow.
        ("llama", "alley", "YGY.."),
        # S P E E D / A B I D E: one E in the answer, so only the first E of the guess is yellow.
        ("speed", "abide", "..Y.Y"),
        # E E R I E / T H E M E: the last E is green and the first takes the answer's other E.
        ("eerie", "theme", "Y...G"),
        # R O B O T / F L O O R: the second O is green, the first O takes the other O.
        ("robot", "floor", "YY.G."),
        # S T E E L / E E R I E: neither E is in place; the answer has two left, both yellow.
        ("steel", "eerie", "..YY."),
        ("crane", "crane", "GGGGG"),
        ("crane", "pious", "....."),
    ],
)
def test_feedback_marks_repeated_letters_like_wordle(guess: str, answer: str, marks: str) -> None:
    assert feedback(guess, answer) == marks


def test_pattern_matrix_agrees_with_feedback_on_the_whole_list() -> None:
    words = load_words()
    guesses, answers = words.guesses, words.answers
    matrix = pattern_matrix(guesses, answers)
    assert matrix.shape == (len(guesses), len(answers))
    rng = random.Random(3)
    pairs = [(rng.randrange(len(guesses)), rng.randrange(len(answers))) for _ in range(5000)]
    pairs += [(guesses.index("alley"), answers.index("llama")), (guesses.index("robot"), answers.index("floor"))]
    for g, a in pairs:
        assert pattern_marks(int(matrix[g, a])) == feedback(guesses[g], answers[a])
    assert pattern_code(pattern_marks(200)) == 200


def test_word_list_has_at_least_500_common_answers_and_guess_only_words() -> None:
    words = load_words()
    assert len(words.answers) >= 500 and len(set(words.answers)) == len(words.answers)
    assert all(len(w) == 5 and w.isalpha() and w.islower() for w in words.guesses)
    assert words.guesses[: len(words.answers)] == words.answers  # the solver relies on this order
    assert len(words.guesses) > len(words.answers)


def test_entropy_solver_solves_the_whole_answer_list_in_six() -> None:
    solver = solver_for()
    began = time.perf_counter()
    lengths = [len(solver.solve(a)) for a in solver.words.answers]
    assert time.perf_counter() - began < 10
    assert all(solver.solve(a)[-1] == a for a in solver.words.answers)
    solved = sum(n <= 6 for n in lengths) / len(lengths)
    assert solved >= 0.99 and sum(lengths) / len(lengths) < 4.0


def test_walkthrough_wins_a_sample_of_tasks() -> None:
    env = agentgym.make("wordle")
    for task in env.task_ids()[:50]:
        _, info = env.reset(options={"task": task})
        for guess in info["walkthrough"]:
            _, reward, terminated, truncated, step = env.step(guess)
            assert step["signals"]["valid_action"] is True
        assert terminated and not truncated and step["success"] is True and reward == 1.0
        assert step["signals"]["candidates_left"] == 1 and step["signals"]["greens"] == 5
        assert info["walkthrough"][-1] == info["answer"]


def test_reset_is_fast_after_the_first() -> None:
    env = agentgym.make("wordle")
    env.reset(options={"task": "wordle-0000"})
    began = time.perf_counter()
    env.reset(options={"task": "wordle-0001"})
    assert time.perf_counter() - began < 0.1


def test_refused_guesses_do_not_use_a_guess_but_take_a_turn() -> None:
    env = agentgym.make("wordle", max_turns=8)
    _, info = env.reset(options={"task": "wordle-0000"})
    for reply, says in [("", "no word"), ("cat", "not a five-letter word"), ("xyzzy", "not in the game's word list")]:
        obs, reward, terminated, truncated, step = env.step(reply)
        assert says in obs and "did not count as a guess; you have 6 left" in obs
        assert step["signals"]["valid_action"] is False and step["signals"]["guesses_used"] == 0
        assert reward == 0.0 and not terminated and not truncated
    assert step["turn"] == 3
    for word in _wrong_guesses(info["answer"], 5):
        *_, truncated, step = env.step(word)
    assert truncated and step["success"] is False and step["signals"]["guesses_used"] == 5


def test_six_wrong_guesses_lose_and_reveal_the_answer() -> None:
    env = agentgym.make("wordle")
    _, info = env.reset(options={"task": "wordle-0005"})
    for n, word in enumerate(_wrong_guesses(info["answer"], 6), 1):
        obs, reward, terminated, truncated, step = env.step(word)
        assert step["signals"]["guesses_used"] == n and (terminated == (n == 6))
    assert step["success"] is False and reward == 0.0 and info["answer"].upper() in obs


def test_board_lists_absent_letters_but_not_repeats_marked_dot() -> None:
    env = agentgym.make("wordle")
    task = next(t for t, word in env._tasks.items() if word == "llama")  # the task whose answer is LLAMA
    env.reset(options={"task": task})
    obs, *_, step = env.step("Alley")
    assert "A L L E Y   Y G Y . ." in obs
    assert "Letters not in the word: E, Y" in obs
    signals = step["signals"]
    assert signals["valid_action"] is True and signals["guesses_used"] == 1 and signals["greens"] == 1
    assert 1 <= signals["candidates_left"] < 50
    obs, reward, terminated, *_ = env.step("llama")
    assert terminated and reward == 1.0 and "Solved" in obs


@pytest.mark.parametrize(
    ("reply", "guess"), [("CRANE", "crane"), ("'crane'.", "crane"), ("C R A N E\nbecause", "crane"), ("\n\n", "")]
)
def test_normalise_guess(reply: str, guess: str) -> None:
    assert normalise_guess(reply) == guess


def test_bad_kwargs_name_the_kwarg(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="max_guesses"):
        agentgym.make("wordle", max_guesses=0)
    with pytest.raises(ValueError, match="max_turns"):
        agentgym.make("wordle", max_turns=4)
    with pytest.raises(ValueError, match="words_file"):
        agentgym.make("wordle", words_file=str(tmp_path / "missing.txt"))
    bad = tmp_path / "bad.txt"
    bad.write_text("crane\nbananas\n")
    with pytest.raises(EnvConfigError, match="words_file .*line 2"):
        agentgym.make("wordle", words_file=str(bad))


def test_a_custom_word_file_plays_with_its_own_solver(tmp_path: Path) -> None:
    words = tmp_path / "words.txt"
    words.write_text("# answers\ncrane\nslate\nplumb\ngrief\n# guesses only\nxylyl\n")
    env = agentgym.make("wordle", words_file=str(words))
    assert len(env.task_ids()) == 4 and DEFAULT_WORDS.is_file()
    for task in env.task_ids():
        _, info = env.reset(options={"task": task})
        for guess in info["walkthrough"]:
            *_, terminated, _, step = env.step(guess)
        assert terminated and step["success"] is True
