"""Small programming and calculation tasks with exact integer answers, generated from a seed.

Each task is easy to solve with a few lines of Python and tedious to do in one's head, so an
agent that uses its tools well wins and one that guesses does not. The generator knows every
answer and a reference program that computes it (the walkthrough).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class ToolTask:
    """One task: its id, the question, the exact answer, and a program that prints the answer."""

    task_id: str
    question: str
    answer: int
    solution: str


def _sum_primes(rng: random.Random) -> tuple[str, int, str]:
    n = rng.randrange(1_000, 30_000)
    sieve = bytearray([1]) * n
    sieve[0:2] = b"\x00\x00"
    for p in range(2, int(n**0.5) + 1):
        if sieve[p]:
            sieve[p * p::p] = bytearray(len(range(p * p, n, p)))
    answer = sum(i for i in range(n) if sieve[i])
    program = (f"n = {n}\nprint(sum(p for p in range(2, n) "
               "if all(p % d for d in range(2, int(p ** 0.5) + 1))))")
    return f"What is the sum of all prime numbers below {n}?", answer, program


def _fibonacci_mod(rng: random.Random) -> tuple[str, int, str]:
    n, m = rng.randrange(50, 2_000), rng.randrange(1_000, 100_000)
    a, b = 1, 1
    for _ in range(n - 2):
        a, b = b, a + b
    answer = (b if n > 1 else a) % m
    program = f"a, b = 1, 1\nfor _ in range({n} - 2):\n    a, b = b, a + b\nprint(b % {m})"
    return f"Let F(1) = F(2) = 1 and F(k) = F(k-1) + F(k-2). What is F({n}) modulo {m}?", answer, program


def _digit_sum_power(rng: random.Random) -> tuple[str, int, str]:
    base, exponent = rng.randrange(2, 30), rng.randrange(50, 400)
    answer = sum(int(c) for c in str(base**exponent))
    return (f"What is the sum of the decimal digits of {base}^{exponent} ({base} to the power {exponent})?", answer,
            f"print(sum(int(c) for c in str({base} ** {exponent})))")


def _count_divisible(rng: random.Random) -> tuple[str, int, str]:
    lo = rng.randrange(1, 5_000)
    hi = lo + rng.randrange(1_000, 200_000)
    k, j = rng.randrange(3, 20), rng.randrange(2, 15)
    answer = sum(1 for x in range(lo, hi + 1) if x % k == 0 and x % j != 0)
    return (f"How many integers from {lo} to {hi} inclusive are divisible by {k} but not by {j}?", answer,
            f"print(sum(1 for x in range({lo}, {hi} + 1) if x % {k} == 0 and x % {j} != 0))")


def _collatz_steps(rng: random.Random) -> tuple[str, int, str]:
    n = rng.randrange(1_000, 1_000_000)
    x, steps = n, 0
    while x != 1:
        x = x // 2 if x % 2 == 0 else 3 * x + 1
        steps += 1
    program = f"x, steps = {n}, 0\nwhile x != 1:\n    x = x // 2 if x % 2 == 0 else 3 * x + 1\n    steps += 1\nprint(steps)"
    return (f"Starting from {n}, repeatedly halve the number if it is even, or replace it with 3 times it plus 1 if it "
            "is odd. How many such steps does it take to reach 1?", steps, program)


FAMILIES: dict[str, Callable[[random.Random], tuple[str, int, str]]] = {
    "sum-primes": _sum_primes,
    "fibonacci-mod": _fibonacci_mod,
    "digit-sum-power": _digit_sum_power,
    "count-divisible": _count_divisible,
    "collatz-steps": _collatz_steps,
}


def generate_tasks(num_tasks: int, seed: int = 0) -> list[ToolTask]:
    """`num_tasks` tasks cycling through the families; the same (num_tasks, seed) always gives the same tasks."""
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be at least 1, got {num_tasks}")
    names = list(FAMILIES)
    tasks = []
    for i in range(num_tasks):
        family = names[i % len(names)]
        rng = random.Random(f"{seed}:{i}")  # each task has its own stream: task i does not depend on num_tasks
        question, answer, solution = FAMILIES[family](rng)
        tasks.append(ToolTask(f"{family}-{seed}-{i}", question, answer, solution))
    return tasks
