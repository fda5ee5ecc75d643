"""The fused deformable-convolution Triton kernel (``aliked_ros.model.deform_kernel``) computes what a deformable
residual block's layers compute: in Triton's interpreter on the CPU (a subprocess; the cases are in
``deform_kernel_cases.py``), and with CUDA for real, eagerly, inside ``torch.compile`` and in a CUDA graph."""

from __future__ import annotations

import copy

import pytest
import torch
from deform_kernel_cases import BLOCK_CASE_IDS, BLOCK_CASES, BLOCK_TOLERANCES, check_block, random_block
from triton_kernels import needs_cuda, needs_triton, run_cases_in_the_interpreter

from aliked_ros.model import deform_kernel


@needs_triton
def test_kernel_in_the_triton_interpreter_is_the_blocks_layers():
    result = run_cases_in_the_interpreter("deform_kernel_cases.py")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


@needs_cuda
@pytest.mark.parametrize("height, width, in_channels, out_channels", BLOCK_CASES + [(48, 156, 32, 64)],
                         ids=BLOCK_CASE_IDS + ["48x156-32to64"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_cuda_fused_block_is_the_blocks_layers(height, width, in_channels, out_channels, dtype):
    check_block(height, width, in_channels, out_channels, dtype, "channels_last", device="cuda")


@needs_cuda
def test_cuda_fused_block_inside_torch_compile_and_a_cuda_graph():
    from torch._inductor.utils import run_and_get_code

    reference = random_block(32, 64).cuda()
    reference.conv1.implementation = reference.conv2.implementation = "tensor"
    block = copy.deepcopy(reference).half()
    x = torch.randn(1, 32, 48, 156, device="cuda", dtype=torch.half)
    compiled = torch.compile(deform_kernel.deformable_block, fullgraph=True, dynamic=False)
    with torch.no_grad():
        result, code = run_and_get_code(compiled, x, block)
        assert any("_deformable_conv_kernel" in source for source in code)
        torch.testing.assert_close(result.float(), reference(x.float()), rtol=0, atol=BLOCK_TOLERANCES[torch.half])
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = compiled(x, block)
        x.copy_(x.flip(-1))  # a new input in the same memory
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(captured.float(), reference(x.float()), rtol=0, atol=BLOCK_TOLERANCES[torch.half])


def test_blocks_the_fused_kernel_cannot_take_run_their_own_layers():
    block = random_block(16, 32)
    x = torch.randn(1, 16, 10, 12)
    assert deform_kernel.fused_block_accepted(x, block)
    assert not deform_kernel.fused_block_accepted(x.expand(2, -1, -1, -1), block)  # a batch
    assert not deform_kernel.fused_block_accepted(x[:, :12], random_block(12, 32))  # C not a power of two
    unfolded = random_block(16, 32)
    unfolded.conv2.regular_conv.bias = None  # BatchNorm not folded: no bias on the convolution
    assert not deform_kernel.fused_block_accepted(x, unfolded)


@needs_triton
def test_the_fused_block_refuses_an_input_it_cannot_take_with_what_it_needs():
    block = random_block(16, 32)
    with pytest.raises(ValueError, match=r"one image \(1, C, H, W\).*got \(2, 16, 10, 12\)"):
        deform_kernel.deformable_block(torch.randn(2, 16, 10, 12), block)
