"""The demo's size comes from the measured speed of this machine (scripts/demo_plan.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from agentgym.hardware import Placement, matmul_tflops

_spec = importlib.util.spec_from_file_location("demo_plan", Path(__file__).resolve().parents[1] / "scripts" / "demo_plan.py")
assert _spec and _spec.loader
demo_plan = importlib.util.module_from_spec(_spec)
sys.modules["demo_plan"] = demo_plan  # dataclasses look their module up there
_spec.loader.exec_module(demo_plan)


def test_each_machine_gets_the_largest_demo_that_fits() -> None:
    # Training tokens/s: native bf16 on an AVX-512 EPYC (~325), float32 there (~85), float32 on an
    # AVX2-only EPYC whose matmul is 132 ms (~49).
    assert demo_plan.choose(325.0, None).name == "full"
    assert demo_plan.choose(200.0, None).name == "small"
    assert demo_plan.choose(49.0, None).name == "tiny"
    for rate in (325.0, 200.0):
        assert demo_plan.choose(rate, None).minutes(rate) <= demo_plan.BUDGET_MINUTES
    assert demo_plan.choose(49.0, None).minutes(49.0) <= 15.0  # the slowest still within the promise


def test_too_slow_for_any_size_still_runs_the_smallest_and_the_override_wins() -> None:
    assert demo_plan.choose(1.0, None).name == demo_plan.SIZES[-1].name
    assert demo_plan.choose(1.0, "full").name == "full"
    with pytest.raises(SystemExit, match="DEMO_SIZE must be one of full, small, tiny"):
        demo_plan.choose(100.0, "huge")


def test_matmul_speed_is_measured_in_the_training_precision() -> None:
    fp32 = matmul_tflops(Placement(torch.device("cpu"), "fp32", "test"), size=(64, 64, 64), repeats=1)
    assert 0 < fp32 < 100
