"""Offline generation of TextWorld games with TextWorld's own generator (`tw-make`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from agentgym.cache import cache_root, file_lock, recipe_key
from agentgym.errors import EnvConfigError

# World size, object count and quest length per difficulty: "easy" games take 2 moves, "moderate"
# ones 3 in a larger world (the learning benchmark's second stage).
DIFFICULTIES: dict[str, dict[str, int]] = {
    "easy": {"world_size": 2, "nb_objects": 4, "quest_length": 2},
    "moderate": {"world_size": 3, "nb_objects": 6, "quest_length": 3},
    "medium": {"world_size": 5, "nb_objects": 10, "quest_length": 5},
    "hard": {"world_size": 8, "nb_objects": 20, "quest_length": 10},
}
DEFAULT_NUM_GAMES = 20
_COMPLETE_MARKER = ".complete"


def _tw_make() -> str:
    """Path of the tw-make script installed beside this interpreter."""
    beside = Path(sys.executable).parent / "tw-make"
    found = str(beside) if beside.exists() else shutil.which("tw-make")
    if not found:
        raise EnvConfigError("tw-make not found; install textworld (run `make setup`)")
    return found


def _make_one(path: Path, seed: int, difficulty: str) -> Path:
    """Compile one game; Inform 7 writes to $HOME/Inform, so each call gets its own HOME."""
    params = DIFFICULTIES[difficulty]
    with tempfile.TemporaryDirectory(prefix="agentgym-tw-") as home:
        cmd = [
            _tw_make(), "custom",
            "--world-size", str(params["world_size"]),
            "--nb-objects", str(params["nb_objects"]),
            "--quest-length", str(params["quest_length"]),
            "--seed", str(seed),
            "--output", str(path), "-f", "--silent",
        ]
        env = {**os.environ, "HOME": home}
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not path.exists():
        raise EnvConfigError(f"tw-make failed for seed {seed}: {(done.stderr or done.stdout).strip()[-500:]}")
    return path


def make_games(out_dir: str | os.PathLike[str], n: int, seed: int = 0, difficulty: str = "easy", workers: int = 2) -> list[Path]:
    """Generate `n` games named `tw-<difficulty>-<seed+i>.z8` in `out_dir`; existing ones are kept."""
    if difficulty not in DIFFICULTIES:
        raise EnvConfigError(f"unknown difficulty {difficulty!r}; pick one of {', '.join(DIFFICULTIES)}")
    if n < 1:
        raise EnvConfigError(f"--n must be at least 1, got {n}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [(out / f"tw-{difficulty}-{seed + i}.z8", seed + i) for i in range(n)]
    todo = [(p, s) for p, s in wanted if not (p.exists() and p.with_suffix(".json").exists())]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(lambda ps: _make_one(ps[0], ps[1], difficulty), todo))
    return [p for p, _ in wanted]


def default_games_dir(difficulty: str = "easy", n: int = DEFAULT_NUM_GAMES, seed: int = 0, cache: str | None = None) -> Path:
    """The cached default game set for these settings, generated on first use."""
    import textworld

    key = recipe_key("textworld-games", textworld.__version__, difficulty, n, seed, DIFFICULTIES.get(difficulty))
    target = cache_root(cache) / "textworld" / f"{difficulty}-n{n}-s{seed}-{key}"
    marker = target / _COMPLETE_MARKER
    if marker.exists():
        return target
    with file_lock(target.with_suffix(".lock")):
        if not marker.exists():
            print(f"agentgym: generating {n} {difficulty} TextWorld games in {target} (first use only)", file=sys.stderr)
            make_games(target, n=n, seed=seed, difficulty=difficulty)
            marker.touch()
    return target


def list_games(games_dir: str | os.PathLike[str]) -> list[Path]:
    """The game files (.z8/.ulx) in a directory, sorted; a clear error when there are none."""
    path = Path(games_dir).expanduser()
    if not path.is_dir():
        raise EnvConfigError(
            f"games directory {str(path)!r} does not exist; "
            f"make games with `agentgym textworld make-games --n 20 --out {path}`"
        )
    games = sorted(p for p in path.iterdir() if p.suffix in (".z8", ".ulx"))
    if not games:
        raise EnvConfigError(f"no TextWorld games (*.z8, *.ulx) in {str(path)!r}; make some with `agentgym textworld make-games --out {path}`")
    return games
