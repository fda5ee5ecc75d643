"""Every Triton kernel, as the network launches it, compiles for the GPUs the package is for: a Jetson AGX Orin
(compute capability 8.7) and an H100 (9.0). No GPU is needed: Triton compiles for a named target with its own ptxas.
The interpreter cases (TRITON_INTERPRET=1) check what the kernels compute but not that they compile; a kernel that
only the compiler rejects (a helper under another name, a type the loop changes, a libdevice call) fails here, on
any machine, instead of on a lent GPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from triton_kernels import TEST_DIR, needs_triton, run_python

from aliked_ros.model import deform_kernel, dense_kernels, nms_kernels, sampling_kernel


def ptxas_missing() -> str | None:
    try:
        import triton
    except Exception as error:
        return f"Triton does not import here ({type(error).__name__})"
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    return None if ptxas.exists() else f"Triton's ptxas is not at {ptxas}"


def kernels_of_the_package() -> set[str]:
    import triton

    modules = (dense_kernels, nms_kernels, sampling_kernel, deform_kernel)
    return {name for module in modules for name, value in vars(module).items()
            if isinstance(value, triton.runtime.jit.JITFunction) and name.endswith("_kernel")}


@needs_triton
@pytest.mark.skipif(ptxas_missing() is not None, reason=str(ptxas_missing()))
@pytest.mark.parametrize("arch", [87, 90], ids=["jetson-orin-sm87", "h100-sm90"])
def test_every_kernel_compiles_for_the_gpu(arch):
    result = run_python([str(TEST_DIR / "kernel_cross_compile.py"), str(arch)], TRITON_INTERPRET="0")
    assert result.returncode == 0, result.stderr[-4000:]
    compiled = json.loads(result.stdout.strip().splitlines()[-1])["kernels"]
    assert set(compiled) == kernels_of_the_package()
