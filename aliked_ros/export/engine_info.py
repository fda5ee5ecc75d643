"""What a TensorRT plan was built from and for: the JSON sidecar beside every ``.engine`` file, and the checks made
before a plan is used. Plain Python (no TensorRT, no torch), so these rules are tested on any machine.

A TensorRT plan runs only with the TensorRT version that built it and on GPUs of the compute capability it was
built for (NVIDIA's developer guide, "Engine compatibility": without the version- and hardware-compatibility
builder options, which we do not use, a plan is tied to both). The sidecar records both, so a mismatch is reported as
a sentence that says what to do, before TensorRT itself fails with a deserialisation error.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from aliked_ros import outputs
from aliked_ros.errors import AlikedError
from aliked_ros.export.metadata import TENSORRT_TOPK_LIMIT, OnnxMetadata

SIDECAR_FORMAT = "aliked_ros.tensorrt_engine/1"


@dataclass(frozen=True)
class EngineInfo:
    onnx: OnnxMetadata
    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str  # "8.7" (Jetson Orin), "9.0" (H100)
    builder_optimization_level: int
    workspace_mib: int | None

    def describe(self) -> str:
        return (f"{self.onnx.describe()}, TensorRT {self.tensorrt_version}, {self.gpu_name} "
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

