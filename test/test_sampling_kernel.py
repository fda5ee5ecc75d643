"""The feature-pyramid Triton kernel (``aliked_ros.model.sampling_kernel``) reads what the torch formulation reads.

Without a GPU the kernel runs in Triton's interpreter, in a subprocess (``TRITON_INTERPRET=1`` must be set before
Triton is imported; the cases are in ``sampling_kernel_cases.py``). With CUDA it runs for real: eagerly, inside
``torch.compile(fullgraph=True)``, in a CUDA graph and through torch.export + AOTInductor.
"""

from __future__ import annotations

import os
import signal

import pytest
import torch
from sampling_kernel_cases import (CASE_IDS, CASES, TOLERANCES, check_read, head_with_and_without_kernel,
                                   kernel_and_reference, pixel_positions, random_aliked, random_pyramid,
                                   sample_positions)

from triton_kernels import TEST_DIR, needs_cuda, needs_triton, run_cases_in_the_interpreter, run_python

from aliked_ros.model import sampling_kernel
from aliked_ros.model.feature_lookup import FeaturePyramid


# --- everywhere ---------------------------------------------------------------------------------------------------

@needs_triton
def test_kernel_in_the_triton_interpreter_matches_the_torch_formulation():
    result = run_cases_in_the_interpreter("sampling_kernel_cases.py")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


def test_without_triton_the_package_imports_and_reads_with_torch():
    code = """
import sys
sys.modules["triton"] = None  # `import triton` raises ImportError from here on
import torch
from aliked_ros.model import sampling_kernel
from aliked_ros.model.aliked import Aliked
assert not sampling_kernel.AVAILABLE
aliked = Aliked("aliked-t16", top_k=20).eval()
with torch.no_grad():
    keypoints, scores, descriptors = aliked(torch.rand(1, 3, 64, 80))
assert descriptors.shape == (20, 64)
print("ok")
"""
    result = run_python(["-c", code])
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_the_cpu_reads_with_the_torch_formulation():
    pyramid = random_pyramid(70, 100, 16, torch.float32, "channels_first")
    assert not pyramid.use_kernel  # the CPU (and the ONNX graph, traced there) keep the torch formulation


def test_the_kernel_refuses_levels_it_cannot_read():
    pyramid = random_pyramid(64, 96, 16, torch.float32, "channels_first")
    uneven = [level[:, :12] for level in pyramid.levels]  # C = 12: not a power of two
    assert sampling_kernel.level_channels(uneven) is None
    assert sampling_kernel.level_channels(pyramid.levels) == 16
    with pytest.raises(ValueError, match="power"):
        sampling_kernel.check_levels(uneven)


# --- on CUDA --------------------------------------------------------------------------------------------------------

@needs_cuda
@pytest.mark.parametrize("height, width, dtype, layout, channels", CASES, ids=CASE_IDS)
def test_cuda_kernel_matches_the_torch_formulation(height, width, dtype, layout, channels):
    pyramid = random_pyramid(height, width, channels, dtype, layout, device="cuda")
    assert pyramid.use_kernel  # asked for, on CUDA with Triton
    x, y = sample_positions(height, width, count=5000)
    check_read(pyramid, "sample", x.cuda(), y.cuda())
    columns, rows = pixel_positions(height, width, count=5000)
    check_read(pyramid, "pixels", columns.cuda(), rows.cuda())


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_cuda_kernel_inside_torch_compile(dtype):
    """fullgraph=True: no graph break; Inductor's code launches the kernel itself."""
    from torch._inductor.utils import run_and_get_code

    pyramid = random_pyramid(70, 100, 32, dtype, "channels_last", device="cuda")
    x, y = (position.cuda() for position in sample_positions(70, 100, count=3000))
    columns, rows = (position.cuda() for position in pixel_positions(70, 100, count=3000))

    def read(levels, x, y, columns, rows):
        lookup = FeaturePyramid(levels, pyramid.top, pyramid.left, pyramid.height, pyramid.width, kernel=True)
        return lookup.sample(x, y), lookup.pixels(columns, rows)

    compiled = torch.compile(read, fullgraph=True, dynamic=False)
    (samples, pixels), code = run_and_get_code(compiled, pyramid.levels, x, y, columns, rows)
    assert any("_feature_pyramid_read_kernel" in source for source in code)
    eager_samples, reference_samples = kernel_and_reference(pyramid, "sample", x, y)
    eager_pixels, reference_pixels = kernel_and_reference(pyramid, "pixels", columns, rows)
    tolerance = TOLERANCES[dtype]  # Inductor builds the kernel with its own options: rounding may differ
    torch.testing.assert_close(samples.float(), eager_samples.float(), rtol=0, atol=tolerance)
    torch.testing.assert_close(pixels.float(), eager_pixels.float(), rtol=0, atol=tolerance)
    torch.testing.assert_close(samples.float(), reference_samples.float(), rtol=0, atol=tolerance)
    torch.testing.assert_close(pixels.float(), reference_pixels.float(), rtol=0, atol=tolerance)


@needs_cuda
def test_cuda_kernel_in_a_cuda_graph():
    pyramid = random_pyramid(64, 96, 16, torch.float16, "channels_first", device="cuda")
    x, y = (position.cuda() for position in sample_positions(64, 96, count=1000))
    pyramid.sample(x, y)  # compiles the kernel outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = pyramid.sample(x, y)
    x.copy_(x.flip(0))  # new positions in the same memory
    y.copy_(y.flip(0))
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(captured, pyramid.sample(x, y), rtol=0, atol=0)


@needs_cuda
@pytest.mark.parametrize("model, dtype", [("aliked-t16", torch.float32), ("aliked-n16rot", torch.float32),
                                          ("aliked-n32", torch.float16)])
def test_cuda_descriptor_head_with_the_kernel_equals_the_torch_formulation(model, dtype):
    aliked = random_aliked(model, dtype, device="cuda", top_k=500)
    by_kernel, reference = head_with_and_without_kernel(aliked, 97, 131, device="cuda")
    assert torch.isfinite(reference).all()
    if dtype == torch.float32:
        torch.testing.assert_close(by_kernel, reference, rtol=0, atol=1e-4)
    else:  # float16 patches one rounding step apart move the offsets a little: compare directions
        assert (by_kernel * reference).sum(dim=1).min() > 0.999


AOTINDUCTOR_CHECK = """
import sys, torch
from sampling_kernel_cases import random_pyramid, sample_positions
from aliked_ros.model.feature_lookup import FeaturePyramid

pyramid = random_pyramid(70, 100, 16, torch.float16, "channels_last", device="cuda")
top, left = pyramid.top, pyramid.left

class Sampler(torch.nn.Module):
    def forward(self, level0, level1, level2, level3, x, y):
        return FeaturePyramid([level0, level1, level2, level3], top, left, 70, 100, kernel=True).sample(x, y)

x, y = (position.cuda() for position in sample_positions(70, 100, count=2000))
arguments = (*pyramid.levels, x, y)
exported = torch.export.export(Sampler(), arguments)
assert any("feature_pyramid_read" in str(node.target) for node in exported.graph.nodes)
package = torch._inductor.aoti_compile_and_package(exported, package_path=sys.argv[1])
print("compiled", flush=True)
compiled = torch._inductor.aoti_load_package(package)
print("loaded", flush=True)
difference = (compiled(*arguments).float() - pyramid.sample(x, y).float()).abs().max().item()
assert difference <= 1e-3, difference
print("ok", flush=True)
"""


@needs_cuda
def test_cuda_kernel_through_torch_export_and_aotinductor(tmp_path):
    """In a subprocess: a crash while AOTInductor's package loads or runs fails this test, not the session.

    The export and the package's compilation must work. Loading the package crashes on the H100 with torch 2.11
    (segmentation fault inside ``aoti_load_package``, every package tried; BENCHMARKS.md, "Issue 17 continued: an
    AOTInductor package for the start"): that one outcome is reported as an expected failure, since the engine does
    not load AOTInductor packages; any other failure fails."""
    search_path = os.pathsep.join(filter(None, (str(TEST_DIR), os.environ.get("PYTHONPATH"))))
    result = run_python(["-c", AOTINDUCTOR_CHECK, str(tmp_path / "sampler.pt2")], PYTHONPATH=search_path)
    reached = result.stdout.split()
    if result.returncode == -signal.SIGSEGV and reached == ["compiled"]:
        pytest.xfail("AOTInductor's package loader crashed (SIGSEGV) after the package compiled: the known crash")
    assert result.returncode == 0 and reached[-1:] == ["ok"], (
        f"exit {result.returncode}, reached: {reached}\n{result.stderr[-4000:]}")


def test_the_default_reads_import_neither_triton_nor_the_compiler():
    """The kernel's module brings Triton and torch's compiler stack (about a second at every start): it is imported
    only where the kernel is asked for."""
    code = ("import sys, aliked_ros.engines.torch_engine, aliked_ros.model.aliked\n"
            "print('triton' in sys.modules, 'torch._dynamo' in sys.modules, 'torch._inductor' in sys.modules)")
    result = run_python(["-c", code])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["False", "False", "False"]
