"""The full-resolution Triton kernels (``aliked_ros.model.dense_kernels``; NMS and top-k in ``nms_kernels``)
compute what the layers they replace compute: in Triton's interpreter on the CPU (a subprocess; the cases are in
``dense_kernel_cases.py``), and with CUDA for real, eagerly, inside ``torch.compile`` and in a CUDA graph. (The
compiled fast path with them keeps the fp16 precision bounds: ``test_extractor.py``'s
``test_compiled_fast_path_keeps_the_precision_bounds``.)"""

from __future__ import annotations

import pytest
import torch
from dense_kernel_cases import (CONV_CASES, CONV_IDS, TOLERANCES, check_conv, check_finest,
                                check_nms_top_k, check_residual, conv_inputs, expected_nms_scores, finest_inputs,
                                network_pair, residual_inputs, score_map_with_ties)
from triton_kernels import needs_cuda, needs_triton, run_cases_in_the_interpreter

from aliked_ros.model import deform_kernel, dense_kernels, nms_kernels, sampling_kernel


@pytest.fixture
def exact_float32_references():
    """cuDNN's float32 convolutions in float32, not TF32 (torch's default for them): the references here."""
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


@needs_triton
def test_kernels_in_the_triton_interpreter_match_the_layers():
    result = run_cases_in_the_interpreter("dense_kernel_cases.py")
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


@needs_triton
@pytest.mark.parametrize("module", [dense_kernels, nms_kernels, sampling_kernel, deform_kernel],
                         ids=["dense_kernels", "nms_kernels", "sampling_kernel", "deform_kernel"])
def test_every_kernel_calls_its_helpers_by_their_own_names(module):
    # torch.compile's Inductor copies a user kernel's helpers and constants into its generated module under the
    # helpers' function names and imports only triton, tl and libdevice there; any other global a kernel reaches is
    # undefined in that module (a NameError only a CUDA compile shows).
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    kernels = [value for value in vars(module).values() if isinstance(value, JITFunction)]
    assert kernels
    for kernel in kernels:
        for name in kernel.fn.__code__.co_names:
            if name not in kernel.fn.__globals__:
                continue  # an attribute's name (tl.load's load), not a global
            value = kernel.fn.__globals__[name]
            if isinstance(value, JITFunction):
                assert value.fn.__name__ == name, f"{kernel.fn.__name__} calls {value.fn.__name__} as {name}"
            else:
                assert name in ("tl", "triton", "libdevice") or isinstance(value, (tl.constexpr, int, bool)), \
                    f"{kernel.fn.__name__} reads the global {name}, which Inductor's generated module lacks"


@needs_triton
def test_inputs_the_kernels_cannot_take_are_refused_with_what_they_need():
    image, weight, bias = conv_inputs(4, 4, torch.float32)
    with pytest.raises(ValueError, match=r"one image \(1, C, H, W\).*got \(2, 4, 13, 37\)"):
        dense_kernels.direct_conv(image.expand(2, -1, -1, -1), weight, bias)
    with pytest.raises(ValueError, match="k odd"):
        dense_kernels.direct_conv(image, weight[..., :2, :2].contiguous(), bias)
    features, project, head = finest_inputs(8, 16, torch.float32)
    with pytest.raises(ValueError, match="Q a power of two from 16"):
        dense_kernels.finest_level(features, project[:12], head[:, :12])
    with pytest.raises(ValueError, match="contiguous rows"):
        nms_kernels.nms_scores(torch.rand(20, 30).t(), 2)
    with pytest.raises(ValueError, match="an \\(H, W\\) map"):
        nms_kernels.nms_scores(torch.rand(1, 1, 20, 30), 2)
    hidden, weight, bias, shortcut, shortcut_weight, shortcut_bias = residual_inputs(8, 16, torch.float32)
    with pytest.raises(ValueError, match="a shortcut \\(1, S, H, W\\)"):
        dense_kernels.residual_conv(hidden, weight, bias, shortcut[..., :-1], shortcut_weight, shortcut_bias)
    with pytest.raises(ValueError, match="float16.*got \\(20, 30\\) torch.float32"):
        nms_kernels.nms_top_k(torch.rand(20, 30), 2, 10)
    with pytest.raises(ValueError, match="k=601"):
        nms_kernels.nms_top_k(torch.rand(20, 30).half(), 2, 601)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("in_channels, out_channels, activation", CONV_CASES, ids=CONV_IDS)
def test_cuda_direct_conv_matches_conv2d(in_channels, out_channels, activation, dtype, exact_float32_references):
    # A frame's size: many programs, the last one partly outside the map.
    check_conv(*conv_inputs(in_channels, out_channels, dtype, device="cuda", channels_last=in_channels == 3,
                            height=120, width=161), activation)


@needs_cuda
@pytest.mark.parametrize("in_channels, out_channels", [(3, 16), (16, 16)], ids=["direct", "tensor-cores"])
def test_cuda_direct_conv_writes_channels_last_where_asked(in_channels, out_channels):
    image, weight, bias = conv_inputs(in_channels, out_channels, torch.float16, device="cuda", channels_last=True,
                                      height=120, width=161)
    check_conv(image, weight, bias, "selu", channels_last=True)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("in_channels, level_channels", [(8, 16), (16, 32)], ids=["t16", "n16"])
def test_cuda_finest_level_matches_its_two_projections(in_channels, level_channels, dtype, exact_float32_references):
    check_finest(*finest_inputs(in_channels, level_channels, dtype, device="cuda"))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
@pytest.mark.parametrize("in_channels, out_channels", [(8, 16), (16, 32)], ids=["t16", "n16"])
def test_cuda_residual_conv_is_a_residual_blocks_end(in_channels, out_channels, dtype, exact_float32_references):
    check_residual(*residual_inputs(in_channels, out_channels, dtype, device="cuda"))


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_cuda_nms_scores_are_detections_nms_exactly(dtype):
    padded = score_map_with_ties(384, 1248, dtype, device="cuda")
    crop = padded[4:380, 3:1244]  # KITTI's 376 × 1241 inside the padded map
    assert torch.equal(nms_kernels.nms_scores(crop, 2), expected_nms_scores(crop.contiguous(), 2))


@needs_cuda
@pytest.mark.parametrize("k", [1000, 2000, 60000])  # the last above the map's count of maxima: zeros fill
def test_cuda_nms_top_k_takes_the_k_largest_of_the_nms_output(k):
    padded = score_map_with_ties(384, 1248, torch.float16, device="cuda", seed=1)
    check_nms_top_k(padded[4:380, 3:1244], 2, k)


@needs_cuda
def test_cuda_kernels_inside_torch_compile_and_a_cuda_graph(exact_float32_references):
    image, weight, bias = conv_inputs(8, 4, torch.float16, device="cuda", height=96, width=128)

    def layers(image):
        x = dense_kernels.direct_conv(image, weight, bias, "selu")
        values, _ = nms_kernels.nms_top_k(torch.sigmoid(x[0, 0]), 2, 100)
        return x, nms_kernels.nms_scores(x[0, 0], 2), values.sort().values

    compiled = torch.compile(layers, fullgraph=True, dynamic=False)
    from torch._inductor.utils import run_and_get_code

    (x, scores, top), code = run_and_get_code(compiled, image)
    assert any("_direct_conv_mma_kernel" in source and "_nms_pass_kernel" in source
               and "_top_k_gather_kernel" in source for source in code)
    expected_x, expected_scores, expected_top = layers(image)
    torch.testing.assert_close(x, expected_x, rtol=0, atol=0)
    assert torch.equal(scores, expected_scores) and torch.equal(top, expected_top)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured_x, captured_scores, captured_top = compiled(image)
    image.copy_(image.flip(-1))  # a new frame in the same memory: the workspace is zeroed again in the graph
    graph.replay()
    torch.cuda.synchronize()
    expected_x, expected_scores, expected_top = layers(image)
    torch.testing.assert_close(captured_x, expected_x, rtol=0, atol=TOLERANCES[torch.float16])
    assert torch.equal(captured_scores, expected_scores) and torch.equal(captured_top, expected_top)


@needs_cuda
@pytest.mark.parametrize("model", ["aliked-t16", "aliked-n16rot"])
def test_cuda_network_with_the_kernels_gives_the_torch_layers_score_map(model, exact_float32_references):
    aliked = network_pair(model, device="cuda")
    image = torch.rand(1, 3, 376, 1241, generator=torch.Generator().manual_seed(3)).cuda()
    with torch.no_grad():
        expected, _ = aliked.network.score_map_and_features(image)
        aliked.network.set_dense_layers("triton")
        result, pyramid = aliked.network.score_map_and_features(image)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)
    assert pyramid.levels[0].is_contiguous(memory_format=torch.channels_last)
