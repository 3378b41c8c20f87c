"""A fully observed grid maze: every observation shows the whole maze; walk from `@` to `G`.

Design (documented for the README and the eval configs):
- Mazes are perfect mazes (one path between any two cells) carved by a randomized depth-first
  search on a `size` x `size` grid of cells, from `random.Random` seeded with the task id, so
  `maze-5x5-0007` is the same maze on every machine.
- The agent starts on a random cell; the goal is a cell farthest from it, so paths are long.
- Actions: up/down/left/right (or north/south/west/east, u/d/l/r, 'go up'), any case. A move
  into a wall is `valid_action: False` and leaves the agent where it was.
- Reward 1.0 on reaching the goal, minus `step_penalty` (default 0) on every turn.
- `max_turns` defaults to 2 x the number of cells (50 on 5x5): at least twice the longest path
  a maze of that size can have.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentgym.env import EpisodeStart, StepOutcome, TextEnv
from agentgym.envs.games.paths import distance_signals, distances_from, shortest_moves
from agentgym.errors import EnvConfigError

Cell = tuple[int, int]  # (row, column), rows counted down from the top
MOVES: dict[str, Cell] = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}
ALIASES = {
    **{m: m for m in MOVES},
    "north": "up", "south": "down", "west": "left", "east": "right",
    "n": "up", "s": "down", "w": "left", "e": "right", "u": "up", "d": "down", "l": "left", "r": "right",
}
MAX_SIZE = 30  # a 30x30 maze is already a 61-line observation
WALL, FLOOR, AGENT, GOAL = "#", " ", "@", "G"

INSTRUCTIONS = (
    "You are in a maze drawn as text: # is a wall, @ is you and G is the goal. Each turn reply with "
    "exactly one move: up, down, left or right. Reply with the move only: no explanation, no quotes."
)


@dataclass(frozen=True)
class Maze:
    """A generated maze: its size, open passages as a move-labelled graph, start and goal cells."""

    size: int
    graph: dict[Cell, dict[str, Cell]]
    start: Cell
    goal: Cell


def carve(size: int, rng: random.Random) -> dict[Cell, dict[str, Cell]]:
    """A perfect maze by randomized depth-first search: for each cell, the moves that lead through an opening."""
    graph: dict[Cell, dict[str, Cell]] = {(r, c): {} for r in range(size) for c in range(size)}
    start = (rng.randrange(size), rng.randrange(size))
    stack, seen = [start], {start}
    while stack:
        cell = stack[-1]
        neighbours = [(m, _shift(cell, m)) for m in MOVES]
        options = [(m, n) for m, n in neighbours if n in graph and n not in seen]
        if not options:
            stack.pop()
            continue
        move, nxt = rng.choice(options)
        graph[cell][move] = nxt
        graph[nxt][_opposite(move)] = cell
        seen.add(nxt)
        stack.append(nxt)
    # Moves are listed in MOVES order in every cell, so BFS tie-breaks do not depend on carving order.
    return {cell: {m: moves[m] for m in MOVES if m in moves} for cell, moves in graph.items()}


def generate_maze(size: int, seed: str) -> Maze:
    """The maze of `seed`: carved, with a random start and a goal as far from it as the maze allows."""
    rng = random.Random(seed)  # str seeds are hashed with SHA-512: the same maze on every machine
    graph = carve(size, rng)
    start = (rng.randrange(size), rng.randrange(size))
    dist = distances_from(graph, start)
    far = max(dist.values())
    goal = rng.choice(sorted(cell for cell, d in dist.items() if d == far))
    return Maze(size, graph, start, goal)


def render(maze: Maze, agent: Cell) -> str:
    """The maze as ASCII art, (2 size + 1) lines of (2 size + 1) characters, with `@` and `G` on it."""
    side = 2 * maze.size + 1
    grid = [[WALL] * side for _ in range(side)]
    for (r, c), moves in maze.graph.items():
        grid[2 * r + 1][2 * c + 1] = FLOOR
        for move in moves:
            dr, dc = MOVES[move]
            grid[2 * r + 1 + dr][2 * c + 1 + dc] = FLOOR
    grid[2 * maze.goal[0] + 1][2 * maze.goal[1] + 1] = GOAL
    grid[2 * agent[0] + 1][2 * agent[1] + 1] = AGENT
    return "\n".join("".join(row) for row in grid)


def normalise_move(text: str) -> str | None:
    """The move in a reply ('Go North.' -> 'up'), or None when it names no move."""
    for line in text.strip().splitlines():
        words = re.sub(r"[^a-z ]", " ", line.lower()).split()
        if words:
            if words[0] in ("go", "move", "walk", "step") and len(words) > 1:
                words = words[1:]
            return ALIASES.get(words[0]) if len(words) == 1 else None
    return None


def _shift(cell: Cell, move: str) -> Cell:
    """The cell one `move` away from `cell` (maybe off the grid)."""
    dr, dc = MOVES[move]
    return (cell[0] + dr, cell[1] + dc)


def _opposite(move: str) -> str:
    """The move that undoes `move`."""
    return {"up": "down", "down": "up", "left": "right", "right": "left"}[move]


class MazeEnv(TextEnv):
    """`num_mazes` seeded mazes of `size` x `size` cells; task ids `maze-5x5-0000` ..."""

    def __init__(
        self,
        size: int = 5,
        num_mazes: int = 200,
        max_turns: int | None = None,
        step_penalty: float = 0.0,
        show_admissible: bool = True,
        render_mode: str | None = None,
    ) -> None:
        size, num_mazes = int(size), int(num_mazes)
        if not 2 <= size <= MAX_SIZE:
            raise EnvConfigError(f"size must be between 2 and {MAX_SIZE} (cells per side), got {size}")
        if not 1 <= num_mazes <= 10_000:
            raise EnvConfigError(f"num_mazes must be between 1 and 10000, got {num_mazes}")
        if step_penalty < 0:
            raise EnvConfigError(f"step_penalty must be 0 or more, got {step_penalty}")
        if max_turns is not None and int(max_turns) < 1:
            raise EnvConfigError(f"max_turns must be at least 1, got {max_turns}")
        turns = int(max_turns) if max_turns is not None else 2 * size * size
        super().__init__(max_turns=turns, render_mode=render_mode)
        self.size = size
        self.step_penalty = float(step_penalty)
        self.show_admissible = bool(show_admissible)
        self._tasks = [f"maze-{size}x{size}-{i:04d}" for i in range(num_mazes)]
        self._maze: Maze | None = None
        self._agent: Cell = (0, 0)
        self._dist: dict[Cell, int] = {}

    def task_ids(self) -> Sequence[str]:
        """One task per seeded maze."""
        return list(self._tasks)

    def start(self, task_id: str) -> EpisodeStart:
        """Generate the task's maze and put the agent on its start cell."""
        maze = generate_maze(self.size, f"agentgym-{task_id}")
        self._maze, self._agent = maze, maze.start
        self._dist = distances_from(maze.graph, maze.goal)  # the graph is undirected: distance *to* the goal
        path = shortest_moves(maze.graph, maze.start, maze.goal) or []
        rules = (
            "Walk through the maze to the goal. # is a wall, @ is you, G is the goal. "
            "Each turn move one cell: up, down, left or right. Moving into a wall does nothing."
        )
        return EpisodeStart(
            observation=f"{rules}\n\n{self._view()}",
            instructions=INSTRUCTIONS,
            admissible_actions=self._open_moves(),
            info={"walkthrough": path, "answer": " ".join(path), "shortest_path_length": len(path)},
        )

    def act(self, action: str) -> StepOutcome:
        """Move the agent one cell, unless the move is unknown or into a wall."""
        maze = self._require_maze()
        move = normalise_move(action)
        moves = maze.graph[self._agent]
        if move is None:
            head = f"'{action.strip()[:40]}' is not a move. Reply with up, down, left or right."
        elif move not in moves:
            head = f"You bumped into a wall moving {move}; you stay where you are."
        else:
            self._agent = moves[move]
            head = f"You moved {move}."
        valid = move is not None and move in moves
        won = self._agent == maze.goal
        if won:
            head += " You reached the goal!"
        return StepOutcome(
            observation=f"{head}\n\n{self._view()}",
            reward=(1.0 if won else 0.0) - self.step_penalty,
            terminated=won,
            success=True if won else None,
            signals=self._signals(valid),
            admissible_actions=[] if won else self._open_moves(),
        )

    def _view(self) -> str:
        """The maze with the agent, where agent and goal are, and (optionally) the open moves."""
        maze = self._require_maze()
        (ar, ac), (gr, gc) = self._agent, maze.goal
        lines = [
            render(maze, self._agent),
            f"You (@) are at row {ar + 1}, column {ac + 1}; the goal (G) is at row {gr + 1}, column {gc + 1} "
            f"(rows count from the top, columns from the left, {self.size} of each).",
        ]
        if self.show_admissible and self._agent != maze.goal:
            lines.append(f"Moves that do not hit a wall: {', '.join(self._open_moves())}.")
        return "\n".join(lines)

    def _open_moves(self) -> list[str]:
        """The moves from the agent's cell that do not hit a wall."""
        return list(self._require_maze().graph[self._agent])

    def _signals(self, valid: bool) -> dict[str, Any]:
        """Validity, the distance left and the share of the start's distance covered (0 if farther than at start)."""
        return distance_signals(valid, self._dist[self._require_maze().start], self._dist[self._agent])

    def _require_maze(self) -> Maze:
        """The current maze; reset() makes one."""
        if self._maze is None:
            raise RuntimeError("call reset() before using the maze")
        return self._maze
