#!/usr/bin/env python
"""How much does agentgym's rollout path cost on top of TextWorld itself?

Plays the same TextWorld games with the same actions, for the same number of steps, two ways:

  agentgym   `agentgym.make("textworld")` + `RolloutEngine` + a scripted `CallablePolicy`,
             each trajectory written to a `TrajectoryWriter` (JSONL, fsync) as `agentgym eval` does;
  textworld  TextWorld's own API asking for the same infos: `textworld.start()` one episode at
             a time, and `textworld.gym`'s batch env (`batch_size=N`, asynchronous) for N at once.

and prints steps/s (median of --repeats runs after a warm-up) with the ratio agentgym/textworld
(goal: >= 0.9), then the peak RSS growth per concurrent agentgym episode. --breakdown adds rows
that peel the agentgym path apart; --profile prints where the agentgym run spends its time.

    .venv/bin/python benchmarks/rollout_overhead.py                          # 1.5-2 minutes on 2 cores
    .venv/bin/python benchmarks/rollout_overhead.py --breakdown --profile    # about 4 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

import agentgym
from agentgym.envs.text.textworld_games import default_games_dir, list_games, make_games
from agentgym.policies.base import EpisodeContext
from agentgym.policies.scripted import CallablePolicy
from agentgym.rollout.engine import RolloutConfig, RolloutEngine, plan_episodes
from agentgym.store import TrajectoryWriter
from agentgym.types import Message, Trajectory

# Wide enough for the table when the output is piped to a file (rich would assume 80 columns).
console = Console(width=max(130, shutil.get_terminal_size((130, 24)).columns))

# ---------------------------------------------------------------------------------------------
# The scripted actions: the same function drives both paths, so both play the same commands.
# 'look', 'inventory' and 'examine X' never change the game state, so no episode is won early:
# every episode runs exactly max_turns steps and reset cost stays a small share of the time.
# ---------------------------------------------------------------------------------------------


def examine_targets(admissible: Sequence[str]) -> list[str]:
    """The admissible 'examine X' commands, lower-cased and sorted so both paths see the same list."""
    # Lower case because agentgym's env lower-cases every command before the game sees it:
    # the baseline must send the game the very same bytes.
    return sorted(a.lower() for a in admissible if a.startswith("examine "))


def scripted_action(turn: int, examines: Sequence[str]) -> str:
    """Turn t's command: cycles 'look', 'inventory', then the next 'examine X'."""
    phase = turn % 3
    if phase == 0 or not examines:
        return "look"
    if phase == 1:
        return "inventory"
    return examines[(turn // 3) % len(examines)]


def _agentgym_policy_fn(messages: Sequence[Message], context: EpisodeContext | None) -> str:
    # The state never changes (see above), so the reset's admissible actions hold all episode
    # long: the policy reads them from the reset info instead of parsing the last observation.
    assert context is not None, "the engine always passes an EpisodeContext"
    return scripted_action(context.turn, examine_targets(context.reset_info["admissible_actions"] or []))


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """Env steps taken and the wall time they took (resets and game loading included)."""

    steps: int
    seconds: float
    cpu_seconds: float  # CPU time of every thread and worker process the path used
    actions: dict[str, list[str]] = field(default_factory=dict)  # per game, kept only for the sameness check
    # CPU time of the engine's event-loop thread alone (policy, Turn records, trajectory file,
    # asyncio): agentgym's own per-step work, apart from the env threads. None for other paths.
    loop_cpu_seconds: float | None = None

    @property
    def rate(self) -> float:
        """Steps per second."""
        return self.steps / self.seconds if self.seconds > 0 else 0.0

    @property
    def cpu_ms_per_step(self) -> float:
        """CPU milliseconds per step, all threads and worker processes of the path together."""
        return 1000 * self.cpu_seconds / self.steps if self.steps else 0.0


def _process_cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of other live processes, from /proc/PID/stat."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
    return total / os.sysconf("SC_CLK_TCK")


class _Clock:
    """Wall and CPU time of a timed region; CPU covers this process's threads and `pids`."""

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = list(pids)
        self.wall = time.perf_counter()
        self.cpu = time.process_time() + _process_cpu_seconds(self.pids)

    def stop(self, steps: int, actions: dict[str, list[str]] | None = None) -> Measurement:
        """The measurement of `steps` steps since the clock started."""
        cpu = time.process_time() + _process_cpu_seconds(self.pids) - self.cpu
        return Measurement(steps, time.perf_counter() - self.wall, cpu, actions or {})


def prepare_games(games_dir: str | None, n: int, seed: int, difficulty: str) -> tuple[Path, list[Path]]:
    """The game directory (generated on first use into agentgym's cache) and its first `n` games."""
    if games_dir is None:
        root = default_games_dir(difficulty, n=n, seed=seed)  # cached, locked, keyed by the recipe
        paths = list_games(root)[:n]
    else:
        root = Path(games_dir)
        paths = make_games(root, n=n, seed=seed, difficulty=difficulty)  # keeps games already there
    return root, paths


def textworld_request_infos(games_dir: Path, max_turns: int) -> Any:
    """The `textworld.EnvInfos` that agentgym's TextWorld env requests, read from the env itself."""
    env = agentgym.make("textworld", games_dir=str(games_dir), max_turns=max_turns)
    try:
        # Read, not copied: the baseline must ask TextWorld for exactly the same work (admissible
        # commands, score, description, ...), and it follows the env when the env changes.
        return env._infos
    finally:
        env.close()


def _game_order(paths: Sequence[Path], episodes: int) -> list[Path]:
    """Episode i plays game i mod n, the order `plan_episodes` gives the engine."""
    return [paths[i % len(paths)] for i in range(episodes)]


# ---------------------------------------------------------------------------------------------
# (a) agentgym: env registry + RolloutEngine + scripted policy + trajectory file
# ---------------------------------------------------------------------------------------------


def run_agentgym(
    games_dir: Path, paths: Sequence[Path], episodes: int, concurrency: int, max_turns: int,
    *, write: str = "fsync", history_turns: int | None = None, keep_actions: bool = False,
) -> Measurement:
    """Play `episodes` episodes through the engine; `write` is 'fsync' (as eval does), 'nofsync' or 'none'."""
    env_kwargs = {"games_dir": str(games_dir), "max_turns": max_turns}
    jobs = plan_episodes([p.stem for p in paths], episodes, seed=0)
    policy = CallablePolicy(_agentgym_policy_fn, name="benchmark-script")
    config = RolloutConfig(concurrency=concurrency, history_turns=history_turns)
    out_dir = Path(tempfile.mkdtemp(prefix="agentgym-bench-"))

    trajectories: list[Trajectory] = []

    async def main() -> None:
        writer = TrajectoryWriter(out_dir / "trajectories.jsonl", fsync=(write == "fsync")) if write != "none" else None
        try:
            engine = RolloutEngine(
                lambda: agentgym.make("textworld", **env_kwargs), policy, config,
                env_id="textworld", env_kwargs=env_kwargs, callbacks=[writer.write] if writer else [],
            )
            trajectories.extend(await engine.run(jobs))
        finally:
            if writer is not None:
                writer.close()

    clock, loop_cpu = _Clock(), time.thread_time()
    try:
        # main() returns nothing on purpose: on Python 3.11, asyncio.run's signal-handler restore
        # formats its main task, and with it reprlib.repr of the task's result. Returning the
        # trajectories there costs a full pydantic repr of six of them (~40 ms each at 100 turns).
        asyncio.run(main())  # the event loop runs in this thread: thread_time() is its CPU time
        measurement = clock.stop(sum(t.num_turns for t in trajectories))
        measurement.loop_cpu_seconds = time.thread_time() - loop_cpu
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    failed = [t for t in trajectories if t.error is not None]
    if failed or len(trajectories) != episodes:
        detail = failed[0].error.message if failed else f"{len(trajectories)} of {episodes} episodes came back"
        raise RuntimeError(f"agentgym run failed: {detail}")
    if keep_actions:
        measurement.actions = {t.task_id: [u.action for u in t.turns] for t in trajectories}
    return measurement


def run_agentgym_env_loop(games_dir: Path, paths: Sequence[Path], episodes: int, max_turns: int) -> Measurement:
    """agentgym's env stepped in a plain loop, no engine: isolates the env wrapper's own cost."""
    clock = _Clock()
    env = agentgym.make("textworld", games_dir=str(games_dir), max_turns=max_turns)
    steps = 0
    for seed, path in enumerate(_game_order(paths, episodes)):
        _, info = env.reset(seed=seed, options={"task": path.stem})
        examines = examine_targets(info["admissible_actions"] or [])
        turn, done = 0, False
        while not done:
            _, _, terminated, truncated, _ = env.step(scripted_action(turn, examines))
            turn, steps, done = turn + 1, steps + 1, terminated or truncated
    env.close()
    return clock.stop(steps)


# ---------------------------------------------------------------------------------------------
# (b) TextWorld's own API, same infos, same actions, same step counts
# ---------------------------------------------------------------------------------------------

# TextWorld's game-logic parser is module-level and not thread-safe (agentgym's env holds a
# lock for the same reason): the threaded baseline must serialise loading too.
_TW_LOAD_LOCK = threading.Lock()


def _play_textworld_episode(path: Path, infos: Any, max_turns: int, actions: list[str] | None = None) -> int:
    """One episode with `textworld.start`: load, reset, `max_turns` steps (or until done), close."""
    import textworld

    with _TW_LOAD_LOCK:
        env = textworld.start(str(path), request_infos=infos)
    try:
        state = env.reset()
        examines = examine_targets(state.admissible_commands or [])
        steps = 0
        for turn in range(max_turns):
            command = scripted_action(turn, examines)
            if actions is not None:
                actions.append(command)
            state, _, done = env.step(command)
            steps += 1
            if done:
                break
        return steps
    finally:
        env.close()


def run_textworld_single(paths: Sequence[Path], infos: Any, episodes: int, max_turns: int, *, keep_actions: bool = False) -> Measurement:
    """One `textworld.start` env at a time, as the engine's single worker plays them."""
    recorded: dict[str, list[str]] = {}
    clock = _Clock()
    steps = 0
    for path in _game_order(paths, episodes):
        actions = recorded.setdefault(path.stem, []) if keep_actions else None
        if actions is not None:
            actions.clear()
        steps += _play_textworld_episode(path, infos, max_turns, actions)
    return clock.stop(steps, recorded)


def run_textworld_threads(paths: Sequence[Path], infos: Any, episodes: int, workers: int, max_turns: int) -> Measurement:
    """`workers` `textworld.start` envs in a thread pool: TextWorld under agentgym's concurrency model."""
    clock = _Clock()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        steps = sum(pool.map(lambda p: _play_textworld_episode(p, infos, max_turns), _game_order(paths, episodes)))
    return clock.stop(steps)


BATCH_ENV_LOG = os.path.join(tempfile.gettempdir(), "agentgym-bench-textworld-batch.log")


def make_textworld_batch_env(paths: Sequence[Path], infos: Any, batch_size: int, max_turns: int) -> Any:
    """TextWorld's batch gym env: `batch_size` games stepped at once, one process each (asynchronous)."""
    import textworld.gym

    # With as many games as slots, each reset() plays every game once (its shuffled cycle
    # yields the whole list before reshuffling), so a wave covers the same games as the engine.
    env_id = textworld.gym.register_games(
        [str(p) for p in paths], request_infos=infos, batch_size=batch_size,
        asynchronous=True, max_episode_steps=max_turns,
    )
    # The worker processes are forked here. TextWorld's shutdown races (a worker can read EOF
    # from its pipe before it is terminated) and prints a traceback per worker, so the workers
    # get their stderr pointed at a log file instead of the terminal.
    saved = os.dup(2)
    log = os.open(BATCH_ENV_LOG, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.dup2(log, 2)
        return textworld.gym.make(env_id)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(log)


def run_textworld_batch(env: Any, episodes: int, batch_size: int, max_turns: int) -> Measurement:
    """Play `episodes` episodes as waves of `batch_size` on an already started batch env."""
    # The games run in the batch env's worker processes: count their CPU time too.
    clock = _Clock([child._process.pid for child in getattr(env.batch_env, "envs", [])])
    steps = 0
    for _ in range(max(1, episodes // batch_size)):
        _, infos = env.reset()  # loads the wave's games in the worker processes, then resets them
        examines = [examine_targets(a or []) for a in infos["admissible_commands"]]
        done = [False] * batch_size
        for turn in range(max_turns):
            _, _, dones, _ = env.step([scripted_action(turn, e) for e in examines])
            steps += sum(not d for d in done)  # a finished game is not stepped again
            done = list(dones)
            if all(done):
                break
    return clock.stop(steps)


# ---------------------------------------------------------------------------------------------
# Memory: peak RSS of a fresh process playing N agentgym episodes at once
# ---------------------------------------------------------------------------------------------


def _rss_kib(field_name: str) -> int:
    """A VmRSS/VmHWM line of /proc/self/status, in KiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")


def _memory_probe(args: argparse.Namespace) -> None:
    """(Runs in a child process.) Print the peak RSS growth while playing --probe-n episodes at once."""
    games_dir, paths = Path(args.games_dir), list_games(args.games_dir)[: args.games]
    # Building an env first imports TextWorld and the env module in both probes, so the
    # growth measured below is the episodes' own, not imports.
    infos = textworld_request_infos(games_dir, args.max_turns)
    try:  # reset the high-water mark so import-time peaks do not hide the run's own
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    before = _rss_kib("VmRSS")
    n = args.probe_n
    if args.memory_probe == "agentgym":
        run_agentgym(games_dir, paths, n, n, args.max_turns, history_turns=args.history_turns)
    else:
        run_textworld_threads(paths, infos, n, n, args.max_turns)
    print(json.dumps({"growth_kib": _rss_kib("VmHWM") - before}))


def measure_memory(kind: str, n: int, args: argparse.Namespace, games_dir: Path) -> int:
    """Peak RSS growth (KiB) of a fresh process that plays `n` `kind` episodes concurrently."""
    cmd = [
        sys.executable, __file__, "--memory-probe", kind, "--probe-n", str(n), "--games-dir", str(games_dir),
        "--games", str(args.games), "--max-turns", str(args.max_turns),
    ]
    if args.history_turns is not None:
        cmd += ["--history-turns", str(args.history_turns)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr.strip()[-800:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["growth_kib"])


# ---------------------------------------------------------------------------------------------
# Profile: cProfile in the event-loop thread and in every env worker thread
# ---------------------------------------------------------------------------------------------


# Where a profiled function's own time goes, by the first rule its file or name matches.
# Waiting (idle in epoll or on the work queue) is split off: it is not anyone's cost.
_COMPONENTS: list[tuple[str, tuple[str, ...]]] = [
    ("idle: waiting for work or for the env", ("method 'poll' of 'select.epoll'", "method 'get' of '_queue.SimpleQueue'",
                                              "method 'acquire' of '_thread.lock'")),
    ("thread handoff (self-pipe wakeup, GIL)", ("method 'send' of '_socket", "method 'recv' of '_socket")),
    ("trajectory file (write, fsync)", ("posix.fsync", "method 'write' of '_io", "method 'flush' of '_io")),
    ("TextWorld + jericho", ("/textworld/", "/jericho/", "/mementos/", "/numpy/", "/tatsu/")),
    ("agentgym env (TextWorldEnv, TextEnv)", ("/envs/text/", "/agentgym/env.py", "/agentgym/registry.py")),
    ("gymnasium (reset seeding)", ("/gymnasium/",)),
    ("pydantic (Turn, Trajectory, JSON)", ("/pydantic/", "pydantic_core")),
    ("engine, prompts, policy, store", ("/agentgym/", "benchmarks/rollout_overhead.py")),
    ("asyncio + thread pool", ("/asyncio/", "/concurrent/", "threading.py", "selectors.py", "queue.py", "_contextvars")),
]


def _component(key: tuple[str, int, str]) -> str:
    """The component a pstats key (file, line, function) belongs to."""
    text = f"{key[0]}:{key[2]}"
    for name, needles in _COMPONENTS:
        if any(n in text for n in needles):
            return name
    return "other"


def profile_agentgym(games_dir: Path, paths: Sequence[Path], episodes: int, concurrency: int, max_turns: int, top: int = 15) -> None:
    """Print where one agentgym run spends its time: by component, then the heaviest functions."""
    worker_profiles: list[cProfile.Profile] = []

    def start_thread_profile(frame: Any, event: str, arg: Any) -> None:
        """Give the calling thread its own profiler (threading calls this first in every new thread)."""
        prof = cProfile.Profile()
        worker_profiles.append(prof)
        prof.enable()

    main_profile = cProfile.Profile()
    threading.setprofile(start_thread_profile)
    main_profile.enable()
    try:
        steps = run_agentgym(games_dir, paths, episodes, concurrency, max_turns).steps
    finally:
        main_profile.disable()
        threading.setprofile(None)
    threads = {
        "event-loop thread": pstats.Stats(main_profile),
        "env threads": pstats.Stats(*worker_profiles),
    }
    # Profiled times are wall times per thread: with several env threads they add up, and a
    # thread waiting for the GIL is charged to whatever it was running (mostly TextWorld).
    table = Table(title=f"cProfile of agentgym, {concurrency} at once: own time per env step by component, summed over "
                        "threads (the profiler slows Python code more than C code)")
    table.add_column("component")
    for name in threads:
        table.add_column(f"{name}, µs/step", justify="right")
    totals = {name: {c: 0.0 for c, _ in _COMPONENTS} | {"other": 0.0} for name in threads}
    for name, stats in threads.items():
        for key, (_, _, own, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
            component = _component(key)
            if component == "other" and key[0] == "~" and callers:
                # A builtin (sorted, isinstance, dict.get, ...) counts for whoever called it.
                for caller, (_, _, own_from_caller, _) in callers.items():
                    totals[name][_component(caller)] += own_from_caller
            else:
                totals[name][component] += own
    for component in totals["event-loop thread"]:
        table.add_row(component, *(f"{1e6 * totals[n][component] / steps:,.0f}" for n in threads))
    console.print(table)
    for name, stats in threads.items():
        console.rule(f"[bold]{name}, {concurrency} at once: heaviest functions by own time")
        stats.sort_stats("tottime").print_stats(top)


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------

# A timed path: takes max_turns (the warm-up passes a small one) and returns its measurement.
Run = Callable[[int], Measurement]

LABELS = {
    "agentgym": "agentgym: engine + JSONL + fsync",
    "env loop": "  agentgym env in a plain loop",
    "no fsync": "  engine + JSONL, no fsync",
    "no file": "  engine, no trajectory file",
    "threads": "  textworld.start envs in threads",
}


@dataclass
class Row:
    """One line of the table: a setting, a path, and its per-repeat measurements."""

    setting: str
    path: str
    runs: list[Measurement]
    baseline: Row | None = None  # the textworld row this one is compared with

    @property
    def rate(self) -> float:
        """Median steps/s over the repeats."""
        return statistics.median(m.rate for m in self.runs)

    @property
    def best(self) -> float:
        """Fastest repeat's steps/s: on a shared machine, the least disturbed estimate."""
        return max(m.rate for m in self.runs)

    @property
    def cpu_ms(self) -> float:
        """Median CPU ms per step over the repeats."""
        return statistics.median(m.cpu_ms_per_step for m in self.runs)

    @property
    def loop_us(self) -> float | None:
        """Median event-loop-thread CPU µs per step (engine paths only)."""
        if any(m.loop_cpu_seconds is None for m in self.runs):
            return None
        return statistics.median(1e6 * (m.loop_cpu_seconds or 0.0) / m.steps for m in self.runs)


def bench(runs: dict[str, Run], repeats: int, max_turns: int, warmup_turns: int = 5) -> dict[str, list[Measurement]]:
    """Warm every path up with short episodes, then repeat them interleaved so drift hits all alike."""
    for run in runs.values():
        run(warmup_turns)
    results: dict[str, list[Measurement]] = {name: [] for name in runs}
    order = list(runs)
    for _ in range(repeats):
        for name in order:
            results[name].append(runs[name](max_turns))
        order.reverse()  # no path always runs first (or last) in a round
    return results


def check_same_actions(games_dir: Path, paths: Sequence[Path], infos: Any, max_turns: int) -> None:
    """Fail loudly unless both paths send the same commands to every game."""
    ours = run_agentgym(games_dir, paths, len(paths), 1, max_turns, write="none", keep_actions=True).actions
    theirs = run_textworld_single(paths, infos, len(paths), max_turns, keep_actions=True).actions
    for game, commands in theirs.items():
        if commands != ours.get(game):
            raise RuntimeError(f"agentgym and textworld played different actions on {game}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line flags."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max-turns", type=int, default=100, help="Steps per episode (every episode runs them all).")
    p.add_argument("--episodes", type=int, default=8, help="Episodes per timed run (a multiple of --concurrency).")
    p.add_argument("--concurrency", type=int, default=8, help="Episodes at once in the concurrent setting.")
    p.add_argument("--repeats", type=int, default=3, help="Timed runs per path after a warm-up; the table shows the median.")
    p.add_argument("--games", type=int, default=8, help="Games to play (generated on first use).")
    p.add_argument("--games-seed", type=int, default=0, help="Seed of the first generated game.")
    p.add_argument("--difficulty", default="medium", choices=["easy", "medium", "hard"], help="Generated game size.")
    p.add_argument("--games-dir", default=None, help="Game directory (default: agentgym's cache).")
    p.add_argument("--history-turns", type=int, default=None, help="Engine prompt window (default: keep all, as eval does).")
    p.add_argument("--breakdown", action="store_true", help="Add rows that take the agentgym path apart.")
    p.add_argument("--profile", action="store_true", help="Also print a cProfile of one agentgym run per setting.")
    p.add_argument("--no-memory", action="store_true", help="Skip the memory measurement.")
    p.add_argument("--memory-probe", choices=["agentgym", "textworld"], help=argparse.SUPPRESS)
    p.add_argument("--probe-n", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.concurrency < 2:
        p.error("--concurrency must be at least 2 (1 is the other setting)")
    if args.episodes % args.concurrency:
        p.error("--episodes must be a multiple of --concurrency (TextWorld's batch env plays whole waves)")
    return args


def speed_table(rows: Sequence[Row], title: str) -> Table:
    """The steps/s table, with the ratio to each row's TextWorld baseline."""
    table = Table(title=title)
    for col in ("setting", "path", "steps", "steps/s", "min-max", "CPU ms/step", "loop µs/step", "ratio", "ratio of bests"):
        table.add_column(col, justify="left" if col in ("setting", "path") else "right")
    for r in rows:
        ratios = ["", ""]
        if r.baseline is not None:
            for i, value in enumerate((r.rate / r.baseline.rate, r.best / r.baseline.best)):
                ratios[i] = f"[{'green' if value >= 0.9 else 'red'}]{value:.2f}[/]"
        rates = [m.rate for m in r.runs]
        loop = "" if r.loop_us is None else f"{r.loop_us:,.0f}"
        table.add_row(r.setting, r.path, str(r.runs[0].steps), f"{r.rate:,.0f}", f"{min(rates):,.0f}-{max(rates):,.0f}",
                      f"{r.cpu_ms:.2f}", loop, *ratios)
    return table


def memory_table(args: argparse.Namespace, games_dir: Path) -> Table:
    """Peak RSS growth per concurrent episode, for agentgym and for bare TextWorld envs."""
    c = args.concurrency
    table = Table(title=f"Peak RSS growth while playing N episodes at once (fresh process each, {args.max_turns} turns)")
    for col in ("path", "N=1", f"N={c}", "per extra episode"):
        table.add_column(col, justify="left" if col == "path" else "right")
    # Fresh processes, so one measurement's allocator state cannot leak into the next; the
    # difference between N=c and N=1 cancels what every run pays once (event loop, pool, caches).
    for kind, label in (("agentgym", "agentgym: engine + JSONL"), ("textworld", "textworld.start envs in threads")):
        one, many = measure_memory(kind, 1, args, games_dir), measure_memory(kind, c, args, games_dir)
        table.add_row(label, f"{one / 1024:.1f} MiB", f"{many / 1024:.1f} MiB", f"{(many - one) / (c - 1) / 1024:.2f} MiB")
    return table


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and print its tables."""
    args = parse_args(argv)
    if args.memory_probe:
        _memory_probe(args)
        return
    wall = time.perf_counter()
    games_dir, paths = prepare_games(args.games_dir, args.games, args.games_seed, args.difficulty)
    infos = textworld_request_infos(games_dir, args.max_turns)
    T, E, C = args.max_turns, args.episodes, args.concurrency
    load_before = os.getloadavg()[0]
    # Start the batch env's worker processes first: forking before any engine thread exists is safer.
    batch_env = make_textworld_batch_env(paths, infos, C, T)
    try:
        check_same_actions(games_dir, paths, infos, T)

        def agentgym_run(concurrency: int, write: str = "fsync") -> Run:
            """The agentgym path at this concurrency and way of writing trajectories."""
            return lambda t: run_agentgym(games_dir, paths, E, concurrency, t, write=write, history_turns=args.history_turns)

        single: dict[str, Run] = {
            "agentgym": agentgym_run(1),
            "textworld": lambda t: run_textworld_single(paths, infos, E, t),
        }
        concurrent: dict[str, Run] = {
            "agentgym": agentgym_run(C),
            "textworld": lambda t: run_textworld_batch(batch_env, E, C, t),
        }
        if args.breakdown:
            single |= {"env loop": lambda t: run_agentgym_env_loop(games_dir, paths, E, t),
                       "no fsync": agentgym_run(1, "nofsync"), "no file": agentgym_run(1, "none")}
            concurrent |= {"threads": lambda t: run_textworld_threads(paths, infos, E, C, t),
                           "no fsync": agentgym_run(C, "nofsync"), "no file": agentgym_run(C, "none")}
        rows: list[Row] = []
        for setting, base_label, runs in (
            ("1 at a time", "textworld: textworld.start", single),
            (f"{C} at once", f"textworld: gym batch env ({C} procs)", concurrent),
        ):
            results = bench(runs, args.repeats, T)
            base = Row(setting, base_label, results["textworld"])
            rows += [Row(setting, LABELS["agentgym"], results["agentgym"], base), base]
            rows += [Row(setting, LABELS[k], results[k], base) for k in runs if k not in ("agentgym", "textworld")]
    finally:
        batch_env.close()

    title = (f"TextWorld steps/s: {len(paths)} {args.difficulty} games, {E} episodes x {T} steps per run, "
             f"median of {args.repeats} runs after a warm-up")
    console.print(speed_table(rows, title))
    console.print(f"{os.cpu_count()} CPU cores, load average {load_before:.1f} before / {os.getloadavg()[0]:.1f} after "
                  "(steps/s and CPU ms/step both move with other load on the machine).\n"
                  "ratio = median agentgym steps/s / median textworld steps/s (goal >= 0.90); "
                  "ratio of bests compares the fastest repeats, the least disturbed by other load.\n"
                  "loop µs/step = CPU of the engine's event-loop thread per step (policy, Turn records, "
                  "trajectory file, asyncio): agentgym's own work, which the env thread waits for.")
    if not args.no_memory:
        console.print(memory_table(args, games_dir))
    if args.profile:
        profile_agentgym(games_dir, paths, E, 1, T)
        profile_agentgym(games_dir, paths, E, C, T)
    console.print(f"total time {time.perf_counter() - wall:.0f} s")


if __name__ == "__main__":
    main()
