"""The deformable-convolution Triton kernel (``aliked_ros.model.deform_kernel``) computes what the tensor formulation
computes: in Triton's interpreter on the CPU (a subprocess; the cases are in ``deform_kernel_cases.py``), and with
CUDA for real, eagerly, inside ``torch.compile`` and in a CUDA graph."""

from __future__ import annotations

import copy

import pytest
import torch
from deform_kernel_cases import (BLOCK_CASE_IDS, BLOCK_CASES, BLOCK_TOLERANCES, CASE_IDS, CASES, TOLERANCES, check,
                                 check_block, kernel_and_reference, random_block, random_inputs)
from triton_kernels import needs_cuda, needs_triton, run_cases_in_the_interpreter

from aliked_ros.model import deform_kernel
from aliked_ros.model.deform_conv import DeformableConv2d


@needs_triton
def test_kernel_in_the_triton_interpreter_matches_the_tensor_formulation():
    result = run_cases_in_the_interpreter("deform_kernel_cases.py")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


def test_inputs_the_kernel_cannot_read_take_the_tensor_path():
    x, offset, weight, bias = random_inputs(12, 16, 16, torch.float32, "channels_first")
    assert deform_kernel.input_channels(x, offset, (3, 3)) == 16
    assert deform_kernel.input_channels(x[:, :12], offset, (3, 3)) is None  # C not a power of two
    assert deform_kernel.input_channels(x.expand(2, -1, -1, -1), offset, (3, 3)) is None  # a batch
    assert deform_kernel.input_channels(x, offset[:, :16], (3, 3)) is None
    layer = DeformableConv2d(12, 8)
    layer.implementation = "triton"
    with torch.no_grad():  # C = 12 is refused by the kernel: the tensor formulation answers, no Triton needed
        layer.deform(x[:, :12], offset)


@needs_cuda
@pytest.mark.parametrize("height, width, dtype, layout, channels", CASES, ids=CASE_IDS)
def test_cuda_kernel_matches_the_tensor_formulation(height, width, dtype, layout, channels):
    check(*random_inputs(height, width, channels, dtype, layout, device="cuda"))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_cuda_kernel_inside_torch_compile_and_a_cuda_graph(dtype):
    from torch._inductor.utils import run_and_get_code

    x, offset, weight, bias = random_inputs(48, 156, 64, dtype, "channels_last", device="cuda")
    compiled = torch.compile(deform_kernel.deform_conv2d_triton, fullgraph=True, dynamic=False)
    result, code = run_and_get_code(compiled, x, offset, weight, 1, bias)
    assert any("_deformable_columns_kernel" in source for source in code)
    _, reference = kernel_and_reference(x, offset, weight, bias)
    torch.testing.assert_close(result.float(), reference.float(), rtol=0, atol=TOLERANCES[dtype])
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = compiled(x, offset, weight, 1, bias)
    offset.copy_(offset.flip(-1))  # new offsets in the same memory
    graph.replay()
    torch.cuda.synchronize()
    _, reference = kernel_and_reference(x, offset, weight, bias)
    torch.testing.assert_close(captured.float(), reference.float(), rtol=0, atol=TOLERANCES[dtype])


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
    assert not deform_kernel.fused_block_accepted(random_inputs(6, 5, 16, torch.float32, "channels_first")[0][:, :12],
                                                  random_block(12, 32))  # C not a power of two
    unfolded = random_block(16, 32)
    unfolded.conv2.regular_conv.bias = None  # BatchNorm not folded: no bias on the convolution
    assert not deform_kernel.fused_block_accepted(x, unfolded)
