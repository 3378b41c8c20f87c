"""Where models run and in what precision, chosen from the machine: the one place these choices are made.

bfloat16 is fast only where the hardware computes it: CUDA GPUs that support it, and x86
CPUs with avx512_bf16 or amx_bf16 whose torch kernels run at AVX512. Elsewhere torch
emulates it, more than 100x slower than float32 (a 512x2048 @ 2048x2048 matmul: 132 ms in
float32, over 20 s in bfloat16 on an AVX2-only EPYC). So "auto" picks bfloat16 only where
it is native, and an explicit bfloat16 on a CPU that emulates it is honoured with one
warning line.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from agentgym.errors import AgentGymError

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("auto", "fp32", "bf16-autocast")
DTYPES = ("auto", "bfloat16", "float16", "float32")

# /proc/cpuinfo flags under which the CPU computes bfloat16 (float16) itself.
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_FP16_FLAGS = ("avx512_fp16", "amx_fp16")
_DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")

# Warnings already printed, so a setting resolved at every micro-batch warns once per process.
_WARNED: set[str] = set()


class DeviceError(AgentGymError, ValueError):
    """A device that is malformed or not present on this machine."""


@dataclass(frozen=True)
class Support:
    """Whether a device computes a 16-bit float type natively, and the reason in a few words."""

    native: bool
    reason: str


@dataclass(frozen=True)
class Placement:
    """A resolved device and precision (training) or dtype (inference), with why that precision."""

    device: torch.device
    precision: str  # "fp32" | "bf16-autocast" for training; a torch dtype name for inference
    reason: str
    label: str = "precision"

    def describe(self) -> str:
        """One line for the start of a run: `device cpu · precision fp32 (no native bf16 on this CPU: AVX2)`."""
        return f"device {self.device} · {self.label} {self.precision} ({self.reason})"

    def as_config(self) -> dict[str, str]:
        """The resolved pair as a run's config records it: {"device": ..., "precision" or "dtype": ...}."""
        return {"device": str(self.device), self.label: self.precision}


def check_device_spec(spec: str) -> str:
    """`spec` itself if it names a device this module resolves (auto, cpu, cuda, cuda:N); DeviceError (a ValueError) otherwise."""
    if not isinstance(spec, str) or not _DEVICE_PATTERN.fullmatch(spec):
        raise DeviceError(f"device must be one of {', '.join(DEVICES)}, got {spec!r}")
    return spec


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The torch device for auto (cuda if available, else cpu), cpu, cuda or cuda:N; DeviceError if absent."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    if spec == "meta":  # shape-only tensors: what tests place models on to check moves without a GPU
        return torch.device("meta")
    check_device_spec(spec)
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(
            f"device {spec!r} asked for a CUDA GPU, but torch sees none here (torch {torch.__version__}, "
            f"CUDA build {torch.version.cuda or 'no'}); use --device cpu or auto, or run on a machine with a GPU"
        )
    device = torch.device(spec)
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise DeviceError(f"device {spec!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", device.index if device.index is not None else torch.cuda.current_device())


# -- what the machine computes natively -------------------------------------------------------


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The feature flags of the first processor in /proc/cpuinfo text ("flags" on x86, "Features" on ARM)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@functools.cache
def machine_cpu_flags() -> frozenset[str]:
    """This machine's CPU flags from /proc/cpuinfo (none where the file does not exist, e.g. macOS)."""
    try:
        return parse_cpu_flags(Path("/proc/cpuinfo").read_text())
    except OSError:
        return frozenset()


def torch_cpu_capability() -> str:
    """The vector ISA torch's CPU kernels run at: AVX512, AVX2, DEFAULT, ... (ATEN_CPU_CAPABILITY can lower it)."""
    return str(torch.backends.cpu.get_cpu_capability())


def _cpu_support(kind: str, flags: frozenset[str], capability: str) -> Support:
    """Native 16-bit support on an x86 CPU: one of the kind's flags, and torch kernels at AVX512."""
    wanted = _BF16_FLAGS if kind == "bf16" else _FP16_FLAGS
    present = [f for f in wanted if f in flags]
    # torch's bfloat16 kernels use the CPU's bf16 instructions only in their AVX512 build.
    if not capability.startswith("AVX512"):
        return Support(False, f"no native {kind} on this CPU: {capability}")
    if not present:
        return Support(False, f"no native {kind} on this CPU: {capability} without {'/'.join(wanted)}")
    return Support(True, f"native {kind} on this CPU: {', '.join(present)}, {capability}")


def bf16_support(
    device: torch.device | str, *, cpu_flags: frozenset[str] | None = None, cpu_capability: str | None = None
) -> Support:
    """Whether `device` computes bfloat16 natively, and why; the CPU's flags and torch's capability are read unless given."""
    device = torch.device(device)
    if device.type == "cuda":
        with torch.cuda.device(device):
            native = bool(torch.cuda.is_bf16_supported())
        name = torch.cuda.get_device_name(device)
        return Support(native, f"{'native' if native else 'no'} bf16 on {name}")
    if device.type == "cpu":
        flags = machine_cpu_flags() if cpu_flags is None else frozenset(cpu_flags)
        return _cpu_support("bf16", flags, torch_cpu_capability() if cpu_capability is None else cpu_capability)
    return Support(False, f"no bf16 detection for device type {device.type!r}")


def native_bf16(
    device: torch.device | str, *, cpu_flags: frozenset[str] | None = None, cpu_capability: str | None = None
) -> bool:
    """Whether `device` computes bfloat16 natively (CUDA: torch says so; CPU: avx512_bf16/amx_bf16 and AVX512 kernels)."""
    return bf16_support(device, cpu_flags=cpu_flags, cpu_capability=cpu_capability).native


def _fp16_support(device: torch.device, cpu_flags: frozenset[str] | None, cpu_capability: str | None) -> Support:
    """Whether `device` computes float16 natively: every CUDA GPU does; CPUs need avx512_fp16 or amx_fp16."""
    if device.type == "cuda":
        return Support(True, f"native fp16 on {torch.cuda.get_device_name(device)}")
    if device.type == "cpu":
        flags = machine_cpu_flags() if cpu_flags is None else frozenset(cpu_flags)
        return _cpu_support("fp16", flags, torch_cpu_capability() if cpu_capability is None else cpu_capability)
    return Support(False, f"no fp16 detection for device type {device.type!r}")


# -- choosing ---------------------------------------------------------------------------------


def _warn_once(key: str, message: str, warn: Callable[[str], None] | None) -> None:
    """Print `message` as one line on stderr, the first time `key` comes up in this process."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    if warn is not None:
        warn(message)
        return
    from rich.console import Console

    Console(file=sys.stderr, soft_wrap=True).print(f"[bold yellow]warning:[/bold yellow] {message}", highlight=False)


def _slow_warning(kind: str, asked: str, setting: str, support: Support) -> str:
    # Measured for bf16 (FIELD-NOTES: 132 ms vs > 20 s a matmul); fp16 emulation is slow too, by an unmeasured factor.
    how_slow = "more than 100x slower than" if kind == "bf16" else "much slower than"
    fallback = "fp32" if setting == "precision" else "float32"
    return (f"{setting}={asked} on a CPU that emulates {kind} ({support.reason}): it will run {how_slow} "
            f"float32; use {setting}=auto or {setting}={fallback}")


def choose_precision(
    precision: str, device: torch.device | str, *, cpu_flags: frozenset[str] | None = None,
    cpu_capability: str | None = None, warn: Callable[[str], None] | None = None,
) -> Placement:
    """The training precision for `device` with its reason: auto is bf16-autocast where bf16 is native, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    if precision == "fp32":
        return Placement(device, "fp32", "as asked")
    support = bf16_support(device, cpu_flags=cpu_flags, cpu_capability=cpu_capability)
    if precision == "auto":
        return Placement(device, "bf16-autocast" if support.native else "fp32", support.reason)
    if device.type == "cpu" and not support.native:
        _warn_once(f"precision:{device}", _slow_warning("bf16", precision, "precision", support), warn)
        return Placement(device, precision, f"as asked; emulated, {support.reason}")
    return Placement(device, precision, f"as asked; {support.reason}")


def resolve_precision(
    precision: str, device: torch.device | str, *, cpu_flags: frozenset[str] | None = None,
    cpu_capability: str | None = None, warn: Callable[[str], None] | None = None,
) -> str:
    """"fp32" or "bf16-autocast" for `device`: auto is bf16-autocast where native; an emulated explicit bf16 warns once."""
    return choose_precision(precision, device, cpu_flags=cpu_flags, cpu_capability=cpu_capability, warn=warn).precision


def choose_dtype(
    dtype: str, device: torch.device | str, *, cpu_flags: frozenset[str] | None = None,
    cpu_capability: str | None = None, warn: Callable[[str], None] | None = None,
) -> Placement:
    """The inference dtype for `device` with its reason: auto is bfloat16 where native, else float32."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    device = torch.device(device)
    if dtype == "float32":
        return Placement(device, "float32", "as asked", label="dtype")
    if dtype == "float16":
        support = _fp16_support(device, cpu_flags, cpu_capability)
        kind = "fp16"
    else:
        support = bf16_support(device, cpu_flags=cpu_flags, cpu_capability=cpu_capability)
        kind = "bf16"
    if dtype == "auto":
        return Placement(device, "bfloat16" if support.native else "float32", support.reason, label="dtype")
    if device.type == "cpu" and not support.native:
        _warn_once(f"dtype:{dtype}:{device}", _slow_warning(kind, dtype, "dtype", support), warn)
        return Placement(device, dtype, f"as asked; emulated, {support.reason}", label="dtype")
    return Placement(device, dtype, f"as asked; {support.reason}", label="dtype")


def resolve_dtype(
    dtype: str, device: torch.device | str, *, cpu_flags: frozenset[str] | None = None,
    cpu_capability: str | None = None, warn: Callable[[str], None] | None = None,
) -> str:
    """A torch dtype name for inference on `device`: auto is bfloat16 where native, else float32; emulated explicit ones warn once."""
    return choose_dtype(dtype, device, cpu_flags=cpu_flags, cpu_capability=cpu_capability, warn=warn).precision


def resolve_placement(device: str | torch.device = "auto", precision: str = "auto") -> Placement:
    """Training: the resolved device and precision of a run (print `.describe()`, record `.as_config()`)."""
    return choose_precision(precision, resolve_device(device))


def resolve_inference_placement(device: str | torch.device = "auto", dtype: str = "auto") -> Placement:
    """Inference: the resolved device and dtype of an in-process model."""
    return choose_dtype(dtype, resolve_device(device))


def matmul_tflops(placement: Placement, size: tuple[int, int, int] = (512, 2048, 2048), repeats: int = 3) -> float:
    """Measured dense matmul speed in the placement's training precision, in TFLOP/s (best of `repeats`)."""
    m, k, n = size
    dtype = torch.bfloat16 if placement.precision == "bf16-autocast" else torch.float32
    a = torch.randn(m, k, device=placement.device).to(dtype)
    b = torch.randn(k, n, device=placement.device).to(dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first call pays for kernel selection and allocation
        started = time.perf_counter()
        a @ b
        if placement.device.type == "cuda":
            torch.cuda.synchronize(placement.device)
        best = min(best, time.perf_counter() - started)
    return 2 * m * k * n / best / 1e12
