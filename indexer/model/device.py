"""Which torch device runs the image tower: `--device auto|cpu|cuda|cuda:N|mps`.

`auto` (the default) takes CUDA when torch sees one, else Apple MPS, else the CPU. An explicit device that is
not there is an error raised before anything is written. Queries never come here: they stay on the CPU.
"""
from __future__ import annotations

import re
from typing import Any

from indexer.errors import DeviceError

AUTO = "auto"
CPU = "cpu"
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"
_SYNTAX = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")

# The reduced precision each kind of device runs its image tower in, once checked against fp32 on the
# user's first photos (indexer/model/precision.py). The CPU stays fp32: its path is unchanged.
REDUCED_DTYPE = {"cuda": "float16", "mps": "float16", "cpu": None}


def parse_device(asked: str | None) -> str:
    """The normalised spelling of `asked` (None means auto); an unknown spelling is a DeviceError. No torch."""
    value = (asked or AUTO).strip().lower()
    if not _SYNTAX.match(value):
        raise DeviceError(f"unknown device {asked!r} (use {DEVICE_HELP})")
    return value


def resolve_device(asked: str | None, cpu_only: bool = False) -> str:
    """The torch device string to use: "cpu", "cuda:N" or "mps". `cpu_only`: the model can only run on the CPU."""
    value = parse_device(asked)
    if value == CPU:
        return CPU
    import torch

    if value == AUTO:
        if cpu_only:
            return CPU
        if torch.cuda.is_available():
            return f"cuda:{torch.cuda.current_device()}"
        return "mps" if mps_available(torch) else CPU
    if cpu_only:
        raise DeviceError(f"--device {value}: int8 image encoding runs on the CPU only; "
                          "use --device cpu, or a library without --int8 to use the GPU")
    if value == "mps":
        if not mps_available(torch):
            raise DeviceError("--device mps: Apple MPS is not available to torch on this machine (use --device cpu)")
        return "mps"
    return _cuda(torch, value)


def _cuda(torch: Any, value: str) -> str:
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {value}: torch sees no CUDA device on this machine (use --device cpu or auto)")
    index = int(value.split(":")[1]) if ":" in value else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise DeviceError(f"--device {value}: torch sees {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return f"cuda:{index}"


def check_device(asked: str | None, cpu_only: bool = False) -> None:
    """Fail now, before anything is written, when an explicit GPU is asked for and absent (auto and cpu never fail)."""
    if parse_device(asked) not in (AUTO, CPU):
        resolve_device(asked, cpu_only)


def mps_available(torch: Any) -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def device_kind(device: str) -> str:
    """"cuda:1" -> "cuda": the device type torch.autocast and the dtype table take."""
    return device.split(":", 1)[0]


def device_label(device: str) -> str:
    """What the summary and `status` show: the device, with the card's name for CUDA."""
    if device_kind(device) != "cuda":
        return device
    import torch

    try:
        return f"{device} ({torch.cuda.get_device_name(device)})"
    except (RuntimeError, AssertionError):
        return device
