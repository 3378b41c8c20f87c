"""Text navigation in a partially observed house: find the named room, seeing one room at a time.

Design (documented for the README and the eval configs):
- A house is `num_rooms` named rooms laid on a hidden grid, so compass directions agree both
  ways (north from A to B means south from B to A). It grows from one room by adding rooms next
  to placed ones, each joined to the room it grew from; a few extra doors between neighbouring
  rooms make loops. Everything comes from `random.Random` seeded with the task id.
- The goal is to reach one named room (no objects to carry). The observation shows the goal,
  the current room's description and the directions of its exits, never the map nor where an
  exit leads.
- Actions: 'go north', 'north' or 'n' (and east, south, west); 'look' describes the room again.
  A direction without an exit or an unknown command is `valid_action: False`.
- Reward 1.0 on entering the goal room, 0 otherwise. `max_turns` defaults to 4 x num_rooms:
  exploring a tree of n rooms depth-first takes at most 2 (n - 1) moves.
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

Spot = tuple[int, int]  # a room's place on the hidden grid: (row, column), north is row - 1
DIRECTIONS: dict[str, Spot] = {"north": (-1, 0), "east": (0, 1), "south": (1, 0), "west": (0, -1)}
OPPOSITE = {"north": "south", "south": "north", "east": "west", "west": "east"}
ALIASES = {**{d: d for d in DIRECTIONS}, "n": "north", "e": "east", "s": "south", "w": "west"}
LOOP_DOOR_CHANCE = 0.25  # chance that two neighbouring rooms not joined yet get a door between them

# Room names and what one sees there; the description says nothing about the rest of the house.
ROOMS: dict[str, str] = {
    "kitchen": "Copper pans hang above a wide stove, and the air smells of bread.",
    "hallway": "A long rug runs between walls lined with coat hooks.",
    "study": "A desk covered in papers faces a window; an armchair sits in the corner.",
    "library": "Shelves of books reach the ceiling, with a ladder on rails.",
    "bedroom": "A large bed with a patchwork quilt stands against the wall.",
    "bathroom": "White tiles, a claw-footed bathtub and a mirror misted at the edges.",
    "pantry": "Jars of jam and sacks of flour fill narrow shelves.",
    "dining room": "A long table is set for eight under a crystal chandelier.",
    "living room": "A sofa and two armchairs face a fireplace.",
    "conservatory": "Potted palms and ferns crowd a room made mostly of glass.",
    "laundry": "A washing machine hums beside baskets of folded sheets.",
    "nursery": "A rocking horse stands among scattered wooden blocks.",
    "music room": "A grand piano waits with its lid open beside a harp.",
    "gallery": "Framed portraits stare down from the walls.",
    "workshop": "Saws and chisels hang over a workbench dusted with shavings.",
    "guest room": "A neatly made bed and an empty wardrobe wait for visitors.",
    "billiard room": "A green baize table sits under a low lamp.",
    "wine cellar": "Racks of dusty bottles line the cool stone walls.",
    "game room": "Board games are stacked on a table beside a dartboard.",
    "sewing room": "A sewing machine and bolts of cloth fill a sunny corner.",
    "office": "A computer, a printer and a filing cabinet stand in a tidy row.",
    "storeroom": "Boxes and old furniture are piled under dust sheets.",
    "greenhouse": "Tomato vines climb canes in warm, damp air.",
    "foyer": "A coat stand and an umbrella rack greet you by the front door.",
}
MAX_ROOMS = len(ROOMS)

INSTRUCTIONS = (
    "You are exploring a house one room at a time. Each turn reply with exactly one command: "
    "'go north', 'go east', 'go south', 'go west' (or just the direction), or 'look'. "
    "Reply with the command only: no explanation, no quotes."
)


@dataclass(frozen=True)
class House:
    """A generated house: rooms with their exits as a direction-labelled graph, start and goal rooms."""

    exits: dict[str, dict[str, str]]
    start: str
    goal: str


def lay_out(names: Sequence[str], rng: random.Random) -> dict[str, dict[str, str]]:
    """Place rooms on a grid one by one, each beside a placed room and joined to it; add a few loop doors."""
    spots: dict[Spot, str] = {(0, 0): names[0]}
    exits: dict[str, dict[str, str]] = {names[0]: {}}
    for name in names[1:]:
        free = sorted(
            {(_shift(spot, d), spots[spot], d) for spot in spots for d in DIRECTIONS if _shift(spot, d) not in spots}
        )
        spot, parent, direction = rng.choice(free)
        spots[spot] = name
        exits[name] = {}
        _join(exits, parent, direction, name)
    for spot, name in sorted(spots.items()):
        for direction in ("east", "south"):  # each neighbouring pair is looked at once
            other = spots.get(_shift(spot, direction))
            if other and direction not in exits[name] and rng.random() < LOOP_DOOR_CHANCE:
                _join(exits, name, direction, other)
    # Exits are listed in compass order in every room, so what the agent reads and BFS tie-breaks are stable.
    return {room: {d: doors[d] for d in DIRECTIONS if d in doors} for room, doors in exits.items()}


def generate_house(num_rooms: int, seed: str) -> House:
    """The house of `seed`: `num_rooms` rooms, a random start and a goal room at least two moves away if any is."""
    rng = random.Random(seed)  # str seeds are hashed with SHA-512: the same house on every machine
    names = rng.sample(sorted(ROOMS), num_rooms)
    exits = lay_out(names, rng)
    start = rng.choice(sorted(exits))
    dist = distances_from(exits, start)
    far = sorted(room for room, d in dist.items() if d >= 2) or sorted(room for room in exits if room != start)
    return House(exits, start, rng.choice(far))


def parse_command(text: str) -> str | None:
    """The command in a reply: a direction ('Go North.' -> 'north'), 'look', or None for anything else."""
    for line in text.strip().splitlines():
        words = re.sub(r"[^a-z ]", " ", line.lower()).split()
        if words:
            if words[0] in ("go", "move", "walk", "head") and len(words) == 2:
                words = words[1:]
            if len(words) != 1:
                return None
            return "look" if words[0] in ("look", "l") else ALIASES.get(words[0])
    return None


def _shift(spot: Spot, direction: str) -> Spot:
    """The grid spot one step in `direction`."""
    dr, dc = DIRECTIONS[direction]
    return (spot[0] + dr, spot[1] + dc)


def _join(exits: dict[str, dict[str, str]], room: str, direction: str, other: str) -> None:
    """A door from `room` in `direction` to `other`, and back the opposite way."""
    exits[room][direction] = other
    exits[other][OPPOSITE[direction]] = room


class TextNavEnv(TextEnv):
    """`num_houses` seeded houses of `num_rooms` rooms; task ids `nav-0000` ..."""

    def __init__(
        self,
        num_rooms: int = 8,
        num_houses: int = 200,
        max_turns: int | None = None,
        render_mode: str | None = None,
    ) -> None:
        num_rooms, num_houses = int(num_rooms), int(num_houses)
        if not 2 <= num_rooms <= MAX_ROOMS:
            raise EnvConfigError(f"num_rooms must be between 2 and {MAX_ROOMS}, got {num_rooms}")
        if not 1 <= num_houses <= 10_000:
            raise EnvConfigError(f"num_houses must be between 1 and 10000, got {num_houses}")
        if max_turns is not None and int(max_turns) < 1:
            raise EnvConfigError(f"max_turns must be at least 1, got {max_turns}")
        turns = int(max_turns) if max_turns is not None else 4 * num_rooms
        super().__init__(max_turns=turns, render_mode=render_mode)
        self.num_rooms = num_rooms
        self._tasks = [f"nav-{i:04d}" for i in range(num_houses)]
        self._house: House | None = None
        self._room = ""
        self._dist: dict[str, int] = {}

    def task_ids(self) -> Sequence[str]:
        """One task per seeded house."""
        return list(self._tasks)

    def start(self, task_id: str) -> EpisodeStart:
        """Generate the task's house and put the agent in its start room."""
        # The room count is part of the seed: nav-0007 with 8 rooms and with 12 are unrelated houses.
        house = generate_house(self.num_rooms, f"agentgym-nav-{self.num_rooms}-{task_id}")
        self._house, self._room = house, house.start
        self._dist = distances_from(house.exits, house.goal)  # doors work both ways: distance *to* the goal
        path = [f"go {d}" for d in shortest_moves(house.exits, house.start, house.goal) or []]
        rules = (
            f"You are in a house of {self.num_rooms} rooms, and you see only the room you are in. "
            f"Goal: find the {house.goal}. Move with 'go north', 'go east', 'go south' or 'go west' "
            "through the exits of the room; 'look' describes the room again."
        )
        return EpisodeStart(
            observation=f"{rules}\n\n{self._describe()}",
            instructions=INSTRUCTIONS,
            admissible_actions=self._exits(),
            info={"walkthrough": path, "answer": house.goal, "shortest_path_length": len(path)},
        )

    def act(self, action: str) -> StepOutcome:
        """Go through an exit, or look; anything else leaves the agent where it is."""
        house = self._require_house()
        command = parse_command(action)
        doors = house.exits[self._room]
        valid = command == "look" or command in doors
        if command is None:
            text = f"'{action.strip()[:40]}' is not a command here. Try 'go north' or 'look'.\n\n{self._describe()}"
        elif command == "look":
            text = self._describe()
        elif command not in doors:
            text = f"You can't go {command} from here.\n\n{self._describe()}"
        else:
            self._room = doors[command]
            text = f"You go {command}.\n\n{self._describe()}"
        won = self._room == house.goal
        if won:
            text += f"\n\nYou found the {house.goal}!"
        return StepOutcome(
            observation=text,
            reward=1.0 if won else 0.0,
            terminated=won,
            success=True if won else None,
            signals=self._signals(valid),
            admissible_actions=[] if won else self._exits(),
        )

    def _describe(self) -> str:
        """The current room as the agent sees it: the goal, the room, its exits (not where they lead)."""
        house = self._require_house()
        exits = list(house.exits[self._room])
        return (
            f"Goal: find the {house.goal}.\nYou are in the {self._room}. {ROOMS[self._room]}\n"
            f"Exits: {', '.join(exits)}."
        )

    def _exits(self) -> list[str]:
        """The moves available: one 'go <direction>' per exit of the current room."""
        return [f"go {d}" for d in self._require_house().exits[self._room]]

    def _signals(self, valid: bool) -> dict[str, Any]:
        """Validity, the distance left and the share of the start's distance covered (0 if farther than at start)."""
        return distance_signals(valid, self._dist[self._require_house().start], self._dist[self._room])

    def _require_house(self) -> House:
        """The current house; reset() makes one."""
        if self._house is None:
            raise RuntimeError("call reset() before using the house")
        return self._house
