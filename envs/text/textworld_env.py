"""TextWorld text adventures as an agentgym env: reward from the game score, success on a win."""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agentgym.env import EpisodeStart, StepOutcome, TextEnv
from agentgym.envs.text.textworld_games import DEFAULT_NUM_GAMES, default_games_dir, list_games

INSTRUCTIONS = (
    "You are playing a text adventure game. Each turn you read what happened and reply with "
    "exactly one command for the game, such as 'go north', 'open box' or 'take key from table'. "
    "Reply with the command only: no explanation, no quotes. Reach the goal stated at the start."
)

# Lines TextWorld's interpreter prints around the story text: the '>' prompt with its status bar.
_PROMPT_LINE = re.compile(r"^\s*>.*$", re.MULTILINE)

# TextWorld parses a game's logic with one module-level grammar parser that is not
# thread-safe: two envs loading games at once in the rollout engine's threads corrupt it.
_LOAD_LOCK = threading.Lock()

# Jericho warns on every load that TextWorld's generated games are not in its catalogue of
# known commercial games; agentgym takes walkthroughs and admissible actions from TextWorld.
warnings.filterwarnings("ignore", message="Unable to (retrieve walkthrough|find valid actions)", module="jericho")


MAX_COMMAND_CHARS = 180


def normalise_command(text: str) -> str:
    """The command in a policy's reply: its first non-empty line, without prompt marks, quotes or a final period."""
    for line in text.strip().splitlines():
        # A backslash starts a command of the frotz interpreter itself, never of the game.
        line = line.replace("\\", " ").strip().strip("`'\"").lstrip(">").strip()
        if line:
            # The z-machine reads at most ~200 bytes of input; longer replies are not commands anyway.
            return line.rstrip(".!").strip().lower()[:MAX_COMMAND_CHARS]
    return ""


def _clean(feedback: str) -> str:
    return _PROMPT_LINE.sub("", feedback or "").strip()


class TextWorldEnv(TextEnv):
    """Plays the `.z8` games of a directory; each game file is one task (its stem is the task id)."""

    def __init__(
        self,
        games_dir: str | None = None,
        difficulty: str = "easy",
        num_games: int = DEFAULT_NUM_GAMES,
        games_seed: int = 0,
        max_turns: int = 20,
        show_admissible: bool = True,
        cache: str | None = None,
        render_mode: str | None = None,
    ) -> None:
        super().__init__(max_turns=int(max_turns), render_mode=render_mode)
        import textworld  # imported here: it is slow, and registering the env must stay cheap

        self._textworld = textworld
        if games_dir is None:
            games_dir = str(default_games_dir(difficulty, n=int(num_games), seed=int(games_seed), cache=cache))
        self.games_dir = Path(games_dir).expanduser()
        self._games = {p.stem: p for p in list_games(self.games_dir)}
        self.show_admissible = bool(show_admissible)
        self._infos = textworld.EnvInfos(
            admissible_commands=True, won=True, lost=True, score=True, max_score=True,
            objective=True, description=True, extras=["walkthrough"],
        )
        self._game_env: Any = None
        self._game_task: str | None = None
        self._state: Any = None

    def task_ids(self) -> Sequence[str]:
        """One task per game file, by file stem."""
        return list(self._games)

    def start(self, task_id: str) -> EpisodeStart:
        """Load the game (reusing the interpreter when it is the same game) and reset it."""
        if self._game_task != task_id:
            self._close_game()
            with _LOAD_LOCK:
                self._game_env = self._textworld.start(str(self._games[task_id]), request_infos=self._infos)
            self._game_task = task_id
        self._state = self._game_env.reset()
        state = self._state
        # The first feedback carries an ASCII-art banner; the objective and the room say the same in words.
        observation = f"{state.objective.strip()}\n\n{_clean(state.description)}"
        admissible = sorted(state.admissible_commands or [])
        return EpisodeStart(
            observation=self._with_actions(observation, admissible),
            instructions=INSTRUCTIONS,
            admissible_actions=admissible,
            info={"walkthrough": list(state.get("extra.walkthrough") or []), "max_score": state.max_score},
        )

    def act(self, action: str) -> StepOutcome:
        """Send the normalised command to the game; an empty reply is answered without a game move."""
        command = normalise_command(action)
        before = self._state
        admissible = sorted(before.admissible_commands or [])
        if not command:
            text = "Your reply contained no command. Reply with one command, such as 'look' or 'go north'."
            return StepOutcome(
                observation=self._with_actions(text, admissible),
                signals={"valid_action": False, "score": before.score, "progress": self._progress(before)},
                admissible_actions=admissible,
            )
        valid = command in {a.lower() for a in admissible}  # the game's parser ignores case
        state, _, done = self._game_env.step(command)
        self._state = state
        reward = float(state.score - before.score)
        admissible = sorted(state.admissible_commands or [])
        won, lost = bool(state.won), bool(state.lost)
        return StepOutcome(
            observation=self._with_actions(_clean(state.feedback), [] if done else admissible),
            reward=reward,
            terminated=bool(done or won or lost),
            success=won if (done or won or lost) else None,
            signals={"valid_action": valid, "score": state.score, "progress": self._progress(state)},
            admissible_actions=admissible,
            info={"command": command, "won": won, "lost": lost},
        )

    def close(self) -> None:
        """Stop the game interpreter."""
        self._close_game()
        super().close()

    def _with_actions(self, text: str, admissible: list[str]) -> str:
        if self.show_admissible and admissible:
            return f"{text}\n\nAvailable actions: {', '.join(admissible)}"
        return text

    @staticmethod
    def _progress(state: Any) -> float:
        return float(state.score) / float(state.max_score) if state.max_score else 0.0

    def _close_game(self) -> None:
        if self._game_env is not None:
            self._game_env.close()
        self._game_env, self._game_task, self._state = None, None, None

