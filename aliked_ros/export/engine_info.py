"""What a TensorRT plan was built from and for: the JSON sidecar beside every ``.engine`` file, and the checks made
before a plan is used. Plain Python (no TensorRT, no torch), so these rules are tested on any machine.

A TensorRT plan runs only with the TensorRT version that built it and on GPUs of the compute capability it was
built for (NVIDIA's developer guide, "Engine compatibility": without the version- and hardware-compatibility
builder options, which we do not use, a plan is tied to both). The sidecar records both, so a mismatch is reported as
a sentence that says what to do, before TensorRT itself fails with a deserialisation error.

It also holds the version rule (:func:`check_tensorrt_version`) and the precision rule (:func:`allows_tf32`) that the
builder follows, so that both are tested where TensorRT is absent; :func:`load_tensorrt` imports TensorRT only when
called.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from aliked_ros import outputs
from aliked_ros.dependencies import require
from aliked_ros.errors import AlikedError
from aliked_ros.export.metadata import TENSORRT_TOPK_LIMIT, OnnxMetadata

SIDECAR_FORMAT = "aliked_ros.tensorrt_engine/1"
# TensorRT's ONNX parser reads DeformConv from 10.1 on: onnx/onnx-tensorrt docs/operators.md lists it in 10.1-GA,
# not in 10.0-GA. Below 10.0 networks are not explicit-batch by default and our builder does not run at all.
TENSORRT_MINIMUM = (10, 1)
TENSORRT_MINIMUM_PLAIN = (10, 0)  # graphs exported with `--deform plain` have no DeformConv


@dataclass(frozen=True)
class EngineInfo:
    onnx: OnnxMetadata
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7" (Jetson Orin), "9.0" (H100)
    builder_optimization_level: int
    workspace_mib: int | None
    # Whether TensorRT could run float32 convolutions and matrix products in TF32 (its default): False for plans
    # built from fp32 ONNX files, so that "fp32" means fp32; None in sidecars written before this was recorded.
    tf32: bool | None = None

    def describe(self) -> str:
        tf32 = "" if self.tf32 is None else (", TF32 allowed" if self.tf32 else ", no TF32")
        return (f"{self.onnx.describe()}{tf32}, TensorRT {self.tensorrt_version}, {self.gpu_name} "
                f"(sm {self.compute_capability})")


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    return Path(f"{engine_path}.json")


def write_sidecar(engine_path: str | os.PathLike, info: EngineInfo) -> Path:
    path = sidecar_path(engine_path)
    document = {"format": SIDECAR_FORMAT, **asdict(info), "onnx": info.onnx.to_props()}
    outputs.write_text(path, json.dumps(document, indent=2))
    return path


def read_sidecar(engine_path: str | os.PathLike) -> EngineInfo:
    path = sidecar_path(engine_path)
    hint = "rebuild the engine with `aliked-ros build-engine`"
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise AlikedError(f"{engine_path} has no {path.name} beside it, so what it was built for is unknown; "
                          f"{hint}.") from None
    except (OSError, ValueError) as error:
        raise AlikedError(f"{path} is unreadable ({error}); {hint}.") from None
    if not isinstance(document, dict) or document.get("format") != SIDECAR_FORMAT:
        raise AlikedError(f"{path} is not an aliked-ros engine description; {hint}.")
    try:
        return EngineInfo(
            onnx=OnnxMetadata.from_props(document["onnx"], path),
            onnx_sha256=str(document["onnx_sha256"]),
            tensorrt_version=str(document["tensorrt_version"]),
            gpu_name=str(document["gpu_name"]),
            compute_capability=str(document["compute_capability"]),
            builder_optimization_level=int(document["builder_optimization_level"]),
            workspace_mib=None if document.get("workspace_mib") is None else int(document["workspace_mib"]),
            tf32=None if document.get("tf32") is None else bool(document["tf32"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise AlikedError(f"{path} lacks or garbles {error}; {hint}.") from None


def check_runs_here(info: EngineInfo, engine_path: str | os.PathLike, tensorrt_version: str, gpu_name: str,
                    compute_capability: str) -> list[str]:
    """Refuse a plan that cannot run here; return warnings for what can run but was not built for this GPU."""
    rebuild = "rebuild it here with `aliked-ros build-engine` from its ONNX file"
    if info.tensorrt_version != tensorrt_version:
        raise AlikedError(f"{engine_path} was built by TensorRT {info.tensorrt_version}, and this is TensorRT "
                          f"{tensorrt_version}: plans run only with the version that built them; {rebuild}.")
    if info.compute_capability != compute_capability:
        raise AlikedError(f"{engine_path} was built for {info.gpu_name} (compute capability "
                          f"{info.compute_capability}), and this GPU is {gpu_name} ({compute_capability}); {rebuild}.")
    if info.gpu_name != gpu_name:
        return [f"{engine_path} was built on {info.gpu_name}; it runs on this {gpu_name} (same compute capability), "
                f"but its kernels were timed on the other GPU: rebuild for the best speed."]
    return []


def tensorrt_version_tuple(version: str) -> tuple[int, int]:
    """(major, minor) of a TensorRT version string such as ``trt.__version__`` ("10.3.0.30", "11.0.0")."""
    match = re.match(r"\s*(\d+)(?:\.(\d+))?", str(version))
    if match is None:
        raise AlikedError(f"TensorRT reports the version {version!r}, which aliked-ros cannot read; "
                          "reinstall TensorRT 10.1 or newer.")
    return int(match.group(1)), int(match.group(2) or 0)


def check_tensorrt_version(version: str, deform: str | None = None) -> None:
    """Refuse a TensorRT that cannot build (``deform``: the ONNX file's, "deformconv" or "plain") or run
    (``deform`` None) our plans, with a sentence that says what to install or export instead."""
    found = tensorrt_version_tuple(version)
    jetpack = "on a Jetson, JetPack 6.1 or newer ships TensorRT 10.3"
    if found < TENSORRT_MINIMUM_PLAIN:
        raise AlikedError(
            f"TensorRT {version} is too old: aliked-ros needs TensorRT 10.1 or newer (10.0 at least for a graph "
            f"exported with `aliked-ros export-onnx --deform plain`); install it with "
            f"`pip install 'aliked-ros[tensorrt-cu12]'` ({jetpack}).")
    if deform == "deformconv" and found < TENSORRT_MINIMUM:
        raise AlikedError(
            f"TensorRT {version}'s ONNX parser has no DeformConv (it came in TensorRT 10.1): export the graph "
            f"with `aliked-ros export-onnx --deform plain` (gathers and a matrix product instead), or install "
            f"TensorRT 10.1 or newer ({jetpack}).")


def load_tensorrt(feature: str, deform: str | None = None):
    """``import tensorrt`` for ``feature``: a MissingPackageError where it is absent, an AlikedError where
    :func:`check_tensorrt_version` refuses its version."""
    trt = require("tensorrt", feature)
    check_tensorrt_version(trt.__version__, deform)
    return trt


def allows_tf32(precision: str) -> bool:
    """Whether a plan built from an ONNX file of this precision may use TF32.

    ``BuilderFlag.TF32`` is on by default ("Enabled by default", NvInfer.h in TensorRT 10.3 and 11.x, and the
    Python docstring python/docstrings/infer/pyCoreDoc.h): float32 inner products then round their inputs to 10-bit
    mantissas. An fp32 graph is built without it, so that "fp32" means fp32; an fp16 graph keeps TensorRT's default,
    its arithmetic being float16 already."""
    return precision != "fp32"


def plan_is_current(engine_path: str | os.PathLike, precision: str) -> bool:
    """Whether a cached plan can be used as it is: the file, and a readable sidecar saying that it was built as
    aliked-ros builds now (fp32 without TF32; a plan from before that rule is rebuilt once)."""
    if not Path(engine_path).is_file():
        return False
    try:
        info = read_sidecar(engine_path)
    except AlikedError:
        return False
    return info.tf32 is not None and info.tf32 == allows_tf32(precision)


def check_top_k_for_tensorrt(top_k: int) -> None:
    if top_k > TENSORRT_TOPK_LIMIT:
        raise AlikedError(f"top_k {top_k} exceeds TensorRT's TopK limit of {TENSORRT_TOPK_LIMIT}; choose "
                          f"{TENSORRT_TOPK_LIMIT} or fewer keypoints for a TensorRT engine.")


def format_parser_errors(errors) -> str:
    """One line per ONNX parser error, naming the failing node: ``errors`` are (description, node index, node name,
    operator) tuples, read from TensorRT's parser by the builder."""
    lines = []
    for description, node_index, node_name, operator in errors:
        where = f"node {node_index}" if node_index is not None and node_index >= 0 else "the graph"
        if node_name:
            where += f" {node_name!r}"
        if operator:
            where += f" ({operator})"
        lines.append(f"  {where}: {description}")
    return "\n".join(lines)


def is_aliked_engine(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a plan that ``build-engine`` wrote: a file with a readable sidecar of ours beside it."""
    try:
        read_sidecar(path)
    except AlikedError:
        return False
    return Path(path).is_file()


def is_sidecar(path: str | os.PathLike) -> bool:
    try:
        return json.loads(Path(path).read_text()).get("format") == SIDECAR_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


ENGINE_OUTPUT = outputs.OutputKind("a TensorRT engine written by aliked-ros (with its .json sidecar)", is_aliked_engine)
SIDECAR_OUTPUT = outputs.OutputKind("an engine description written by aliked-ros", is_sidecar)

