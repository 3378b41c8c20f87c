"""How sandbox errors are worded: the last line of a tool's output, an exception folded to one line."""

from __future__ import annotations

from agentgym.sandboxes.messages import last_line, one_line


def test_last_line_is_the_last_non_blank_line_stripped() -> None:
    assert last_line("W: slow mirror\n  E: Unable to locate package nope  \n\n   \n") == "E: Unable to locate package nope"


def test_last_line_of_empty_output_is_the_default() -> None:
    assert last_line("") == "no output"
    assert last_line(" \n\t\n", "exit code 3") == "exit code 3"


def test_one_line_folds_white_space_and_names_an_empty_exception() -> None:
    assert one_line(RuntimeError("cannot\n  start\tcontainer")) == "cannot start container"
    assert one_line(TimeoutError()) == "TimeoutError"
