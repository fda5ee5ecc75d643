"""What an aliked-ros ONNX file says about itself: ONNX ``metadata_props``, readable without torch.

Every file written by ``aliked-ros export-onnx`` carries the keys of :class:`OnnxMetadata` as strings. A file
without them, or with values that do not describe a graph we export, is not one of ours and is refused: its inputs,
outputs and detection mode would be guesses.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Mapping

import numpy as np

from aliked_ros.errors import AlikedError
from aliked_ros.outputs import OutputKind

INPUT_NAME = "image"
OUTPUT_NAMES = ("keypoints", "scores", "descriptors")
PRECISIONS = ("fp32", "fp16")
DEFORM_MODES = ("deformconv", "plain")  # ONNX DeformConv nodes, or gathers and matrix products
INPUT_FORMATS = ("rgb", "bgr", "gray")  # the graph's input: the camera's layout
EXPORT_HINT = "export one with `aliked-ros export-onnx`"
# TensorRT's TopK takes k <= 3840 (TensorRT 10 operator reference, TopK: "k must obey k<=d, k<=3840",
# https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/operators/TopK.html), so no export has more.
TENSORRT_TOPK_LIMIT = 3840


@dataclass(frozen=True)
class OnnxMetadata:
    """The fixed shape and provenance of one exported graph.

    Convention:
        - Input ``image``: uint8 as ``input_format`` says: ``(height, width, 3)`` RGB ("rgb") or BGR ("bgr"), or
          ``(height, width)`` grey ("gray", replicated to three channels inside the graph); the camera's own layout,
          so a robot uploads its bytes as they are. Files written before the field existed are "rgb". Outputs ``keypoints`` float32 ``(top_k, 2)`` pixels,
          ``scores`` float32 ``(top_k,)`` high → low (0 in slots without a maximum), ``descriptors`` float32
          ``(top_k, descriptor_size)``.
        - ``precision`` is the dtype of the network's arithmetic inside the graph ('fp32' or 'fp16'); the inputs and
          outputs have the types above either way. ``deform`` says how deformable convolutions are expressed.
    """

    model: str
    top_k: int
    height: int
    width: int
    precision: str
    descriptor_size: int
    deform: str
    aliked_ros_version: str
    input_format: str = "rgb"

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` entries (ONNX stores strings only)."""
        return {key: str(value) for key, value in asdict(self).items()}

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str | os.PathLike) -> "OnnxMetadata":
        """Parse ``metadata_props``; AlikedError unless they describe a graph that aliked-ros exports."""
        missing = [field.name for field in fields(cls) if field.name not in props and field.name != "input_format"]
        if missing:
            raise AlikedError(
                f"{source} was not exported by aliked-ros (its ONNX metadata lacks {', '.join(missing)}); "
                f"{EXPORT_HINT}."
            )
        try:
            metadata = cls(
                model=props["model"],
                top_k=int(props["top_k"]),
                height=int(props["height"]),
                width=int(props["width"]),
                precision=props["precision"],
                descriptor_size=int(props["descriptor_size"]),
                deform=props["deform"],
                aliked_ros_version=props["aliked_ros_version"],
                input_format=props.get("input_format", "rgb"),
            )
        except ValueError:
            raise AlikedError(f"{source} has unreadable aliked-ros metadata; {EXPORT_HINT}.") from None
        if (metadata.precision not in PRECISIONS or metadata.deform not in DEFORM_MODES
                or metadata.input_format not in INPUT_FORMATS
                or min(metadata.top_k, metadata.height, metadata.width, metadata.descriptor_size) < 1):
            raise AlikedError(f"{source} has aliked-ros metadata with values we never write; {EXPORT_HINT}.")
        return metadata

    @property
    def input_shape(self) -> tuple[int, ...]:
        return (self.height, self.width) if self.input_format == "gray" else (self.height, self.width, 3)

    @property
    def output_shapes(self) -> dict[str, tuple[int, ...]]:
        return {
            "keypoints": (self.top_k, 2),
            "scores": (self.top_k,),
            "descriptors": (self.top_k, self.descriptor_size),
        }

    def describe(self) -> str:
        return (f"{self.model}, {self.width}x{self.height}, top-k {self.top_k}, {self.precision}, "
                f"deform {self.deform}" + ("" if self.input_format == "rgb" else f", {self.input_format} input"))


def _tensor_signature(value_info) -> tuple[int, tuple]:
    tensor_type = value_info.type.tensor_type
    return tensor_type.elem_type, tuple(dim.dim_value if dim.HasField("dim_value") else None
                                        for dim in tensor_type.shape.dim)


def read_onnx_metadata(path: str | os.PathLike) -> OnnxMetadata:
    """The metadata of an aliked-ros ONNX file, after checking that its inputs and outputs agree with it.

    Raises AlikedError, with what to do, for a missing file, a file that is not ONNX, or an ONNX file that
    aliked-ros did not export. Needs the ``onnx`` package (the onnxruntime engine reads the same metadata through
    onnxruntime instead).
    """
    path = Path(path)
    if not path.is_file():
        raise AlikedError(f"The ONNX file {path} does not exist; {EXPORT_HINT}.")
    from aliked_ros.dependencies import require

    onnx = require("onnx", "Reading ONNX files")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError, or OSError
        raise AlikedError(f"{path} is not an ONNX file ({type(error).__name__}); {EXPORT_HINT}.") from None
    metadata = OnnxMetadata.from_props({prop.key: prop.value for prop in model.metadata_props}, path)

    # The metadata must describe this very graph: a file edited by hand or renamed from another export is refused.
    expected_inputs = {INPUT_NAME: (onnx.TensorProto.UINT8, metadata.input_shape)}
    expected_outputs = {name: (onnx.TensorProto.FLOAT, shape) for name, shape in metadata.output_shapes.items()}
    initializers = {initializer.name for initializer in model.graph.initializer}
    inputs = {value.name: _tensor_signature(value) for value in model.graph.input if value.name not in initializers}
    outputs = {value.name: _tensor_signature(value) for value in model.graph.output}
    if inputs != expected_inputs or outputs != expected_outputs:
        raise AlikedError(
            f"{path} says it is an aliked-ros export ({metadata.describe()}) but its inputs or outputs differ from "
            f"that; {EXPORT_HINT}."
        )
    return metadata


def is_aliked_onnx(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an ONNX file that ``export-onnx`` wrote, judged without onnx or onnxruntime: protobuf
    stores strings as they are, so our metadata keys appear verbatim in the file."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    return all(name.encode() in data for name in ("aliked_ros_version", "descriptor_size", INPUT_NAME))


ONNX_OUTPUT = OutputKind("an ONNX file written by aliked-ros", is_aliked_onnx)


def pixels_for_input(pixels: np.ndarray, channel_order: str, input_format: str, source: str) -> np.ndarray:
    """Camera pixels (grey, or colour in ``channel_order``) as a graph of ``input_format`` takes them, converted on
    the host only where they differ: grey into an RGB or BGR graph is replicated, RGB and BGR are reordered. Colour
    into a grey graph is refused: made grey, the frame would give other features than the colour frame."""
    if channel_order not in ("rgb", "bgr"):  # YUV or Bayer: RGB made on the host, then as for an RGB frame
        from aliked_ros.imaging import as_rgb

        pixels, channel_order = as_rgb(pixels, channel_order), "rgb"
    if input_format == "gray":
        if pixels.ndim != 2:
            raise AlikedError(f"{source} was exported for grey frames and this frame is colour; export one for the "
                              "camera's layout (aliked-ros export-onnx --input-format rgb or bgr).")
        return pixels
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if channel_order == input_format:
        return pixels
    return np.ascontiguousarray(pixels[:, :, ::-1])

