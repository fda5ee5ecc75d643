"""What the Triton kernels' tests share (``test_sampling_kernel.py``, ``test_deform_kernel.py``): why a kernel cannot
run here, the skip markers, and a Python subprocess in the repository root (Triton's interpreter must be chosen
before Triton is imported, so interpreter cases run in one)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aliked_ros.model import sampling_kernel

TEST_DIR = Path(__file__).resolve().parent


def triton_missing() -> str | None:
    """Why the kernels cannot run here, or None (both kernels need what ``sampling_kernel.AVAILABLE`` checks)."""
    try:
        import triton  # noqa: F401
    except Exception as error:  # not installed, or broken for this torch
        return f"Triton does not import here ({type(error).__name__}: {error})"
    if not sampling_kernel.AVAILABLE:
        return "torch.library.triton_op is missing (torch >= 2.6 has it)"
    return None


needs_triton = pytest.mark.skipif(triton_missing() is not None, reason=str(triton_missing()))
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available() or triton_missing() is not None,
                                reason="needs a CUDA device and Triton")


def run_python(arguments: list[str], **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *arguments], cwd=TEST_DIR.parent, capture_output=True, text=True,
                          timeout=900, env={**os.environ, **environment})


def run_cases_in_the_interpreter(cases_file: str) -> subprocess.CompletedProcess:
    """pytest on ``test/<cases_file>`` with ``TRITON_INTERPRET=1``: the kernels run in Triton's interpreter."""
    return run_python(["-m", "pytest", "-q", "-p", "no:cacheprovider", str(TEST_DIR / cases_file)],
                      TRITON_INTERPRET="1")
