"""Device and precision choice (agentgym.hardware), micro-batch placement, and the heartbeat line: all on CPU, no timing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from agentgym import hardware
from agentgym.hardware import DeviceError
from agentgym.progress import Heartbeat, format_duration

AVX2_ONLY = frozenset({"fpu", "sse2", "avx", "avx2", "fma"})
AVX512 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl"}
AVX512_BF16 = AVX512 | {"avx512_bf16"}
AMX = AVX512 | {"amx_tile", "amx_bf16"}


@pytest.fixture()
def no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """This machine without a GPU, whatever it has."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture()
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the warnings this process already printed."""
    monkeypatch.setattr(hardware, "_WARNED", set())


# -- devices ------------------------------------------------------------------------------------


def test_auto_is_cpu_without_cuda(no_cuda: None) -> None:
    assert hardware.resolve_device("auto") == torch.device("cpu")
    assert hardware.resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:1"])
def test_cuda_without_a_gpu_is_a_clear_error(no_cuda: None, spec: str) -> None:
    with pytest.raises(DeviceError, match="CUDA GPU.*--device cpu or auto"):
        hardware.resolve_device(spec)


def test_auto_is_cuda_where_torch_sees_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert hardware.resolve_device("auto") == torch.device("cuda", 0)
    with pytest.raises(DeviceError, match="1 CUDA device"):
        hardware.resolve_device("cuda:1")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "CPU", ""])
def test_malformed_devices_are_refused(spec: str) -> None:
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N"):
        hardware.resolve_device(spec)


def test_configs_refuse_a_malformed_device() -> None:
    from pydantic import ValidationError

    from agentgym.trainers.config import SFTConfig, TrainConfig

    assert TrainConfig(env="x").device == SFTConfig(data=["d"]).device == "auto"
    with pytest.raises(ValidationError, match="device"):
        SFTConfig(data=["d"], device="gpu")


# -- native bf16 --------------------------------------------------------------------------------


def test_cpu_flags_come_from_cpuinfo_text() -> None:
    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\nprocessor\t: 1\n"
    assert hardware.parse_cpu_flags(text) == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16"}
    assert hardware.parse_cpu_flags("Features\t: fp asimd bf16\n") == {"fp", "asimd", "bf16"}
    assert hardware.parse_cpu_flags("") == frozenset()


@pytest.mark.parametrize(
    "flags,capability,native",
    [
        (AVX512_BF16, "AVX512", True),
        (AMX, "AVX512", True),
        (AVX512, "AVX512", False),  # AVX-512 without its bf16 extension
        (AVX2_ONLY, "AVX2", False),
        (AVX512_BF16, "AVX2", False),  # the CPU could, but torch runs AVX2 kernels (ATEN_CPU_CAPABILITY=avx2)
        (AVX512_BF16, "DEFAULT", False),
    ],
)
def test_native_bf16_on_cpu_needs_the_flag_and_avx512_kernels(flags: frozenset[str], capability: str, native: bool) -> None:
    assert hardware.native_bf16("cpu", cpu_flags=flags, cpu_capability=capability) is native
    expected = "bf16-autocast" if native else "fp32"
    assert hardware.resolve_precision("auto", "cpu", cpu_flags=flags, cpu_capability=capability) == expected
    assert hardware.resolve_dtype("auto", "cpu", cpu_flags=flags, cpu_capability=capability) == (
        "bfloat16" if native else "float32")


def test_the_reason_names_what_is_missing() -> None:
    avx2 = hardware.choose_precision("auto", "cpu", cpu_flags=AVX2_ONLY, cpu_capability="AVX2")
    assert avx2.describe() == "device cpu · precision fp32 (no native bf16 on this CPU: AVX2)"
    assert avx2.as_config() == {"device": "cpu", "precision": "fp32"}
    plain = hardware.choose_precision("auto", "cpu", cpu_flags=AVX512, cpu_capability="AVX512")
    assert "without avx512_bf16/amx_bf16" in plain.reason
    native = hardware.choose_dtype("auto", "cpu", cpu_flags=AMX, cpu_capability="AVX512")
    assert native.describe() == "device cpu · dtype bfloat16 (native bf16 on this CPU: amx_bf16, AVX512)"


def test_explicit_choices_are_honoured(fresh_warnings: None) -> None:
    kw = dict(cpu_flags=AVX512_BF16, cpu_capability="AVX512")
    assert hardware.resolve_precision("fp32", "cpu", **kw) == "fp32"
    assert hardware.resolve_precision("bf16-autocast", "cpu", **kw) == "bf16-autocast"
    assert hardware.resolve_dtype("float32", "cpu", **kw) == "float32"
    with pytest.raises(ValueError, match="precision"):
        hardware.resolve_precision("bf16", "cpu", **kw)
    with pytest.raises(ValueError, match="dtype"):
        hardware.resolve_dtype("float8", "cpu", **kw)


def test_emulated_bf16_asked_for_explicitly_warns_once(fresh_warnings: None) -> None:
    lines: list[str] = []
    for _ in range(3):  # a precision resolved at every micro-batch
        assert hardware.resolve_precision(
            "bf16-autocast", "cpu", cpu_flags=AVX2_ONLY, cpu_capability="AVX2", warn=lines.append) == "bf16-autocast"
    assert len(lines) == 1
    assert "100x slower" in lines[0] and "precision=auto" in lines[0] and "precision=fp32" in lines[0]
    assert "\n" not in lines[0]
    # Native: no warning at all; and auto never warns.
    hardware.resolve_precision("bf16-autocast", "cpu", cpu_flags=AMX, cpu_capability="AVX512", warn=lines.append)
    hardware.resolve_precision("auto", "cpu", cpu_flags=AVX2_ONLY, cpu_capability="AVX2", warn=lines.append)
    assert len(lines) == 1
    hardware.resolve_dtype("bfloat16", "cpu", cpu_flags=AVX2_ONLY, cpu_capability="AVX2", warn=lines.append)
    assert len(lines) == 2 and "dtype=auto" in lines[1] and "dtype=float32" in lines[1]


def test_the_default_warning_is_one_stderr_line(fresh_warnings: None, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in range(2):
        hardware.resolve_precision("bf16-autocast", "cpu", cpu_flags=AVX2_ONLY, cpu_capability="AVX2")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning:") and "100x slower" in err


def test_this_machine_is_read_not_assumed() -> None:
    """The real detection agrees with /proc/cpuinfo and torch, whatever this CPU is."""
    flags = hardware.machine_cpu_flags()
    if Path("/proc/cpuinfo").is_file():
        assert flags == hardware.parse_cpu_flags(Path("/proc/cpuinfo").read_text())
    expected = bool(flags & {"avx512_bf16", "amx_bf16"}) and torch.backends.cpu.get_cpu_capability() == "AVX512"
    assert hardware.native_bf16("cpu") is expected


def test_aten_cpu_capability_avx2_turns_native_bf16_off() -> None:
    """torch's kernels at AVX2 cannot use the CPU's bf16 instructions: auto must pick fp32 (a fresh process)."""
    code = "from agentgym import hardware; print(hardware.resolve_precision('auto', 'cpu'))"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "fp32"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_is_what_torch_reports() -> None:
    device = hardware.resolve_device("cuda")
    assert hardware.native_bf16(device) is torch.cuda.is_bf16_supported()
    assert hardware.resolve_precision("auto", device) == ("bf16-autocast" if torch.cuda.is_bf16_supported() else "fp32")


# -- micro-batches on the model's device ----------------------------------------------------------


def _samples() -> list:
    from agentgym.trainers.batches import TurnSample

    return [TurnSample([1, 2, 3, 4], [0, 0, 1, 1], [0, 0, -1.0, -2.0], 1.0, 0, 0.5),
            TurnSample([5, 6, 7], [0, 1, 1], [0, -1.0, -1.5], -1.0, 1, 0.5)]


def test_micro_batches_collate_onto_a_device() -> None:
    from agentgym.trainers.batches import micro_batches

    (on_cpu,) = micro_batches(_samples(), 100, pad_id=0)
    (on_meta,) = micro_batches(_samples(), 100, pad_id=0, device="meta")
    tensors = ("input_ids", "attention_mask", "loss_mask", "old_logprobs", "advantages", "row_weights")
    assert all(getattr(on_cpu, name).device.type == "cpu" for name in tensors)
    assert all(getattr(on_meta, name).device.type == "meta" for name in tensors)
    assert on_meta.num_tokens == on_cpu.num_tokens == 4
    assert on_cpu.to("cpu") is on_cpu  # already there: no copy
    moved = on_cpu.to(torch.device("meta"))
    assert moved.device.type == "meta" and all(getattr(moved, n).shape == getattr(on_cpu, n).shape for n in tensors)


class Reached(Exception):
    """Raised by a spy once it has seen what the test checks."""


def test_a_trainable_on_the_meta_device_gets_its_batches_there(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """load_trainable places the model; scoring moves each micro-batch to the model's device."""
    from agentgym.trainers import policy_model
    from agentgym.trainers.batches import micro_batches
    from agentgym.trainers.policy_model import load_trainable

    trainable = load_trainable(str(tiny_model_dir), device="meta")
    assert trainable.device == torch.device("meta")
    assert {p.device.type for p in trainable.model.parameters()} == {"meta"}
    seen: list[torch.device] = []
    decoder = trainable.model.get_decoder()
    original = type(decoder).forward

    def spy(self, input_ids=None, attention_mask=None, **kwargs):  # noqa: ANN001, ANN003, ANN202
        seen.append(input_ids.device)
        seen.append(attention_mask.device)
        raise Reached  # the devices are what this test checks; meta tensors hold no numbers to go on with

    monkeypatch.setattr(type(decoder), "forward", spy)
    (batch,) = micro_batches(_samples(), 100, pad_id=0)  # collated on the CPU, as the probe and callers do
    with pytest.raises(Reached):
        policy_model.score_policy_tokens(trainable.model, batch, precision="fp32")
    monkeypatch.setattr(type(decoder), "forward", original)
    assert seen == [torch.device("meta")] * 2


def test_autocast_follows_the_tensors_device_type() -> None:
    from agentgym.trainers.policy_model import autocast_context

    with autocast_context("bf16-autocast", "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert not torch.is_autocast_enabled("cuda")
    with autocast_context("fp32", "cpu"):
        assert not torch.is_autocast_enabled("cpu")


# -- heartbeat ------------------------------------------------------------------------------------


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_heartbeat_prints_at_most_once_an_interval() -> None:
    clock, lines, built = FakeClock(), [], []

    def message() -> str:
        built.append(clock.now)
        return f"at {clock.now - 1000:.0f}"

    beat = Heartbeat(30, emit=lines.append, clock=clock)
    assert beat.maybe(message)  # the first call prints
    for dt in (10, 10, 9.9):  # 29.9 s later: still quiet
        clock.now += dt
        assert not beat.maybe(message)
    clock.now += 0.1
    assert beat.maybe(message)
    clock.now += 100
    beat.emit("last line")
    clock.now += 29
    assert not beat.maybe(message)  # emit restarted the interval
    assert lines == ["at 0", "at 30", "last line"]
    assert built == [1000.0, 1030.0]  # a message is built only when it is printed
    with pytest.raises(ValueError, match="interval_s"):
        Heartbeat(0)


def test_format_duration() -> None:
    assert [format_duration(s) for s in (0, 42.4, 185, 3720, -3)] == ["0s", "42s", "3m05s", "1h02m", "0s"]
