"""Shortest paths by breadth-first search on a graph whose edges are labelled with the move that takes them.

A graph here is an adjacency mapping `{node: {move: next_node}}` (for a maze, `{(row, col):
{"up": (row - 1, col), ...}}`). Ties between equally short paths go to the move listed first
in each node's mapping, so a path is the same on every machine for the same graph.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping
from typing import TypeVar

Node = TypeVar("Node", bound=Hashable)


def distances_from(graph: Mapping[Node, Mapping[str, Node]], source: Node) -> dict[Node, int]:
    """The number of moves from `source` to every node it can reach (on an undirected graph, also *to* `source`)."""
    dist = {source: 0}
    queue = deque([source])
    while queue:
        node = queue.popleft()
        for nxt in graph[node].values():
            if nxt not in dist:
                dist[nxt] = dist[node] + 1
                queue.append(nxt)
    return dist


def shortest_moves(graph: Mapping[Node, Mapping[str, Node]], start: Node, goal: Node) -> list[str] | None:
    """The moves of a shortest path from `start` to `goal`, [] when they are the same, None when unreachable."""
    came_from: dict[Node, tuple[Node, str] | None] = {start: None}
    queue = deque([start])
    while queue and goal not in came_from:
        node = queue.popleft()
        for move, nxt in graph[node].items():
            if nxt not in came_from:
                came_from[nxt] = (node, move)
                queue.append(nxt)
    if goal not in came_from:
        return None
    moves: list[str] = []
    step = came_from[goal]
    while step is not None:
        node, move = step
        moves.append(move)
        step = came_from[node]
    return moves[::-1]


def distance_signals(valid: bool, initial: int, left: int) -> dict[str, object]:
    """A navigation step's signals: validity, the moves left to the goal, and the share of the start's distance covered.

        progress = max(0, 1 - left / initial)      (1 when the start was the goal; 0 when farther than at the start)
    """
    progress = max(0.0, 1.0 - left / initial) if initial else 1.0
    return {"valid_action": valid, "distance_to_goal": left, "progress": progress}
