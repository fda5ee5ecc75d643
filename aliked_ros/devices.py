"""Device probing below every engine: which device a name means here, and whether Triton is installed.

Standard library at import; torch is imported inside :func:`resolve_device`, which only callers that run torch
need, so the layers above (processing, matching, the bench) probe without importing an engine.
"""

from __future__ import annotations

import importlib.util

from aliked_ros.errors import AlikedError


def has_triton() -> bool:
    """Whether Triton, torch.compile's GPU code generator, is installed."""
    return importlib.util.find_spec("triton") is not None


def resolve_device(device: str):
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when available) → a usable ``torch.device``, or AlikedError."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise AlikedError(f"Unknown device {device!r}: use cpu, cuda, cuda:N or auto.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        # Raised to the API and the node as well as to the tools: name the value, not a command-line flag.
        raise AlikedError(f"Device {device!r} was asked for but PyTorch sees no CUDA device here; run on the CPU "
                          "(device \"cpu\").")
    if resolved.type not in ("cpu", "cuda"):
        raise AlikedError(f"Unsupported device {device!r}: use cpu, cuda, cuda:N or auto.")
    return resolved
