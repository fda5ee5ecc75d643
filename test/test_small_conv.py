"""The direct Triton convolution of the CUDA fast path against F.conv2d: layer by layer and in the whole network.

On CUDA the kernel runs as it does in the engine; without a GPU it runs in Triton's interpreter (TRITON_INTERPRET=1,
read when Triton defines the kernel, hence a subprocess); without Triton these tests skip.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from aliked_ros.model.configs import get_model_config
from aliked_ros.model.network import AlikedNetwork
from aliked_ros.model.small_conv import conv2d_activation, direct_kernel_pays

HAS_TRITON = importlib.util.find_spec("triton") is not None
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="needs Triton (not installed here)")

# The network's full-resolution layers (aliked-t16, aliked-n16rot), each with the activation that follows it.
LAYERS = [(3, 8, 3, "selu"), (8, 8, 3, "selu"), (8, 16, 1, "selu"), (16, 8, 1, "none"), (8, 4, 3, "selu"),
          (4, 4, 3, "selu"), (4, 1, 3, "sigmoid"), (3, 16, 3, "selu"), (32, 8, 1, "none")]

LAYER_CHECK = """
import json, torch
from aliked_ros.model.small_conv import conv2d_activation
torch.manual_seed(0)
device, dtype = {device!r}, getattr(torch, {dtype!r})
errors = []
for in_channels, out_channels, kernel, activation in {layers!r}:
    for with_bias in (True, False):
        # 2 images of an odd size: rows and columns that no block size divides, and every border.
        x = torch.randn(2, in_channels, 13, 37, device=device)
        weight = torch.randn(out_channels, in_channels, kernel, kernel, device=device)
        weight = weight / (in_channels * kernel**2) ** 0.5
        bias = torch.randn(out_channels, device=device) if with_bias else None
        expected = conv2d_activation(x.double(), weight.double(), None if bias is None else bias.double(),
                                     output_activation=activation)
        result = conv2d_activation(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype),
                                   output_activation=activation, implementation="triton")
        assert result.dtype == dtype and result.shape == expected.shape, (result.dtype, result.shape)
        errors.append((result.double() - expected).abs().max().item())
print(json.dumps(errors))
"""

NETWORK_CHECK = """
import json, torch
from aliked_ros.model.configs import get_model_config
from aliked_ros.model.network import AlikedNetwork
torch.manual_seed(0)
torch.backends.cudnn.allow_tf32 = False  # cuDNN's float32 convolutions otherwise round their inputs to 10 bits
errors = {{}}
for model in ("aliked-t16", "aliked-n16rot"):
    network = AlikedNetwork(get_model_config(model)).eval()
    for module in network.modules():  # BN statistics away from the identity, so that folding them matters
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2); module.running_var.uniform_(0.5, 2.0)
    network.fold_batch_norm()
    network.to({device!r})
    image = torch.rand(1, 3, 64, 96, device={device!r})
    with torch.no_grad():
        score_torch, features_torch = network.score_map_and_features(image)
        network.set_small_conv_implementation("triton")
        score_triton, features_triton = network.score_map_and_features(image)
    rows = torch.arange(0, 64, 7, device={device!r}).view(-1, 1).expand(-1, 14)
    columns = torch.arange(0, 96, 7, device={device!r}).view(1, -1).expand(10, -1)
    vectors_triton, vectors_torch = features_triton.vectors(columns, rows), features_torch.vectors(columns, rows)
    errors[model] = [(score_triton - score_torch).abs().max().item(),
                     (vectors_triton - vectors_torch).abs().max().item()]
print(json.dumps(errors))
"""


def run_check(code: str) -> object:
    """Run a check on CUDA in this process, or in Triton's interpreter in a subprocess; its printed JSON result."""
    if torch.cuda.is_available():
        namespace: dict = {}
        from contextlib import redirect_stdout
        from io import StringIO

        printed = StringIO()
        with redirect_stdout(printed):
            exec(compile(code, "<check>", "exec"), namespace)
        return json.loads(printed.getvalue())
    environment = dict(os.environ, TRITON_INTERPRET="1")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=environment, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@needs_triton
def test_direct_kernel_equals_conv2d_float32():
    errors = run_check(LAYER_CHECK.format(device=DEVICE, dtype="float32", layers=LAYERS))
    assert len(errors) == 2 * len(LAYERS)
    assert max(errors) < 1e-4, errors


@needs_triton
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (float16 arithmetic is the GPU's)")
def test_direct_kernel_equals_conv2d_float16():
    errors = run_check(LAYER_CHECK.format(device=DEVICE, dtype="float16", layers=LAYERS))
    # Inputs and weights rounded to float16, float32 accumulation, the output rounded to float16.
    assert max(errors) < 1e-2, errors


@needs_triton
def test_network_with_direct_kernels_equals_cudnn_network():
    errors = run_check(NETWORK_CHECK.format(device=DEVICE))
    for model, (score_error, feature_error) in errors.items():
        assert score_error < 1e-5, (model, errors)
        assert feature_error < 1e-5, (model, errors)


def test_torch_implementation_is_conv2d_then_activation():
    torch.manual_seed(1)
    x, weight, bias = torch.randn(2, 4, 9, 11), torch.randn(3, 4, 3, 3), torch.randn(3)
    expected = torch.sigmoid(F.conv2d(x, weight, bias, padding=1))
    assert torch.allclose(conv2d_activation(x, weight, bias, output_activation="sigmoid"), expected)
    # 1×1, a batch of 2, with and without bias
    pointwise = weight[:, :, 1:2, 1:2].contiguous()
    assert torch.allclose(conv2d_activation(x, pointwise), F.conv2d(x, pointwise), atol=1e-6)
    assert torch.allclose(conv2d_activation(x, pointwise, bias, output_activation="selu"),
                          F.selu(F.conv2d(x, pointwise, bias)), atol=1e-6)


def test_bad_arguments_are_refused():
    x = torch.zeros(1, 2, 8, 8)
    with pytest.raises(ValueError, match="output_activation"):
        conv2d_activation(x, torch.zeros(1, 2, 3, 3), output_activation="relu")
    with pytest.raises(ValueError, match="odd size"):
        conv2d_activation(x, torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match="implementation"):
        conv2d_activation(x, torch.zeros(1, 2, 3, 3), implementation="cudnn")


def test_the_direct_kernel_takes_only_the_smallest_layers():
    assert direct_kernel_pays(torch.zeros(8, 8, 3, 3)) and direct_kernel_pays(torch.zeros(16, 3, 3, 3))
    assert direct_kernel_pays(torch.zeros(32, 16, 1, 1))
    assert not direct_kernel_pays(torch.zeros(16, 16, 3, 3))  # slower than cuDNN on the H100


def test_choosing_the_direct_kernel_needs_folded_batch_norm():
    network = AlikedNetwork(get_model_config("aliked-t16")).eval()
    with pytest.raises(ValueError, match="fold the batch norms"):
        network.set_small_conv_implementation("triton")
    with pytest.raises(ValueError, match="implementation"):
        network.set_small_conv_implementation("cudnn")
    network.fold_batch_norm()
    network.set_small_conv_implementation("triton")
    assert network.small_conv_implementation == network.block1.small_conv_implementation == "triton"
