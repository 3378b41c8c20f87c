"""ALFWorld household tasks as an agentgym env, played on alfworld's own TextWorld/PDDL engine."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agentgym.env import EpisodeStart, StepOutcome, TextEnv
from agentgym.envs.text.alfworld_games import (
    DATA_SUBDIR,
    DEFAULT_NUM_GAMES,
    SPLITS,
    default_games_dir,
    import_alfworld,
    list_games,
    load_game_data,
    split_dir,
)
from agentgym.envs.text.textworld_env import normalise_command
from agentgym.errors import EnvConfigError

log = logging.getLogger(__name__)

INSTRUCTIONS = (
    "You are in a house and must complete the household task stated at the start. Each turn you read what "
    "happened and reply with exactly one command, such as 'go to countertop 1', 'open fridge 1', "
    "'take mug 1 from cabinet 2', 'clean mug 1 with sinkbasin 1', 'heat egg 1 with microwave 1', "
    "'cool apple 1 with fridge 1', 'use desklamp 1' or 'move mug 1 to coffeemachine 1'. "
    "Reply with the command only: no explanation, no quotes."
)

_BANNER = re.compile(r"^\s*-= Welcome to TextWorld, ALFRED! =-\s*", re.MULTILINE)
_GOAL = re.compile(r"Your task is to:\s*(.+?)\s*$", re.MULTILINE)

# alfworld's engine is not thread-safe: TextWorld parses grammar with module-level TatSu parsers
# (on every step, to name the valid commands), and fast-downward's translator keeps its options in
# module state and swaps sys.stdout while it runs. One lock serialises every call into it.
_ENGINE_LOCK = threading.RLock()

# Translating a problem to the planner's SAS form is the slow part of a load: TextWorld does it twice
# when a game loads and twice more on every reset. The result depends only on the text, so it is kept.
_SAS_CACHE: OrderedDict[tuple[str, bool], Any] = OrderedDict()
_SAS_CACHE_SIZE = 16  # entries: two per game
_PDDL2SAS: Any = None


def _cached_pddl2sas(domain: str, problem: str, verbose: bool = False, optimize: bool = False) -> Any:
    key = (hashlib.sha256(f"{domain}\x00{problem}".encode()).hexdigest(), bool(optimize))
    if key in _SAS_CACHE:
        _SAS_CACHE.move_to_end(key)
        return _SAS_CACHE[key]
    result = _PDDL2SAS(domain, problem, verbose=verbose, optimize=optimize)
    _SAS_CACHE[key] = result
    while len(_SAS_CACHE) > _SAS_CACHE_SIZE:
        _SAS_CACHE.popitem(last=False)
    return result


@contextlib.contextmanager
def _engine_section() -> Iterator[None]:
    """Hold the engine lock, translate through the cache, and put back the `sys.argv` the translator overwrites."""
    global _PDDL2SAS
    with _ENGINE_LOCK:
        import fast_downward

        if _PDDL2SAS is None:
            _PDDL2SAS = fast_downward.pddl2sas
        argv = sys.argv
        fast_downward.pddl2sas = _cached_pddl2sas
        try:
            yield
        finally:
            fast_downward.pddl2sas = _PDDL2SAS
            sys.argv = argv


class AlfredEngine:
    """alfworld's TextWorld engine for one ALFRED game at a time: PddlEnv with alfworld's object names and expert plan."""

    def __init__(self) -> None:
        with _engine_section():
            import textworld
            from textworld.envs import PddlEnv

            demangler = import_alfworld("alfworld.agents.environment.alfred_tw_env").AlfredDemangler
            infos = textworld.EnvInfos(admissible_commands=True, won=True, extras=["walkthrough"])
            self._pddl = PddlEnv(infos)
            # shuffle=False: the numbering alfworld uses in evaluation, so stored walkthroughs name the same objects.
            self._env = demangler(self._pddl, shuffle=False)

    def load(self, data: dict[str, Any]) -> None:
        """Load a game from the content of its game.tw-pddl."""
        with _engine_section():
            self._env.load(data)

    def reset(self) -> Any:
        """Start the game over; `extra.walkthrough` is the game's stored plan, else the planner's (then kept)."""
        with _engine_section():
            state = self._env.reset()
            if not self._pddl.walkthrough:
                self._pddl.walkthrough = list(state.get("extra.walkthrough") or [])
        return state

    def names(self) -> dict[str, str]:
        """The loaded game's entity ids (lowercased PDDL names) and the names alfworld shows for them."""
        return {ident: info.name for ident, info in self._pddl._entity_infos.items()}

    def step(self, command: str) -> Any:
        """Apply one command; one the game does not know answers 'Nothing happens.' and changes nothing."""
        with _engine_section():
            state, _, _ = self._env.step(command)
        return state

    def close(self) -> None:
        """Free the planner's state; its library copy stays mapped (unloading it crashes the interpreter at exit)."""
        lib = getattr(self._pddl, "downward_lib", None)
        if lib is not None:
            with _ENGINE_LOCK:
                lib.cleanup()
            self._pddl.downward_lib = None


def official_data_dir() -> Path | None:
    """$ALFWORLD_DATA when it holds alfworld's data (a json_2.1.1 folder), else None."""
    value = os.environ.get("ALFWORLD_DATA")
    if not value:
        return None
    if (Path(value).expanduser() / DATA_SUBDIR).is_dir():
        return Path(value).expanduser()
    log.warning("ALFWORLD_DATA=%s has no %s folder; playing the generated game set instead", value, DATA_SUBDIR)
    return None


def goal_of(intro: str) -> str:
    """The task sentence of a game's first observation ('Your task is to: ...'), without its full stop."""
    found = _GOAL.search(intro or "")
    return found.group(1).rstrip(".").strip() if found else ""


class ALFWorldEnv(TextEnv):
    """Plays the trials of one ALFWorld split; each trial folder is a task, named `<task folder>/<trial>`."""

    def __init__(
        self,
        split: str = "train",
        data_dir: str | None = None,
        max_turns: int = 50,
        show_admissible: bool = True,
        num_games: int = DEFAULT_NUM_GAMES,
        games_seed: int = 0,
        cache: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(max_turns=int(max_turns), render_mode=render_mode)
        if split not in SPLITS:
            raise EnvConfigError(f"unknown ALFWorld split {split!r}; pick one of {', '.join(SPLITS)}")
        self.split = split
        official = official_data_dir() if data_dir is None else None
        if data_dir is not None:
            root, source = Path(data_dir).expanduser(), f"data_dir={data_dir}"
        elif official is not None:
            root, source = official, f"ALFWORLD_DATA={official}"
        else:
            root = default_games_dir(n=int(num_games), seed=int(games_seed), cache=cache)
            source = "the generated game set"
        try:
            base = split_dir(root, split)
            # By trial name first: folder names sort by task type, so a run over the first N tasks would see few types.
            trials = sorted(list_games(root, split), key=lambda t: (t.name, t.parent.name))
            self._games = {t.relative_to(base).as_posix(): t for t in trials}
        except EnvConfigError as exc:
            raise EnvConfigError(f"{source}: {exc}") from None
        self.data_dir = root
        self.show_admissible = bool(show_admissible)
        self._engine: AlfredEngine | None = None
        self._loaded: str | None = None
        self._state: Any = None

    def task_ids(self) -> Sequence[str]:
        """One task per trial folder (its path inside the split), ordered by trial name."""
        return list(self._games)

    def start(self, task_id: str) -> EpisodeStart:
        """Load the game (kept when it is the same game) and reset it; the reset info carries goal and walkthrough."""
        trial = self._games[task_id]
        if self._engine is None:
            self._engine = AlfredEngine()
        if self._loaded != task_id:
            self._loaded = None
            self._engine.load(load_game_data(trial))
            self._loaded = task_id
        self._state = state = self._engine.reset()
        traj = json.loads((trial / "traj_data.json").read_text())
        goal = goal_of(state.feedback)
        admissible = sorted(state.admissible_commands or [])
        observation = _BANNER.sub("", state.feedback or "").strip()
        return EpisodeStart(
            observation=self._with_actions(observation, admissible),
            instructions=INSTRUCTIONS,
            admissible_actions=admissible,
            info={
                "goal": goal,
                "answer": goal,
                "walkthrough": list(state.get("extra.walkthrough") or []),
                "task_type": traj.get("task_type"),
                "pddl_params": traj.get("pddl_params"),
                "scene": (traj.get("scene") or {}).get("floor_plan"),
                "gamefile": str(trial),
            },
        )

    def act(self, action: str) -> StepOutcome:
        """Send the normalised command to the game; an empty reply is answered without a game move."""
        assert self._engine is not None and self._state is not None
        command = normalise_command(action)
        admissible = sorted(self._state.admissible_commands or [])
        if not command:
            text = "Your reply contained no command. Reply with one command, such as 'look' or 'go to countertop 1'."
            return StepOutcome(observation=self._with_actions(text, admissible), signals={"valid_action": False},
                               admissible_actions=admissible)
        valid = command in admissible
        self._state = state = self._engine.step(command)
        won = bool(state.won)
        admissible = sorted(state.admissible_commands or [])
        return StepOutcome(
            observation=self._with_actions((state.feedback or "").strip(), [] if won else admissible),
            reward=1.0 if won else 0.0,
            terminated=won,
            success=True if won else None,
            signals={"valid_action": valid},
            admissible_actions=admissible,
            info={"command": command, "won": won},
        )

    def close(self) -> None:
        """Release the engine."""
        if self._engine is not None:
            self._engine.close()
        self._engine, self._loaded, self._state = None, None, None
        super().close()

    def _with_actions(self, text: str, admissible: list[str]) -> str:
        if self.show_admissible and admissible:
            return f"{text}\n\nAvailable actions: {', '.join(admissible)}"
        return text
