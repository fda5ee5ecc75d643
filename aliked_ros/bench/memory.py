"""GPU memory for the bench: this process's memory on one card as the driver reports it (NVML), and the release of
what a row leaves behind so that the next row's readings start from the same floor."""

from __future__ import annotations

import contextlib
import gc
import os

MIB = float(1 << 20)


class GpuMemoryProbe:
    """This process's memory on one GPU as the driver reports it, through NVML (nvidia-ml-py's ``pynvml``).

    ``missing`` says why a reading is None: pynvml not installed, the card not found, the process not listed (a
    PID namespace that NVML does not see through), or the driver not reporting per-process memory.
    """

    def __init__(self, device_index: int):
        self.missing: str | None = None
        self.driver_version: str | None = None
        self._pynvml = self._handle = None
        try:
            import pynvml
        except ImportError:
            self.missing = "pynvml is not installed (pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
            self.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
            self._handle = _nvml_handle(pynvml, device_index)
            self._pynvml = pynvml
        except pynvml.NVMLError as error:
            self.missing = f"NVML failed: {error}"

    def process_mib(self) -> float | None:
        if self._pynvml is None:
            return None
        try:
            processes = self._pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except self._pynvml.NVMLError as error:
            self.missing = f"NVML could not list processes: {error}"
            return None
        for process in processes:
            if process.pid == os.getpid():
                used = process.usedGpuMemory
                if used is None:  # NVML_VALUE_NOT_AVAILABLE, e.g. under some virtualisation
                    self.missing = "the driver does not report per-process memory here"
                    return None
                return used / MIB
        self.missing = f"NVML does not list this process (PID {os.getpid()}; a container's PID namespace?)"
        return None

    def sm_clock_mhz(self) -> int | None:
        """The card's SM clock now (NVML), None where NVML cannot tell: the GPU half of a frame's time scales with
        it, and a card that lowers it under a light load runs a benchmark's rows slower for it."""
        if self._pynvml is None:
            return None
        try:
            return int(self._pynvml.nvmlDeviceGetClockInfo(self._handle, self._pynvml.NVML_CLOCK_SM))
        except self._pynvml.NVMLError:
            return None

    def close(self) -> None:
        if self._pynvml is not None:
            with contextlib.suppress(Exception):
                self._pynvml.nvmlShutdown()
            self._pynvml = None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_handle(pynvml, device_index: int):
    """NVML's handle of torch's card ``device_index``: by UUID, which CUDA_VISIBLE_DEVICES does not renumber."""
    import torch

    properties = torch.cuda.get_device_properties(device_index)
    uuid = getattr(properties, "uuid", None)
    if uuid is not None:
        with contextlib.suppress(pynvml.NVMLError):
            return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    return pynvml.nvmlDeviceGetHandleByIndex(device_index)


def release_memory() -> None:
    """Free what the last row left, so the next row's memory readings start from the same floor."""
    import torch

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
