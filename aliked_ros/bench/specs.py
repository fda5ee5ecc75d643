"""The bench's rows by name (``--engines``, ``--reference``) and the plan of which of them run on this machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from aliked_ros.bench.machine import Environment
from aliked_ros.errors import AlikedError


@dataclass(frozen=True)
class RowSpec:
    """One engine or reference, named as on the command line (``torch-graph-fp16``, ``kornia-eager``)."""

    name: str
    kind: str  # "engine" or "reference"
    runtime: str  # torch, onnxruntime, tensorrt; kornia or lightglue for a reference
    precision: str = "fp32"
    cuda_graph: bool = False
    # None (eager); "default" or "reduce-overhead" (references); "default" or "max-autotune-no-cudagraphs" (torch)
    compile_mode: str | None = None
    label: str = ""  # the table's name for it
    feature_reads: str = "auto"  # the torch engine's descriptor-head reads (ExtractorConfig.feature_reads)
    deform_reads: str = "auto"  # the torch engine's deformable-convolution reads (ExtractorConfig.deform_reads)
    dense_layers: str = "auto"  # the torch engine's full-resolution layers (ExtractorConfig.dense_layers)

    @property
    def needs_cuda(self) -> bool:
        return self.cuda_graph or self.runtime == "tensorrt" or self.compile_mode is not None

    @property
    def min_warmup(self) -> int:
        """Calls that are warm-up whatever --warmup says: a compiled reference compiles on its first call, and
        torch.compile's CUDA graphs record on a later one; the torch engine's graph path captures (and compiles) inside
        its first call."""
        if self.kind == "reference":
            return {None: 0, "default": 2, "reduce-overhead": 3}[self.compile_mode]
        return 1 if self.cuda_graph else 0


ENGINE_SPECS = {spec.name: spec for spec in (
    RowSpec("torch-fp32", "engine", "torch", "fp32", label="torch fp32"),
    RowSpec("torch-fp16", "engine", "torch", "fp16", label="torch fp16"),
    RowSpec("torch-graph-fp32", "engine", "torch", "fp32", cuda_graph=True, label="torch CUDA graph fp32"),
    RowSpec("torch-graph-fp16", "engine", "torch", "fp16", cuda_graph=True, label="torch CUDA graph fp16"),
    RowSpec("torch-compiled-graph-fp32", "engine", "torch", "fp32", cuda_graph=True, compile_mode="default",
            label="torch compiled + CUDA graph fp32"),
    RowSpec("torch-compiled-graph-fp16", "engine", "torch", "fp16", cuda_graph=True, compile_mode="default",
            label="torch compiled + CUDA graph fp16"),
    # The fast path with the descriptor head's gathers instead of its feature-read kernel (the default since issue
    # 17): beside the row above in one run, what the kernel pays.
    RowSpec("torch-compiled-graph-gathers-fp16", "engine", "torch", "fp16", cuda_graph=True, compile_mode="default",
            label="torch compiled + CUDA graph, gathers fp16", feature_reads="torch"),
    # Inductor's autotuning of the convolutions and matrix products (issue 17): beside the default mode in one run.
    RowSpec("torch-compiled-autotune-graph-fp16", "engine", "torch", "fp16", cuda_graph=True,
            compile_mode="max-autotune-no-cudagraphs", label="torch compiled (max-autotune) + CUDA graph fp16"),
    # The fast path with the deformable convolutions' gathers instead of their read kernel (the default since issue
    # 17): beside the fast path in one run, what the kernel pays.
    RowSpec("torch-compiled-graph-deform-gathers-fp16", "engine", "torch", "fp16", cuda_graph=True,
            compile_mode="default", label="torch compiled + CUDA graph, deformable gathers fp16", deform_reads="torch"),
    # The fast path with cuDNN's full-resolution convolutions and torch's NMS instead of their Triton kernels (the
    # default since issue 17): beside the fast path in one run, what the kernels pay.
    RowSpec("torch-compiled-graph-cudnn-fp16", "engine", "torch", "fp16", cuda_graph=True, compile_mode="default",
            label="torch compiled + CUDA graph, cuDNN full-resolution layers fp16", dense_layers="torch"),
    RowSpec("onnxruntime-fp32", "engine", "onnxruntime", "fp32", label="onnxruntime fp32"),
    RowSpec("onnxruntime-fp16", "engine", "onnxruntime", "fp16", label="onnxruntime fp16"),
    RowSpec("tensorrt-fp16", "engine", "tensorrt", "fp16", label="TensorRT fp16"),
    RowSpec("tensorrt-fp32", "engine", "tensorrt", "fp32", label="TensorRT fp32"),
)}
# Bare runtime names: onnxruntime's float32 graph (its CPU provider has few float16 kernels), TensorRT's float16 plan.
ENGINE_ALIASES = {"onnxruntime": ["onnxruntime-fp32"], "tensorrt": ["tensorrt-fp16"], "all": list(ENGINE_SPECS)}
DEFAULT_ENGINES = ("torch-fp32,torch-fp16,torch-graph-fp16,torch-graph-fp32,torch-compiled-graph-fp16,onnxruntime,"
                   "tensorrt")

REFERENCE_SPECS = {spec.name: spec for spec in (
    RowSpec("kornia-eager", "reference", "kornia", label="kornia eager"),
    RowSpec("kornia-compiled", "reference", "kornia", compile_mode="default", label="kornia compiled"),
    RowSpec("kornia-graphs", "reference", "kornia", compile_mode="reduce-overhead", label="kornia compiled+graphs"),
    RowSpec("lightglue-eager", "reference", "lightglue", label="LightGlue eager"),
    RowSpec("lightglue-compiled", "reference", "lightglue", compile_mode="default", label="LightGlue compiled"),
    RowSpec("lightglue-graphs", "reference", "lightglue", compile_mode="reduce-overhead",
            label="LightGlue compiled+graphs"),
)}
REFERENCE_ALIASES = {
    runtime: [name for name, spec in REFERENCE_SPECS.items() if spec.runtime == runtime]
    for runtime in ("kornia", "lightglue")
} | {"all": list(REFERENCE_SPECS), "none": []}
DEFAULT_REFERENCES = "kornia,lightglue"


def _parse_names(text: str, specs: dict, aliases: dict, flag: str, noun: str) -> list[RowSpec]:
    names: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            raise AlikedError(f"{flag} {text!r} has an empty name (two commas in a row?).")
        if item in aliases:
            names.extend(aliases[item])
        elif item in specs:
            names.append(item)
        else:
            choices = ", ".join([*specs, *aliases])
            raise AlikedError(f"Unknown {noun} {item!r} in {flag}: choose from {choices} (comma-separated).")
    return [specs[name] for name in dict.fromkeys(names)]  # in order, once each


def parse_engines(text: str) -> list[RowSpec]:
    """``torch-fp32,torch-graph-fp16,onnxruntime,...`` → row specs, in order, duplicates dropped."""
    return _parse_names(text, ENGINE_SPECS, ENGINE_ALIASES, "--engines", "engine")


def parse_references(text: str) -> list[RowSpec]:
    """``kornia`` or ``lightglue`` (each one's three rows), ``all``, ``kornia-eager,lightglue-graphs``, or ``none``."""
    return _parse_names(text, REFERENCE_SPECS, REFERENCE_ALIASES, "--reference", "reference")


# --- which rows run here ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlannedRow:
    """A row this machine can run: where it runs, and a note where that is not what was asked for."""

    spec: RowSpec
    device: str  # "cpu" or "cuda:N"
    provider: str | None = None  # onnxruntime's provider choice
    note: str | None = None


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str


_ORT = {"cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def plan_rows(specs: Iterable[RowSpec], environment: Environment,
              onnxruntime_provider: str = "auto") -> tuple[list[PlannedRow], list[Skipped]]:
    """The rows of ``specs`` that run here, and the others with the reason.

    ``onnxruntime_provider``: 'auto' (on a CUDA device its CUDA provider, falling back to the CPU with a note where
    this onnxruntime has none; on the CPU the CPU provider), 'cpu', 'cuda' or 'tensorrt' (skipped where missing).
    """
    planned: list[PlannedRow] = []
    skipped: list[Skipped] = []
    device = environment.device
    for spec in specs:
        if spec.needs_cuda and not environment.cuda:
            what = "the torch.compile references run" if spec.kind == "reference" else f"{spec.name} runs"
            skipped.append(Skipped(spec.name, f"{what} on CUDA only, and the device is {device}"))
        elif spec.runtime == "torch" and spec.precision == "fp16" and not environment.cuda:
            skipped.append(Skipped(spec.name, "float16 is a GPU setting: PyTorch emulates it slowly on the CPU"))
        elif spec.runtime == "tensorrt" and environment.tensorrt_missing:
            skipped.append(Skipped(spec.name, environment.tensorrt_missing))
        elif spec.runtime == "kornia" and environment.kornia_missing:
            skipped.append(Skipped(spec.name, environment.kornia_missing))
        elif spec.runtime == "lightglue" and environment.lightglue_missing:
            skipped.append(Skipped(spec.name, environment.lightglue_missing))
        elif spec.runtime == "onnxruntime":
            providers = environment.onnxruntime_providers
            if providers is None:
                skipped.append(Skipped(spec.name, "onnxruntime is not installed (pip install onnxruntime, or "
                                                  "onnxruntime-gpu for CUDA)"))
                continue
            choice = onnxruntime_provider
            if choice == "auto":
                choice = "cuda" if environment.cuda else "cpu"
                if choice == "cuda" and _ORT["cuda"] not in providers:
                    planned.append(PlannedRow(spec, "cpu", "cpu", f"{spec.name} runs on the CPU: this onnxruntime "
                                                                  f"has no {_ORT['cuda']} (onnxruntime-gpu has)"))
                    continue
            if choice != "cpu" and (not environment.cuda or _ORT[choice] not in providers):
                reason = (f"the device is {device}" if not environment.cuda
                          else f"this onnxruntime has no {_ORT[choice]} (it has {', '.join(providers)})")
                skipped.append(Skipped(spec.name, f"onnxruntime's {choice} provider was asked for, but {reason}"))
                continue
            planned.append(PlannedRow(spec, device if choice != "cpu" else "cpu", choice))
        else:
            planned.append(PlannedRow(spec, device))
    return planned, skipped
