"""PyTorch → ONNX: the camera frame in, fixed-size keypoints, scores and descriptors out, checked against PyTorch.

The graph (see :class:`~aliked_ros.export.metadata.OnnxMetadata` for its convention) takes ``image`` uint8
``(H, W, 3)`` RGB as the camera delivers it; the cast, the scaling to [0, 1], the change to ``(1, 3, H, W)`` and the
replicate padding to multiples of 32 are nodes of the graph, so they run on the accelerator. Shapes are static: one
file per model, H, W, K and precision.

Choices, and why:

- Exporter: the TorchScript exporter (``torch.onnx.export(..., dynamo=False)``). It needs nothing beyond torch and
  onnx, and it is the exporter every torch release we support has (``dynamo=`` is passed only where the keyword
  exists; only torch 2.13 was tried here, where it works and warns that it is deprecated). The torch.export-based
  exporter also exports the network (tried with torch 2.13 and onnxscript 0.7, plain deform mode), but needs
  onnxscript and onnx-ir and another custom-operator mechanism (``torch.onnx.ops.symbolic``, torch >= 2.8);
  switching is an open end for when the TorchScript exporter goes away.
- Deformable convolutions: by default one ONNX ``DeformConv`` node each (opset 19; TensorRT's ONNX parser takes it
  from 10.1), emitted by an ``autograd.Function`` whose ``symbolic`` writes the node while its ``forward`` runs the
  network's own tensor kernel. ``deform="plain"`` exports that tensor kernel itself (gathers and a matrix product)
  for runtimes without DeformConv.
- ``aten::trunc`` (the descriptor head's patch corner) has no ONNX operator and no symbolic in the TorchScript
  exporter; it is written as ``Sign(x) * Floor(Abs(x))`` for the duration of the export.
- Constant folding: the tracer leaves the image-size arithmetic as nodes, so the graph is folded afterwards with
  ONNX's reference implementation (:mod:`aliked_ros.export.onnx_graph`); then shape inference proves every output
  static, and no Shape/Range node is left for a runtime to evaluate.
- fp16: the network's parameters are float16 before tracing, so the Conv/DeformConv/MatMul nodes and their
  initializers are FLOAT16 in the file itself (TensorRT 11 builds strongly typed networks: precision must live in
  the graph). The uint8 input is cast straight to float16; detection (keypoints, scores) and descriptor sampling
  run in float32, as the model does, and every output is float32.
- Opset 19: the first with DeformConv, and inside the range TensorRT 10.x's parser documents (9 to 20).

Parity checks (always run, on a real frame) are :mod:`aliked_ros.export.parity`'s.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from aliked_ros import __version__, outputs
from aliked_ros.dependencies import require
from aliked_ros.errors import AlikedError
from aliked_ros.export.metadata import (DEFORM_MODES, INPUT_FORMATS, INPUT_NAME, OUTPUT_NAMES, TENSORRT_TOPK_LIMIT,
                                        OnnxMetadata, read_onnx_metadata)
from aliked_ros.export.onnx_graph import fold_constants
from aliked_ros.export.parity import (ParityReport, check_parity, compare_features, frame_in_format, grey_parity_frame,
                                      parity_frame, run_torch)
from aliked_ros.model.aliked import Aliked, load_aliked, uint8_to_network_input
from aliked_ros.model.configs import MIN_IMAGE_SIDE, get_model_config
from aliked_ros.model.deform_conv import DeformableConv2d, deform_conv2d_tensor

OPSET = 19

ProgressCallback = Callable[[str], None]  # told each stage of the export


# --- validation ---------------------------------------------------------------------------------------------------

def validate_export_options(model: str, height: int, width: int, top_k: int, deform: str = "deformconv") -> None:
    """AlikedError, with what to do, for options no exported graph can have (checked before any work)."""
    get_model_config(model)
    if min(height, width) < MIN_IMAGE_SIDE:
        raise AlikedError(f"The image size {width}x{height} is too small: ALIKED needs at least {MIN_IMAGE_SIDE} "
                          "pixels on each side.")
    if top_k < 1:
        raise AlikedError(f"top_k must be at least 1 for an exported graph, not {top_k}.")
    if top_k > TENSORRT_TOPK_LIMIT:
        raise AlikedError(f"top_k {top_k} is larger than {TENSORRT_TOPK_LIMIT}, the most TensorRT's TopK layer "
                          f"takes; choose {TENSORRT_TOPK_LIMIT} or fewer.")
    if top_k > height * width:
        raise AlikedError(f"top_k {top_k} is larger than the {height * width} pixels of a {width}x{height} "
                          "image; choose fewer keypoints.")
    if deform not in DEFORM_MODES:
        raise AlikedError(f"Unknown deform mode {deform!r}: choose one of {', '.join(DEFORM_MODES)}.")


# --- the exported module ------------------------------------------------------------------------------------------

class _DeformConvFunction(torch.autograd.Function):
    """Stride-1 DCNv1: computed by the tensor kernel, exported as one ONNX DeformConv node."""

    @staticmethod
    def forward(ctx, x: Tensor, offset: Tensor, weight: Tensor, padding: int, kernel_h: int, kernel_w: int) -> Tensor:
        return deform_conv2d_tensor(x, offset, weight, padding)

    @staticmethod
    def symbolic(g, x, offset, weight, padding: int, kernel_h: int, kernel_w: int):
        # ONNX input order is (X, W, offset); offsets are (dy, dx) per tap, taps row-major, as in the tensor kernel.
        return g.op("DeformConv", x, weight, offset, kernel_shape_i=[kernel_h, kernel_w],
                    pads_i=[padding] * 4, strides_i=[1, 1], dilations_i=[1, 1], group_i=1, offset_group_i=1)


class _DeformConvNodeConv2d(DeformableConv2d):
    """A DeformableConv2d whose deformable part exports as ONNX DeformConv; the offset branch is unchanged."""

    @classmethod
    def from_module(cls, module: DeformableConv2d) -> "_DeformConvNodeConv2d":
        conv = module.regular_conv
        replacement = cls(conv.in_channels, conv.out_channels, conv.kernel_size[0], module.padding)
        replacement.load_state_dict(module.state_dict())
        return replacement.to(conv.weight.dtype)

    def deform(self, x: Tensor, offset: Tensor) -> Tensor:
        kernel_h, kernel_w = self.regular_conv.kernel_size
        return _DeformConvFunction.apply(x, offset, self.regular_conv.weight, self.padding, kernel_h, kernel_w)


class Uint8Aliked(nn.Module):
    """The module that is traced: uint8 camera pixels in (``(H, W, 3)`` RGB or BGR, or ``(H, W)`` grey, as
    ``input_format`` says), :class:`Aliked`'s top-k outputs out."""

    def __init__(self, aliked: Aliked, dtype: torch.dtype, input_format: str = "rgb"):
        super().__init__()
        self.aliked = aliked
        self.dtype = dtype
        self.input_format = input_format

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # Cast first: TensorRT takes UINT8 only as a network input or output (and into a Cast), not into Transpose,
        # Expand or Gather. Casting first gives the same values as casting after.
        pixels = image.to(self.dtype)
        if self.input_format == "gray":
            pixels = pixels.unsqueeze(-1).expand(*pixels.shape, 3)
        elif self.input_format == "bgr":
            pixels = pixels[:, :, [2, 1, 0]]  # a Gather with constant indices: every runtime has it
        return self.aliked(uint8_to_network_input(pixels, self.dtype))


def build_export_module(aliked: Aliked, *, fp16: bool = False, deform: str = "deformconv",
                        input_format: str = "rgb") -> Uint8Aliked:
    """A copy of ``aliked`` prepared for tracing; ``aliked`` itself is left as it was."""
    if deform not in DEFORM_MODES:
        raise AlikedError(f"Unknown deform mode {deform!r}: choose one of {', '.join(DEFORM_MODES)}.")
    network_copy = copy.deepcopy(aliked).cpu().float().eval()
    if deform == "deformconv":
        for name, module in list(network_copy.named_modules()):
            if isinstance(module, DeformableConv2d):
                parent_name, _, child_name = name.rpartition(".")
                setattr(network_copy.get_submodule(parent_name), child_name, _DeformConvNodeConv2d.from_module(module))
    else:
        network_copy.network.set_deform_implementation("tensor")  # never torchvision's op, whatever is installed
    dtype = torch.float16 if fp16 else torch.float32
    return Uint8Aliked(network_copy.to(dtype), dtype, input_format).eval()


@contextlib.contextmanager
def _trunc_as_onnx_ops():
    """Give ``aten::trunc`` an ONNX form for the TorchScript exporter, for the duration of one export."""
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    def trunc(g, x):  # trunc(x) = sign(x) · floor(|x|)
        return g.op("Mul", g.op("Sign", x), g.op("Floor", g.op("Abs", x)))

    register_custom_op_symbolic("aten::trunc", trunc, OPSET)
    try:
        yield
    finally:
        unregister_custom_op_symbolic("aten::trunc", OPSET)


def _torchscript_exporter() -> dict:
    """``dynamo=False`` where torch.onnx.export has the keyword (torch >= 2.5); before, it is the only exporter."""
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def trace_to_onnx(module: Uint8Aliked, rgb: np.ndarray):
    """Trace ``module`` on one uint8 frame in its input format (its size becomes the graph's).

    Returns the constant-folded onnx.ModelProto (without metadata) and the module's own outputs on that frame,
    as float32 numpy arrays: the tracer runs the module once, and those are its results.
    """
    import onnx

    outputs = []
    hook = module.register_forward_hook(lambda _module, _inputs, result: outputs.append(result))
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), _trunc_as_onnx_ops(), torch.no_grad():
            # Shapes are static by design, so the tracer's notes that shape arithmetic became constants are
            # expected; the deprecation notice of the TorchScript exporter is discussed in the module docstring.
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=".*feature will be removed.*")
            warnings.filterwarnings("ignore", message="Constant folding - Only steps=1")  # we fold afterwards
            torch.onnx.export(
                module, (torch.from_numpy(rgb),), buffer, opset_version=OPSET, input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES), do_constant_folding=True, **_torchscript_exporter(),
            )
    finally:
        hook.remove()
    traced = tuple(output.float().numpy() for output in outputs[0])
    return fold_constants(onnx.load_from_string(buffer.getvalue())), traced


def check_graph(graph, metadata: OnnxMetadata):
    """onnx.checker (full check) and strict shape inference; the inferred graph, with static output shapes."""
    import onnx

    try:
        onnx.checker.check_model(graph, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(graph, check_type=True, strict_mode=True, data_prop=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise AlikedError(f"The exported graph is not valid ONNX ({error}); please report this.") from None
    shapes = {value.name: tuple(dim.dim_value if dim.HasField("dim_value") else None
                                for dim in value.type.tensor_type.shape.dim)
              for value in inferred.graph.output}
    if shapes != metadata.output_shapes:
        raise AlikedError(f"The exported graph's outputs have shapes {shapes}, not the static "
                          f"{metadata.output_shapes}; please report this.")
    return inferred


# --- the whole export ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ExportResult:
    path: Path
    metadata: OnnxMetadata
    parity: ParityReport  # the written file through onnxruntime vs PyTorch fp32
    traced_parity: ParityReport  # the traced module as PyTorch ran it (fp16 arithmetic for fp16) vs PyTorch fp32
    parity_frame: str


def export_onnx(output: str | os.PathLike, model: str, height: int, width: int, top_k: int, *, fp16: bool = False,
                deform: str = "deformconv", weights: str | os.PathLike | None = None,
                parity_image: str | os.PathLike | None = None, allow_download: bool = True,
                progress: ProgressCallback | None = None, input_format: str = "rgb") -> ExportResult:
    """Export, check and write one graph; ``output`` appears only once every check has passed.

    Stages: load the weights; run the float32 PyTorch model on the parity frame (the reference); trace the export
    module on that frame, whose outputs are compared with the reference (for fp16 this is real float16 arithmetic
    by PyTorch, which onnxruntime's CPU provider does not give, see the module docstring); check the graph
    (onnx.checker with full check, strict shape inference, static output shapes); write it next to ``output`` under
    a temporary name and read its metadata back; run it through onnxruntime on the CPU and compare with the
    reference; rename it to ``output``. Raises AlikedError with what to do.
    """
    validate_export_options(model, height, width, top_k, deform)
    if input_format not in INPUT_FORMATS:
        raise AlikedError(f"Unknown input format {input_format!r}: choose one of {', '.join(INPUT_FORMATS)}.")
    onnx = require("onnx", "Export")

    say = progress or (lambda stage: None)
    output = Path(output)
    precision = "fp16" if fp16 else "fp32"

    say(f"loading {model} weights")
    aliked = load_aliked(model, top_k, weights, allow_download=allow_download)
    metadata = OnnxMetadata(model=model, top_k=top_k, height=height, width=width, precision=precision,
                            descriptor_size=aliked.descriptor_size, deform=deform, aliked_ros_version=__version__,
                            input_format=input_format)
    frame_name, rgb = parity_frame(height, width, parity_image)
    if input_format == "gray":
        rgb, frame_name = grey_parity_frame(rgb), f"{frame_name}, made grey"
    say(f"running the PyTorch fp32 reference on {frame_name}")
    reference = run_torch(aliked, rgb)

    say(f"tracing to ONNX (opset {OPSET}, {precision}, deform {deform}, {width}x{height}, top-k {top_k})")
    module = build_export_module(aliked, fp16=fp16, deform=deform, input_format=input_format)
    graph, traced = trace_to_onnx(module, frame_in_format(rgb, input_format))
    traced_report = compare_features(reference, traced, precision, f"traced module (PyTorch {precision})").require()
    say(f"parity: {traced_report.summary()}")
    graph.graph.name = f"aliked_ros_{model.replace('-', '_')}"
    layout = {"rgb": "RGB (H, W, 3)", "bgr": "BGR (H, W, 3)", "gray": "grey (H, W)"}[input_format]
    graph.doc_string = f"aliked-ros {__version__}: {metadata.describe()}; uint8 {layout} in."
    onnx.helper.set_model_props(graph, metadata.to_props())

    say("checking the graph (onnx.checker, shape inference)")
    graph = check_graph(graph, metadata)

    output.parent.mkdir(parents=True, exist_ok=True)
    # The file is checked as written, before it takes the output's name: a failed check leaves no file behind.
    with outputs.atomic_path(output) as temporary:
        onnx.save(graph, str(temporary))
        read_onnx_metadata(temporary)  # what every reader will do: the metadata agrees with the graph
        say("comparing the written graph with PyTorch through onnxruntime (CPU)")
        report = check_parity(temporary, reference, rgb, precision, input_format)
        say(f"parity: {report.summary()}")
    say(f"wrote {output}")
    return ExportResult(output, metadata, report, traced_report, frame_name)

