"""ALFWorld games in the official `json_2.1.1` format: offline generation from alfworld's room layouts, listing, loading."""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agentgym.cache import cache_root, file_lock, recipe_key
from agentgym.errors import EnvConfigError

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)
SPLITS = ("train", "valid_seen", "valid_unseen")
DATA_SUBDIR = "json_2.1.1"
DEFAULT_NUM_GAMES = 120
MANIFEST = "agentgym-alfworld.json"
# Bump when the generated files change for the same seed, so cached game sets are rebuilt.
GENERATOR_VERSION = 1
_SPLIT_SHARES = (("valid_seen", 0.2), ("valid_unseen", 0.2))  # train takes the rest
_MAX_ATTEMPTS = 25

# The receptacle a desk lamp stands on; ALFRED's look_at_obj_in_light needs the lamp in one.
_LAMP_HOLDERS = ("Desk", "SideTable", "Dresser", "Shelf", "CoffeeTable", "TVStand")
_LAMP = "DeskLamp"
# Action constants the ALFRED domain names in preconditions: every problem must declare them.
_DOMAIN_OTYPES = ("Knife", "ButterKnife")
_DOMAIN_RTYPES = ("SinkBasin", "Microwave", "Fridge")
# The appliance a task uses, which is therefore never its destination or the object's start.
_APPLIANCE = {
    "pick_clean_then_place_in_recep": "SinkBasin",
    "pick_heat_then_place_in_recep": "Microwave",
    "pick_cool_then_place_in_recep": "Fridge",
}
_PROPERTY = {
    "pick_clean_then_place_in_recep": "Cleanable",
    "pick_heat_then_place_in_recep": "Heatable",
    "pick_cool_then_place_in_recep": "Coolable",
}
_PDDL_CHARS = (("-", "_minus_"), ("|", "_bar_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_"))


# -- alfworld's own data ---------------------------------------------------------------


def import_alfworld(module: str) -> Any:
    """Import an alfworld module; importing alfworld sets ALFWORLD_DATA process-wide, which is undone here."""
    before = os.environ.get("ALFWORLD_DATA")
    try:
        return importlib.import_module(module)
    finally:
        # Otherwise `ALFWORLD_DATA` would look user-set to every later check in this process.
        if before is None:
            os.environ.pop("ALFWORLD_DATA", None)
        else:
            os.environ["ALFWORLD_DATA"] = before


def _package_dir() -> Path:
    """The installed alfworld package (found without importing it)."""
    spec = importlib.util.find_spec("alfworld")
    if spec is None or not spec.submodule_search_locations:
        raise EnvConfigError("the alfworld package is not installed; install agentgym's dependencies (run `make setup`)")
    return Path(next(iter(spec.submodule_search_locations)))


def domain_text() -> str:
    """The ALFRED PDDL domain shipped with alfworld."""
    return (_package_dir() / "data" / "alfred.pddl").read_text()


def grammar_text() -> str:
    """The ALFRED text grammar (alfred.twl2) shipped with alfworld, its goal still 'UNKNOWN GOAL'."""
    return (_package_dir() / "data" / "alfred.twl2").read_text()


def alfworld_version() -> str:
    """The installed alfworld's version (it names cached game sets)."""
    return importlib.metadata.version("alfworld")


def templated_goal(traj_data: dict[str, Any], rng: random.Random) -> str:
    """The goal text alfworld makes from a trial's task type and targets (one of its templates, drawn with `rng`)."""
    glib = import_alfworld("alfworld.gen.goal_library")
    params = traj_data["pddl_params"]
    key = traj_data["task_type"] + ("_slice" if params.get("object_sliced") else "")
    template = rng.choice(glib.gdict[key]["templates"])
    fields = {k: (params.get(f"{k}_target") or "").lower() for k in ("object", "parent", "toggle", "mrecep")}
    return template.format(obj=fields["object"], recep=fields["parent"], toggle=fields["toggle"], mrecep=fields["mrecep"])


def game_data(traj_data: dict[str, Any], problem: str, goal: str) -> dict[str, Any]:
    """The content of a `game.tw-pddl` file, as alfworld's conversion writes it (solvable/walkthrough still unknown)."""
    misc = import_alfworld("alfworld.agents.utils.misc")
    # alfworld puts a human annotation in the grammar with this probability; the goal is passed as the only one.
    with_goal = {**traj_data, "turk_annotations": {"anns": [{"task_desc": goal}]}}
    grammar = misc.add_task_to_grammar(grammar_text(), with_goal, goal_desc_human_anns_prob=1.0, rng=random.Random(0))
    return {"pddl_domain": domain_text(), "grammar": grammar, "pddl_problem": problem, "solvable": None, "walkthrough": None}


def load_game_data(trial_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A trial's `game.tw-pddl`, or one built in memory from its `initial_state.pddl` when it has none."""
    trial = Path(trial_dir)
    game_file = trial / "game.tw-pddl"
    if game_file.is_file():
        return json.loads(game_file.read_text())
    traj = json.loads((trial / "traj_data.json").read_text())
    # alfworld draws the template at random; the trial's name seeds the draw so a game reads the same every time.
    goal = templated_goal(traj, random.Random(trial.name))
    return game_data(traj, (trial / "initial_state.pddl").read_text(), goal)


# -- listing ---------------------------------------------------------------------------


def split_dir(data_dir: str | os.PathLike[str], split: str) -> Path:
    """Where a split's task folders are: `<data_dir>/json_2.1.1/<split>` (alfworld's layout) or `<data_dir>/<split>`."""
    if split not in SPLITS:
        raise EnvConfigError(f"unknown ALFWorld split {split!r}; pick one of {', '.join(SPLITS)}")
    root = Path(data_dir).expanduser()
    for candidate in (root / DATA_SUBDIR / split, root / split):
        if candidate.is_dir():
            return candidate
    raise EnvConfigError(
        f"no ALFWorld split {split!r} in {str(root)!r} (looked for {root / DATA_SUBDIR / split}); "
        f"make games with `agentgym alfworld make-games --n 120 --out {root}`, or set ALFWORLD_DATA to alfworld's data"
    )


def _playable(trial: Path, split_root: Path, files: list[str]) -> bool:
    """alfworld's own rules: no movable-receptacle or sliced trials, no game known to be unsolvable."""
    # alfworld tests the whole path; only the part inside the split is looked at here, so no parent folder can match.
    inside = trial.relative_to(split_root).as_posix()
    if "traj_data.json" not in files or "movable" in inside or "Sliced" in inside:
        return False
    if "game.tw-pddl" in files:
        # A plain text search: official files are large and only this flag matters here.
        return '"solvable": false' not in (trial / "game.tw-pddl").read_text()
    return "initial_state.pddl" in files


def list_games(games_dir: str | os.PathLike[str], split: str = "train") -> list[Path]:
    """The playable trial folders of a split, sorted; a clear error when there are none."""
    where = split_dir(games_dir, split)
    trials = sorted(Path(root) for root, _, files in os.walk(where) if _playable(Path(root), where, files))
    if not trials:
        raise EnvConfigError(
            f"no ALFWorld games (trial folders with traj_data.json and game.tw-pddl or initial_state.pddl) in "
            f"{str(where)!r}; make some with `agentgym alfworld make-games --n 120 --out {Path(games_dir).expanduser()}`"
        )
    return trials


# -- rooms -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Receptacle:
    """A fixed receptacle of a room: its ALFRED object id, class and the spot the agent stands at to use it."""

    id: str
    cls: str
    loc: str


@dataclass(frozen=True)
class Scene:
    """One AI2-THOR floor plan as alfworld's layouts describe it: its receptacles and the small objects found there."""

    num: int
    room: str
    receptacles: tuple[Receptacle, ...]
    object_types: tuple[str, ...]
    has_lamp: bool


def _constants() -> Any:
    return import_alfworld("alfworld.gen.constants")


def _coords(object_id: str) -> tuple[float, float, float]:
    x, y, z = object_id.split("|")[1:4]
    return float(x), float(y), float(z)


def _object_id(cls: str, x: float, y: float, z: float, prefix: str | None = None) -> str:
    return f"{prefix or cls}|{x:+06.2f}|{y:+06.2f}|{z:+06.2f}" + (f"|{cls}" if prefix else "")


def _loc(x: float, z: float, rotation: int, horizon: int) -> str:
    """A navigation spot named as alfworld names them: grid cells of 0.25 m, rotation in quarter turns."""
    return f"loc|{round(x * 4)}|{round(z * 4)}|{int(rotation) // 90 % 4}|{int(horizon)}"


def _unique_loc(loc: str, taken: set[str]) -> str:
    """Shift a spot along x until it is free: each receptacle gets its own spot, so 'go to X' names one receptacle."""
    _, x, z, r, h = loc.split("|")
    step = 0
    while loc in taken:
        step += 1
        loc = f"loc|{int(x) + step}|{z}|{r}|{h}"
    taken.add(loc)
    return loc


@functools.lru_cache(maxsize=None)
def load_scene(num: int) -> Scene:
    """Floor plan `num` from alfworld's layouts; receptacles its layout lacks (burners, coffee machines) are placed by a fixed draw."""
    c = _constants()
    layouts = _package_dir() / "gen" / "layouts"
    present = json.loads((layouts / f"FloorPlan{num}-objects.json").read_text())
    spots = json.loads((layouts / f"FloorPlan{num}-openable.json").read_text())
    static = set(c.RECEPTACLES) - set(c.MOVABLE_RECEPTACLES)
    room = next(name for name, nums in c.SCENE_TYPE.items() if num in nums)
    taken: set[str] = set()
    receptacles = []
    for rid in sorted(spots):
        parts = rid.split("|")
        cls = parts[4] if len(parts) > 4 else parts[0]  # sinks are "Sink|x|y|z|SinkBasin"
        if cls in static:
            x, z, rotation, horizon = spots[rid]
            receptacles.append(Receptacle(rid, cls, _unique_loc(_loc(x, z, rotation, horizon), taken)))
    rng = random.Random(f"alfworld-scene-{num}")
    have = {r.cls for r in receptacles}
    for cls in sorted(set(present) & static - have):
        for _ in range(4 if cls == "StoveBurner" else 1):
            x, y, z = rng.uniform(-2.5, 2.5), rng.uniform(0.0, 1.2), rng.uniform(-2.5, 2.5)
            prefix = {"SinkBasin": "Sink", "BathtubBasin": "Bathtub"}.get(cls)
            rid = _object_id(cls, x, y, z, prefix)
            loc = _loc(x + rng.choice((-0.5, 0.5)), z + rng.choice((-0.5, 0.5)), rng.choice((0, 90, 180, 270)), 30)
            receptacles.append(Receptacle(rid, cls, _unique_loc(loc, taken)))
    holdable = set().union(*c.VAL_RECEPTACLE_OBJECTS.values())
    small = sorted(t for t in set(present) if t in holdable and t not in static and "Sliced" not in t)
    lamp = _LAMP in present and any(r.cls in _LAMP_HOLDERS for r in receptacles)
    return Scene(num, room, tuple(sorted(receptacles, key=lambda r: r.id)), tuple(small), lamp)


def split_scenes(split: str) -> list[int]:
    """The floor plans a split draws from: valid_unseen gets ALFRED's held-out test rooms, never seen in training."""
    c = _constants()
    return sorted(c.TEST_SCENE_NUMBERS if split == "valid_unseen" else c.TRAIN_SCENE_NUMBERS)


# -- one game ----------------------------------------------------------------------------


@dataclass
class _Draw:
    task_type: str
    scene: Scene
    obj: str
    parent: str
    toggle: str
    objects: dict[str, tuple[str, Receptacle]]  # object id -> (class, receptacle it is in)
    lamp: tuple[str, Receptacle] | None
    agent_loc: str


def _holders(c: Any, obj: str) -> set[str]:
    return {r for r, held in c.VAL_RECEPTACLE_OBJECTS.items() if obj in held}


def _combos(c: Any, scene: Scene, task: str) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """(object, destination, lamp, classes the object may start in) for every feasible `task` in `scene`."""
    classes = {r.cls for r in scene.receptacles}
    out = []
    for obj in scene.object_types:
        holders = _holders(c, obj) & classes
        if task == "look_at_obj_in_light":
            if scene.has_lamp and holders:
                out.append((obj, "", _LAMP, tuple(sorted(holders))))
            continue
        appliance = _APPLIANCE.get(task)
        if appliance and (appliance not in classes or obj not in c.VAL_ACTION_OBJECTS[_PROPERTY[task]]):
            continue
        for parent in sorted(holders - {appliance}):
            # Objects in a fridge count as cold and in a microwave as hot in ALFRED, so they never start there.
            start = holders - {parent} - ({appliance} if appliance in ("Fridge", "Microwave") else set())
            if start:
                out.append((obj, parent, "", tuple(sorted(start))))
    return out


def _draw(task: str, scenes: list[Scene], rng: random.Random) -> _Draw:
    """Pick a room, the task's targets and where every object starts."""
    c = _constants()
    feasible = [(s, combos) for s in scenes if s.room in c.GOALS_VALID[task] for combos in [_combos(c, s, task)] if combos]
    if not feasible:
        raise EnvConfigError(f"no room of this split can hold a {task} task")
    scene, combos = rng.choice(feasible)
    obj, parent, toggle, start = rng.choice(combos)
    classes = {r.cls for r in scene.receptacles}
    objects: dict[str, tuple[str, Receptacle]] = {}

    def place(cls: str, allowed: set[str] | tuple[str, ...], count: int) -> None:
        where = [r for r in scene.receptacles if r.cls in allowed]
        for _ in range(count):
            recep = rng.choice(where)
            x, y, z = _coords(recep.id)
            oid = _object_id(cls, x + rng.uniform(-0.4, 0.4), y + rng.uniform(0.0, 0.3), z + rng.uniform(-0.4, 0.4))
            if oid not in objects:
                objects[oid] = (cls, recep)

    place(obj, start, rng.randint(2, 3) if task == "pick_two_obj_and_place" else rng.randint(1, 3))
    if task == "pick_two_obj_and_place" and len(objects) < 2:
        place(obj, start, 1)
    others = [t for t in scene.object_types if t != obj and _holders(c, t) & classes]
    for cls in sorted(rng.sample(others, min(len(others), rng.randint(6, 10)))):
        place(cls, sorted(_holders(c, cls) & classes), rng.randint(1, 2))
    lamp = None
    if toggle:
        holder = rng.choice([r for r in scene.receptacles if r.cls in _LAMP_HOLDERS])
        x, y, z = _coords(holder.id)
        lamp = (_object_id(toggle, x + rng.uniform(-0.3, 0.3), y + 0.1, z + rng.uniform(-0.3, 0.3)), holder)
    taken = {r.loc for r in scene.receptacles}
    xs = [int(r.loc.split("|")[1]) for r in scene.receptacles]
    zs = [int(r.loc.split("|")[2]) for r in scene.receptacles]
    start_loc = f"loc|{rng.randint(min(xs), max(xs))}|{rng.randint(min(zs), max(zs))}|{rng.randrange(4)}|30"
    return _Draw(task, scene, obj, parent, toggle, objects, lamp, _unique_loc(start_loc, taken))


def _pddl_name(ident: str) -> str:
    """An ALFRED id in PDDL's alphabet, the way alfworld mangles them ('|' -> '_bar_', '-' -> '_minus_', ...)."""
    for char, word in _PDDL_CHARS:
        ident = ident.replace(char, word)
    return ident


def _problem(d: _Draw, name: str) -> str:
    """The PDDL problem (`initial_state.pddl`) of a draw, with alfworld's goal for its task type."""
    c = _constants()
    glib = import_alfworld("alfworld.gen.goal_library")
    objects = dict(d.objects)
    if d.lamp:
        objects[d.lamp[0]] = (d.toggle, d.lamp[1])
    otypes = sorted({cls for cls, _ in objects.values()} | set(_DOMAIN_OTYPES))
    rtypes = sorted({r.cls for r in d.scene.receptacles} | set(_DOMAIN_RTYPES))
    locs = sorted({r.loc for r in d.scene.receptacles} | {d.agent_loc})
    n = _pddl_name
    decl = ["agent1 - agent"] + [f"{t}Type - otype" for t in otypes] + [f"{t}Type - rtype" for t in rtypes]
    decl += [f"{n(o)} - object" for o in sorted(objects)] + [f"{n(r.id)} - receptacle" for r in d.scene.receptacles]
    decl += [f"{n(loc)} - location" for loc in locs]
    init = ["(= (total-cost) 0)"]
    for r in d.scene.receptacles:
        init.append(f"(receptacleType {n(r.id)} {r.cls}Type)")
        if r.cls in c.OPENABLE_CLASS_SET:
            init.append(f"(openable {n(r.id)})")
        init.append(f"(receptacleAtLocation {n(r.id)} {n(r.loc)})")
    for rt in rtypes:
        init += [f"(canContain {rt}Type {ot}Type)" for ot in otypes if ot in c.VAL_RECEPTACLE_OBJECTS.get(rt, ())]
    props = {"cleanable": "Cleanable", "heatable": "Heatable", "coolable": "Coolable", "sliceable": "Sliceable"}
    for oid in sorted(objects):
        cls, recep = objects[oid]
        init.append(f"(objectType {n(oid)} {cls}Type)")
        if cls in c.VAL_ACTION_OBJECTS["Toggleable"]:
            init.append(f"(toggleable {n(oid)})")
        else:
            init.append(f"(pickupable {n(oid)})")
        init += [f"({p} {n(oid)})" for p, key in props.items() if cls in c.VAL_ACTION_OBJECTS[key]]
        if cls in c.MOVABLE_RECEPTACLES_SET:
            init.append(f"(isReceptacleObject {n(oid)})")
        init += [f"(inReceptacle {n(oid)} {n(recep.id)})", f"(objectAtLocation {n(oid)} {n(recep.loc)})"]
    init.append(f"(atLocation agent1 {n(d.agent_loc)})")
    goal = glib.gdict[d.task_type]["pddl"].format(obj=d.obj, recep=d.parent, toggle=d.toggle, mrecep="")
    # The goal library writes '#' for the type dash (its text goes through `str.format`); it also closes `define`.
    goal = goal.replace("#", "-").strip()
    indent = "\n        "
    return (
        f"(define (problem plan_{name})\n    (:domain alfred)\n    (:objects{indent}{indent.join(decl)}\n    )\n"
        f"    (:init{indent}{indent.join(init)}\n    )\n\n    {goal}\n"
    )


_HIGH_ACTIONS = {"go": "GotoLocation", "open": "OpenObject", "close": "CloseObject", "take": "PickupObject",
                 "move": "PutObject", "clean": "CleanObject", "heat": "HeatObject", "cool": "CoolObject",
                 "use": "ToggleObject", "slice": "SliceObject"}


def _high_pddl(walkthrough: list[str]) -> list[dict[str, Any]]:
    """ALFRED's high-level plan ('plan.high_pddl') read off the planner's commands."""
    steps = []
    for i, command in enumerate(walkthrough):
        words = command.split()
        nouns = [w for w in words[1:] if not w.isdigit() and w not in ("to", "from", "with")]
        steps.append({"high_idx": i, "discrete_action": {"action": _HIGH_ACTIONS.get(words[0], words[0]), "args": nouns}})
    steps.append({"high_idx": len(walkthrough), "discrete_action": {"action": "NoOp", "args": []}})
    return steps


def _pddl_params(d: _Draw) -> dict[str, Any]:
    return {"object_target": d.obj, "parent_target": d.parent, "toggle_target": d.toggle,
            "mrecep_target": "", "object_sliced": False}


def _traj_data(d: _Draw, trial: str, goal: str, walkthrough: list[str], seed: int) -> dict[str, Any]:
    """The `traj_data.json` of a game: the fields alfworld reads, plus a scene record without AI2-THOR poses."""
    _, x, z, r, h = d.agent_loc.split("|")
    return {
        "task_id": trial,
        "task_type": d.task_type,
        "pddl_params": _pddl_params(d),
        "scene": {"floor_plan": f"FloorPlan{d.scene.num}", "scene_num": d.scene.num, "random_seed": seed,
                  "init_action": {"action": "TeleportFull", "x": int(x) * 0.25, "y": 0.9, "z": int(z) * 0.25,
                                  "rotation": int(r) * 90, "horizon": int(h)},
                  "object_poses": [], "object_toggles": [], "dirty_and_empty": False},
        "turk_annotations": {"anns": [{"task_desc": goal, "high_descs": list(walkthrough), "votes": [1, 1, 1]}]},
        "plan": {"high_pddl": _high_pddl(walkthrough), "low_actions": []},
        "generator": "agentgym.envs.text.alfworld_games (text-only: no AI2-THOR images or poses)",
    }


def _task_folder(d: _Draw) -> str:
    return f"{d.task_type}-{d.obj}-None-{d.parent or d.toggle}-{d.scene.num}"


_VERBS = {"pick_clean_then_place_in_recep": "clean", "pick_heat_then_place_in_recep": "heat",
          "pick_cool_then_place_in_recep": "cool"}


class _Trip:
    """A plan being written: its commands, the receptacles it opened and where the agent stands."""

    def __init__(self, name: Callable[[str], str], openable: set[str]) -> None:
        self.name, self.openable = name, openable
        self.steps: list[str] = []
        self.opened: set[str] = set()
        self.at = ""

    def go(self, recep: Receptacle, open_it: bool = True) -> None:
        if self.at != recep.id:
            self.steps.append(f"go to {self.name(recep.id)}")
            self.at = recep.id
        if open_it and recep.cls in self.openable and recep.id not in self.opened:
            self.steps.append(f"open {self.name(recep.id)}")
            self.opened.add(recep.id)

    def take(self, oid: str, recep: Receptacle) -> None:
        self.go(recep)
        self.steps.append(f"take {self.name(oid)} from {self.name(recep.id)}")

    def put(self, oid: str, dest: Receptacle) -> None:
        self.go(dest)
        self.steps.append(f"move {self.name(oid)} to {self.name(dest.id)}")


def _plan(d: _Draw, names: dict[str, str]) -> list[str]:
    """The shortest plan for a draw: the generator knows where it put every object, so no search is needed.

    Every choice of target instances and destination is written out and the shortest kept; the
    alfworld names ("cabinet 3") come from the loaded engine, `names`.
    """
    openable = _constants().OPENABLE_CLASS_SET

    def trip() -> _Trip:
        return _Trip(lambda ident: names[_pddl_name(ident).lower()], openable)

    targets = sorted(oid for oid, (cls, _) in d.objects.items() if cls == d.obj)
    dests = [r for r in d.scene.receptacles if r.cls == d.parent]
    options = []
    if d.task_type == "look_at_obj_in_light":
        assert d.lamp is not None
        for oid in targets:
            t = trip()
            t.take(oid, d.objects[oid][1])
            t.go(d.lamp[1], open_it=False)
            t.steps.append(f"use {t.name(d.lamp[0])}")
            options.append(t.steps)
    elif d.task_type == "pick_two_obj_and_place":
        for first, second, dest in ((a, b, p) for a in targets for b in targets if a != b for p in dests):
            t = trip()
            for oid in (first, second):
                t.take(oid, d.objects[oid][1])
                t.put(oid, dest)
            options.append(t.steps)
    else:
        appliances = sorted((r for r in d.scene.receptacles if r.cls == _APPLIANCE.get(d.task_type)), key=lambda r: r.id)
        for oid, dest in ((o, p) for o in targets for p in dests):
            t = trip()
            t.take(oid, d.objects[oid][1])
            if d.task_type in _VERBS:
                t.go(appliances[0], open_it=False)  # the domain heats, cools and cleans with the door shut
                t.steps.append(f"{_VERBS[d.task_type]} {t.name(oid)} with {t.name(appliances[0].id)}")
            t.put(oid, dest)
            options.append(t.steps)
    return min(options, key=len)


_ENGINE: Any = None  # one engine per process: each loads its own copy of the planner library


def _solve(d: _Draw, data: dict[str, Any]) -> list[str] | None:
    """The draw's plan, replayed in alfworld's engine: the plan when every command is valid and it wins, else None."""
    global _ENGINE
    from agentgym.envs.text.alfworld_env import AlfredEngine  # the env module imports this one at load time

    if _ENGINE is None:
        _ENGINE = AlfredEngine()
    # A known walkthrough stops the engine from running its own planner at reset (slow in large kitchens).
    _ENGINE.load({**data, "walkthrough": ["look"]})
    state = _ENGINE.reset()
    plan = _plan(d, _ENGINE.names())
    for command in plan:
        if state.won or command not in state.admissible_commands:
            return None
        state = _ENGINE.step(command)
    return plan if state.won else None


def _make_one(job: tuple[str, str, int, int, str]) -> dict[str, Any]:
    """Generate, check and write one game (retrying other draws until one checks out); its manifest entry."""
    root, split, j, seed, task = job
    scenes = [load_scene(num) for num in split_scenes(split)]
    trial = f"trial_s{seed}_{split}_{j:04d}"
    for attempt in range(_MAX_ATTEMPTS):
        rng = random.Random(f"alfworld:{seed}:{split}:{j}:{attempt}")
        d = _draw(task, scenes, rng)
        problem = _problem(d, trial)
        partial = {"task_type": task, "pddl_params": _pddl_params(d)}
        goal = templated_goal(partial, rng)
        data = game_data(partial, problem, goal)
        plan = _solve(d, data)
        if plan is None:
            continue
        data.update(solvable=True, walkthrough=plan)
        where = Path(root) / DATA_SUBDIR / split / _task_folder(d) / trial
        where.mkdir(parents=True, exist_ok=True)
        (where / "initial_state.pddl").write_text(problem)
        (where / "traj_data.json").write_text(json.dumps(_traj_data(d, trial, goal, plan, seed), indent=2) + "\n")
        (where / "game.tw-pddl").write_text(json.dumps(data))
        return {"path": str(where.relative_to(root)), "split": split, "index": j, "task_type": task, "scene": d.scene.num,
                "goal": goal, "steps": len(plan)}
    raise EnvConfigError(f"no solvable {task} game in {_MAX_ATTEMPTS} draws for {split} game {j} (seed {seed})")


# -- a game set ---------------------------------------------------------------------------


def split_sizes(n: int) -> dict[str, int]:
    """How `n` games divide over the splits: a fifth each to valid_seen and valid_unseen, the rest to train."""
    sizes = {split: round(n * share) for split, share in _SPLIT_SHARES}
    return {"train": n - sum(sizes.values()), **sizes}


def _jobs(root: Path, n: int, seed: int) -> list[tuple[str, str, int, int, str]]:
    jobs = []
    for offset, (split, size) in enumerate(split_sizes(n).items()):
        # Task types go round-robin inside each split, so every split with six games or more has all six.
        jobs += [(str(root), split, j, seed, TASK_TYPES[(j + offset) % len(TASK_TYPES)]) for j in range(size)]
    return jobs


def _manifest(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _recipe(n: int, seed: int) -> dict[str, Any]:
    return {"generator_version": GENERATOR_VERSION, "alfworld": alfworld_version(), "n": n, "seed": seed}


def _writable_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        probe = out.parent / f".agentgym-probe-{uuid.uuid4().hex}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise EnvConfigError(f"cannot write the games to {str(out)!r}: {exc.strerror or exc}") from None


def _run(jobs: list[tuple[str, str, int, int, str]], workers: int) -> Iterator[dict[str, Any]]:
    """Make the games here, or in `workers` worker interpreters, yielding each entry as it is done."""
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_make_one, jobs)
        return
    # Plain child interpreters rather than multiprocessing: forking a threaded caller (the rollout
    # engine) can deadlock, and `spawn` re-runs the caller's main script.
    done: queue.Queue[tuple[int, str | None]] = queue.Queue()
    procs = []
    with contextlib.ExitStack() as stack:
        for k in range(workers):
            err = stack.enter_context(tempfile.TemporaryFile("w+"))
            proc = subprocess.Popen([sys.executable, "-m", __spec__.name if __spec__ else __name__],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True)
            stack.callback(lambda p=proc: p.poll() is None and p.kill())
            proc.stdin.write(json.dumps(jobs[k::workers]))
            proc.stdin.close()
            threading.Thread(target=_pump, args=(k, proc, done), daemon=True).start()
            procs.append((proc, err))
        running = workers
        while running:
            k, line = done.get()
            if line is not None:
                yield json.loads(line)
                continue
            running -= 1
            proc, err = procs[k]
            if proc.wait() != 0:
                err.seek(0)
                tail = err.read().strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
                raise EnvConfigError(f"an ALFWorld game worker failed: {tail[0]}")


def _pump(k: int, proc: subprocess.Popen[str], done: queue.Queue[tuple[int, str | None]]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        done.put((k, line))
    done.put((k, None))


def _worker_main() -> None:
    """A worker interpreter: jobs as JSON on stdin, one JSON line per finished game on stdout."""
    for job in json.loads(sys.stdin.read()):
        print(json.dumps(_make_one(tuple(job))), flush=True)


def make_games(
    out_dir: str | os.PathLike[str],
    n: int = DEFAULT_NUM_GAMES,
    seed: int = 0,
    workers: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Generate `n` solvable games in alfworld's layout under `out_dir` (json_2.1.1/<split>/..., logic/); their trial folders.

    The same seed gives the same files. The set appears all at once: it is built beside `out_dir` and
    renamed into place, so an interrupted run leaves nothing half-made. An existing set made with the
    same recipe is kept as it is.
    """
    if n < 1:
        raise EnvConfigError(f"--n must be at least 1, got {n}")
    out = Path(out_dir).expanduser().absolute()
    known = _manifest(out)
    if known is not None and known.get("recipe") == _recipe(n, seed):
        return [out / p for p in known["games"]]
    if out.exists() and (not out.is_dir() or (known is None and any(out.iterdir()))):
        raise EnvConfigError(f"{str(out)!r} exists and is not an ALFWorld game set made by agentgym; pick an empty or new --out")
    _writable_parent(out)
    partial = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        jobs = _jobs(partial, n, seed)
        made = []
        for entry in _run(jobs, max(1, min(workers, os.cpu_count() or 1))):
            made.append(entry)
            if progress:
                progress(len(made), len(jobs))
        # Workers finish in any order; the manifest lists the games in the order of the jobs.
        order = {(split, j): i for i, (_, split, j, _, _) in enumerate(jobs)}
        made.sort(key=lambda e: order[(e["split"], e["index"])])
        logic = partial / "logic"
        logic.mkdir(parents=True, exist_ok=True)
        # alfworld's scripts look for the domain and grammar beside the games ($ALFWORLD_DATA/logic).
        (logic / "alfred.pddl").write_text(domain_text())
        (logic / "alfred.twl2").write_text(grammar_text())
        games = [e["path"] for e in made]
        manifest = {"recipe": _recipe(n, seed), "splits": split_sizes(n), "games": games, "details": made}
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if out.exists():
            old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(old)
            partial.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return [out / p for p in games]


def default_games_dir(n: int = DEFAULT_NUM_GAMES, seed: int = 0, cache: str | None = None) -> Path:
    """The cached default game set for these settings, generated on first use."""
    key = recipe_key("alfworld-games", GENERATOR_VERSION, alfworld_version(), n, seed)
    target = cache_root(cache) / "alfworld" / f"n{n}-s{seed}-{key}"
    if _manifest(target) is not None:
        return target
    with file_lock(target.with_suffix(".lock")):
        if _manifest(target) is None:
            print(f"agentgym: generating {n} ALFWorld games in {target} (first use only)", file=sys.stderr)
            make_games(target, n=n, seed=seed)
    return target


if __name__ == "__main__":
    _worker_main()
