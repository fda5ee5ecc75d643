"""Benchmarks: host-to-host latency, GPU memory and message-building time of every engine, beside kornia's ALIKED
in the same process. The logic of ``aliked-ros bench``, without ROS.

Convention:
    - A *group* is one model × K × image set; a *row* is one engine or reference measured in a group. Rows of a group
      see the same frames, in the same order, in the same process, so the ratios between them are taken in one run.
    - Latency is host to host: an RGB uint8 ``(H, W, 3)`` frame in host memory in, features in host memory out
      (``Extractor.extract`` for engines; for kornia the upload, ``float() / 255``, the network and the copy of its
      outputs to numpy), timed with ``time.perf_counter`` around that one call. Frames are cycled. Grayscale frames
      (KITTI) are made RGB once, before timing, for every row alike.
    - Statistics are over the timed frames after warm-up: median, mean and p95 (numpy's linear interpolation), in ms.
      A ratio is a reference's median over the row's median: above 1, the row is faster.
    - GPU memory, per row: the process's memory as the driver reports it (NVML, through nvidia-ml-py's ``pynvml``)
      at the end of the row, with its growth over the row; and ``torch.cuda.max_memory_allocated`` since the row's
      start, for rows whose memory torch allocates (torch engines, kornia). None where not measured.
    - The message time is the median time to build one Keypoints message from the row's last Features, with the
      message class the caller gives (rclpy's where it imports, else rosbags').
    - Nothing in a report is written by hand: every number comes from a :class:`Measurement`.
"""

from __future__ import annotations

import contextlib
import datetime
import gc
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from aliked_ros import __version__, outputs
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features

Log = Callable[[str], None]

GPU_WARMUP, GPU_REPEATS = 20, 200
CPU_WARMUP, CPU_REPEATS = 2, 10  # a CPU frame takes 0.1 to 1 s: a CPU run stays in minutes
MIB = float(1 << 20)
REPORT_TITLE = "## aliked-ros bench"
JSON_TOOL = "aliked-ros bench"


def _is_bench_json(path) -> bool:
    import json

    try:
        return json.loads(open(path, encoding="utf-8").read()).get("tool") == JSON_TOOL
    except (OSError, ValueError, AttributeError):
        return False


REPORT_OUTPUT = outputs.OutputKind("a report written by aliked-ros bench", outputs.text_starting_with(REPORT_TITLE))
JSON_OUTPUT = outputs.OutputKind("a JSON file written by aliked-ros bench", _is_bench_json)


# --- statistics ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LatencyStats:
    """Median, mean and p95 of per-frame latencies, in milliseconds, over ``frames`` timed frames."""

    median_ms: float
    mean_ms: float
    p95_ms: float
    frames: int


def latency_stats(seconds: Sequence[float]) -> LatencyStats:
    """Statistics of per-frame times given in seconds; ValueError for none."""
    if len(seconds) == 0:
        raise ValueError("no timed frames")
    values = np.asarray(seconds, dtype=np.float64) * 1e3
    median, p95 = np.percentile(values, [50, 95])
    return LatencyStats(float(median), float(values.mean()), float(p95), len(values))


def median_ms(seconds: Sequence[float]) -> float:
    return float(np.median(np.asarray(seconds, dtype=np.float64))) * 1e3


# --- what a row is ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RowSpec:
    """One engine or reference, named as on the command line (``torch-graph-fp16``, ``kornia-eager``)."""

    name: str
    kind: str  # "engine" or "reference"
    runtime: str  # torch, onnxruntime, tensorrt or kornia
    precision: str = "fp32"
    cuda_graph: bool = False
    compile_mode: str | None = None  # kornia: None (eager), "default" or "reduce-overhead"
    label: str = ""  # the table's name for it
    small_conv: str = "torch"  # the torch engine's kernel for the few-channel full-resolution layers

    @property
    def needs_cuda(self) -> bool:
        return self.cuda_graph or self.runtime == "tensorrt" or self.compile_mode is not None

    @property
    def min_warmup(self) -> int:
        """Calls that are warm-up whatever --warmup says: kornia compiles on its first call, and torch.compile's CUDA
        graphs record on a later one; the torch engine's graph path captures (and compiles) inside its first call."""
        if self.runtime == "kornia":
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
    RowSpec("torch-compiled-graph-direct-fp16", "engine", "torch", "fp16", cuda_graph=True, compile_mode="default",
            label="torch compiled + CUDA graph + direct convs fp16", small_conv="triton"),
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
)}
REFERENCE_ALIASES = {"kornia": list(REFERENCE_SPECS), "none": []}
DEFAULT_REFERENCES = "kornia"


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
    """``kornia`` (all three), ``kornia-eager,kornia-graphs``, or ``none``."""
    return _parse_names(text, REFERENCE_SPECS, REFERENCE_ALIASES, "--reference", "reference")


# --- what this machine has ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Environment:
    """What the rows need, probed once: the device, and each runtime (None where present, else why not)."""

    device: str  # "cpu" or "cuda:N"
    onnxruntime_providers: tuple[str, ...] | None  # None: onnxruntime does not import
    tensorrt_missing: str | None
    kornia_missing: str | None

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


def probe_environment(device: str) -> Environment:
    """The Environment of ``device`` ('auto', 'cpu', 'cuda', 'cuda:N'); AlikedError for a device that is not here."""
    import importlib.util

    from aliked_ros.engines.torch_engine import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda" and resolved.index is None:
        resolved = type(resolved)("cuda", 0)  # name the card: NVML and the report need an index
    try:
        import onnxruntime

        providers = tuple(onnxruntime.get_available_providers())
    except ImportError:
        providers = None
    if importlib.util.find_spec("tensorrt") is None:
        tensorrt_missing = "TensorRT's Python package is not installed (pip install tensorrt)"
    elif not any(_module_exists(name) for name in ("cuda.bindings.runtime", "cuda.cudart")):
        tensorrt_missing = "cuda-python is not installed (pip install cuda-python)"
    else:
        tensorrt_missing = None
    kornia_missing = None if importlib.util.find_spec("kornia") else "kornia is not installed (pip install kornia)"
    return Environment(str(resolved), providers, tensorrt_missing, kornia_missing)


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # the parent package is absent
        return False


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
            what = "the torch.compile references run" if spec.runtime == "kornia" else f"{spec.name} runs"
            skipped.append(Skipped(spec.name, f"{what} on CUDA only, and the device is {device}"))
        elif spec.runtime == "torch" and spec.precision == "fp16" and not environment.cuda:
            skipped.append(Skipped(spec.name, "float16 is a GPU setting: PyTorch emulates it slowly on the CPU"))
        elif spec.runtime == "tensorrt" and environment.tensorrt_missing:
            skipped.append(Skipped(spec.name, environment.tensorrt_missing))
        elif spec.runtime == "kornia" and environment.kornia_missing:
            skipped.append(Skipped(spec.name, environment.kornia_missing))
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


# --- images -------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageSet:
    """Frames of one size, RGB uint8 (H, W, 3), contiguous and writeable (torch.from_numpy takes them as they are)."""

    name: str
    frames: tuple[np.ndarray, ...]
    source: str

    @property
    def height(self) -> int:
        return self.frames[0].shape[0]

    @property
    def width(self) -> int:
        return self.frames[0].shape[1]

    def describe(self) -> str:
        return f"{self.name} {self.width}x{self.height} ({len(self.frames)} frames)"


def image_set(name: str, images: Sequence[tuple[str, np.ndarray]], source: str) -> ImageSet:
    """An ImageSet of (name, image) pairs, RGB or grayscale uint8; AlikedError unless all share one size."""
    from aliked_ros.imaging import as_rgb

    if not images:
        raise AlikedError(f"The image set {name} ({source}) holds no image.")
    frames = [np.array(as_rgb(image), copy=True) for _, image in images]  # RGB once, before any timing
    sizes: dict[tuple[int, int], list[str]] = {}
    for (image_name, _), frame in zip(images, frames):
        sizes.setdefault(frame.shape[:2], []).append(image_name)
    if len(sizes) > 1:
        listed = "; ".join(f"{w}x{h}: {', '.join(names[:3])}{' ...' if len(names) > 3 else ''}"
                           for (h, w), names in sizes.items())
        raise AlikedError(f"The images of {source} have {len(sizes)} sizes ({listed}); a benchmark set needs one "
                          "size: put each size in its own directory.")
    return ImageSet(name, tuple(frames), source)


def directory_image_set(directory: str | os.PathLike) -> ImageSet:
    from aliked_ros.imaging import list_images, read_image

    path = Path(directory)
    if not path.is_dir():
        raise AlikedError(f"--images {path}: not a directory (each --images DIR is one image set).")
    return image_set(path.name or str(path), [(p.name, read_image(p)) for p in list_images([path])], str(path))


def default_image_sets() -> list[ImageSet]:
    """The seed's sets, TUM 640×480 and KITTI 1241×376 from ../shared/data, else scikit-image's samples."""
    from aliked_ros.imaging import read_image
    from aliked_ros.sample_data import dataset_frames, registry_frames

    sets = []
    for name in ("tum", "kitti"):
        paths = dataset_frames(name)
        if paths:
            sets.append(image_set(name, [(p.name, read_image(p)) for p in paths], str(paths[0].parent)))
    if not sets:  # no shared data beside the checkout: scikit-image's two 512×512 samples
        sets.append(image_set("scikit-image", registry_frames(), "scikit-image's sample images"))
    return sets


# --- measurements -------------------------------------------------------------------------------------------------

@dataclass
class ProfiledOperation:
    name: str  # a GPU kernel (or copy) on CUDA, a torch operator on the CPU
    microseconds_per_frame: float
    calls_per_frame: float


@dataclass
class Profile:
    """Where one row's frames spend their time, from torch.profiler over frames run after the timed ones."""

    frames: int
    clock: str  # what was summed: "GPU kernel time" or "CPU operator self time"
    total_us_per_frame: float
    calls_per_frame: float
    top: list[ProfiledOperation]


@dataclass
class Measurement:
    """Everything measured for one row of one group; ``error`` is set (and the rest mostly None) if it failed."""

    model: str
    top_k: int
    image_set: str
    width: int
    height: int
    name: str  # the row spec's name
    label: str
    kind: str  # "engine" or "reference"
    runtime: str
    precision: str
    device: str
    description: str = ""
    warmup: int = 0
    repeats: int = 0
    latency: LatencyStats | None = None
    times_ms: list[float] = field(default_factory=list)
    keypoints_mean: float | None = None
    gpu_process_mib: float | None = None  # NVML, at the end of the row
    gpu_process_growth_mib: float | None = None  # NVML, end of the row minus its start
    torch_peak_allocated_mib: float | None = None  # since the row's start: construction, capture, warm-up, timing
    torch_timed_peak_allocated_mib: float | None = None  # over the timed frames alone: the steady state
    message_build_ms: float | None = None
    setup_s: float | None = None  # construction (export or engine build included where it happened)
    warmup_s: float | None = None  # the warm-up calls (torch.compile's compilation happens here)
    profile: Profile | None = None  # with --profile, for rows that torch runs
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def group(self) -> tuple[str, int, str]:
        return self.model, self.top_k, self.image_set


class MessageBuilder:
    """Builds Keypoints messages of one class (rclpy's or rosbags') with a fixed header, for timing."""

    def __init__(self, message_class, header, label: str):
        self.message_class, self.header, self.label = message_class, header, label

    def build(self, features: Features, model: str):
        from aliked_ros.messages import build_keypoints_message

        return build_keypoints_message(self.message_class, self.header, features, model)


def rosbags_message_builder() -> MessageBuilder:
    from aliked_ros import bags
    from aliked_ros.messages import KEYPOINTS_MSGTYPE

    return MessageBuilder(bags.message_class(KEYPOINTS_MSGTYPE), bags.make_header(0, "camera"),
                          "rosbags (aliked_ros/msg/Keypoints dataclass)")


def time_message_build(builder: MessageBuilder, features: Features, model: str, repeats: int,
                       clock=time.perf_counter) -> float:
    """Median milliseconds to build one message from ``features``."""
    builder.build(features, model)  # the first build imports and caches what it needs
    times = []
    for _ in range(max(1, repeats)):
        start = clock()
        builder.build(features, model)
        times.append(clock() - start)
    return median_ms(times)


def time_calls(call: Callable[[np.ndarray], object], frames: Sequence[np.ndarray], warmup: int, repeats: int,
               summarize: Callable[[object], object] = lambda result: result,
               clock=time.perf_counter) -> tuple[list[float], list[object], object]:
    """``warmup`` untimed calls, then ``repeats`` timed ones, cycling through frames: (seconds, summaries, last).

    Only the call is inside the clock. Each result is reduced by ``summarize`` after its clock stops and then
    dropped, except the last one, as a node drops a frame's features once it has published them. Keeping every result
    would hand each frame fresh memory, and time its page faults (0.5 ms for a 1 MB copy on the development machine),
    which a node in steady state does not pay.
    """
    for index in range(warmup):
        call(frames[index % len(frames)])
    seconds, summaries, result = [], [], None
    for index in range(warmup, warmup + repeats):
        frame = frames[index % len(frames)]
        result = None  # the previous frame's result is released before this frame, not during it
        start = clock()
        result = call(frame)
        seconds.append(clock() - start)
        summaries.append(summarize(result))
    return seconds, summaries, result


# --- GPU memory ---------------------------------------------------------------------------------------------------

class GpuMemoryProbe:
    """This process's memory on one GPU as the driver reports it, through NVML (nvidia-ml-py's ``pynvml``).

    ``missing`` says why a reading is None: pynvml not installed, the card not found, the process not listed (a
    PID namespace that NVML does not see through), or the driver not reporting per-process memory.
    """

    def __init__(self, device_index: int):
        self.missing: str | None = None
        self.driver_version: str | None = None
        self._pynvml = self._handle = None
        try:
            import pynvml
        except ImportError:
            self.missing = "pynvml is not installed (pip install nvidia-ml-py)"
            return
        try:
            pynvml.nvmlInit()
            self.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())
            self._handle = _nvml_handle(pynvml, device_index)
            self._pynvml = pynvml
        except pynvml.NVMLError as error:
            self.missing = f"NVML failed: {error}"

    def process_mib(self) -> float | None:
        if self._pynvml is None:
            return None
        try:
            processes = self._pynvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except self._pynvml.NVMLError as error:
            self.missing = f"NVML could not list processes: {error}"
            return None
        for process in processes:
            if process.pid == os.getpid():
                used = process.usedGpuMemory
                if used is None:  # NVML_VALUE_NOT_AVAILABLE, e.g. under some virtualisation
                    self.missing = "the driver does not report per-process memory here"
                    return None
                return used / MIB
        self.missing = f"NVML does not list this process (PID {os.getpid()}; a container's PID namespace?)"
        return None

    def close(self) -> None:
        if self._pynvml is not None:
            with contextlib.suppress(Exception):
                self._pynvml.nvmlShutdown()
            self._pynvml = None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _nvml_handle(pynvml, device_index: int):
    """NVML's handle of torch's card ``device_index``: by UUID, which CUDA_VISIBLE_DEVICES does not renumber."""
    import torch

    properties = torch.cuda.get_device_properties(device_index)
    uuid = getattr(properties, "uuid", None)
    if uuid is not None:
        with contextlib.suppress(pynvml.NVMLError):
            return pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{uuid}")
    return pynvml.nvmlDeviceGetHandleByIndex(device_index)


# --- the rows' runners --------------------------------------------------------------------------------------------

class KorniaReference:
    """kornia's ALIKED with the same pretrained weights and K, host to host: uint8 numpy → tensor on the device →
    ``float() / 255`` → network → outputs to numpy. Eager, or ``torch.compile``'d (``compile_mode`` 'default' or
    'reduce-overhead', the latter with CUDA graphs). Top-k mode: ``detection_threshold=-1``.

    The uint8 → float conversion is inside the compiled module, so torch.compile may fuse it (the reference's best).
    kornia keeps strict local maxima only, so it may return fewer than K keypoints (see test_parity_kornia).
    """

    def __init__(self, model: str, top_k: int, device: str, compile_mode: str | None = None,
                 weights: str | os.PathLike | None = None):
        import torch
        from kornia.feature import ALIKED

        from aliked_ros.model.weights import resolve_weights

        aliked = ALIKED(model, max_num_keypoints=top_k, detection_threshold=-1).eval()
        state = torch.load(resolve_weights(model, weights), map_location="cpu", weights_only=True)
        missing, unexpected = aliked.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"dkd.hw_grid"}:  # kornia's only extra entry is a constant buffer
            raise AlikedError(f"kornia's {model} does not take the weights' layout (missing {missing}, unexpected "
                              f"{unexpected}); use a kornia version whose ALIKED matches (0.8.2 or later).")
        self.device = torch.device(device)
        module = uint8_kornia_module(aliked).to(self.device)
        self._forward = module if compile_mode is None else torch.compile(module, mode=compile_mode)
        self._mark_step = compile_mode == "reduce-overhead"
        self._torch = torch

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            image = torch.from_numpy(rgb).to(self.device)
            if self._mark_step:  # a new iteration: the CUDA graphs may reuse the last outputs' memory
                torch.compiler.cudagraph_mark_step_begin()
            keypoints, scores, descriptors = self._forward(image)
            return keypoints.cpu().numpy(), scores.cpu().numpy(), descriptors.cpu().numpy()


def uint8_kornia_module(aliked):
    """kornia's ALIKED behind a (H, W, 3) uint8 input on the device, returning one image's three tensors."""
    import torch

    class Uint8Kornia(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, image):  # (H, W, 3) uint8 on the device
            result = self.network(image.permute(2, 0, 1).unsqueeze(0).float() / 255)[0]
            return result.keypoints, result.keypoint_scores, result.descriptors

    return Uint8Kornia(aliked)


@dataclass
class Runner:
    """A row ready to time: ``call(rgb)`` → result; ``count`` and ``features`` read a result after timing."""

    call: Callable[[np.ndarray], object]
    count: Callable[[object], int]
    features: Callable[[object], Features | None]
    device: str
    description: str
    torch_memory: bool  # whether torch's allocator holds its device memory
    close: Callable[[], None] = lambda: None


def open_runner(row: PlannedRow, model: str, top_k: int, images: ImageSet, *, cache_dir=None, weights=None,
                log: Log = print) -> Runner:
    spec = row.spec
    if spec.runtime == "kornia":
        reference = KorniaReference(model, top_k, row.device, spec.compile_mode, weights)
        mode = {None: "eager", "default": "torch.compile", "reduce-overhead": "torch.compile reduce-overhead"}
        return Runner(reference, lambda result: len(result[1]), lambda result: None, row.device,
                      f"kornia ALIKED, {mode[spec.compile_mode]}, {model}, fp32, {row.device}, top-k {top_k}",
                      torch_memory=row.device.startswith("cuda"))
    from aliked_ros.engines import create_extractor

    if spec.runtime == "torch":
        extractor = create_extractor("torch", model=model, top_k=top_k, device=row.device,
                                     fp16=spec.precision == "fp16", cuda_graph=spec.cuda_graph,
                                     compile=spec.compile_mode is not None, small_conv=spec.small_conv,
                                     weights=weights)
    elif spec.runtime == "onnxruntime":
        from aliked_ros.engines.cache import cached_onnx

        path = cached_onnx(model, images.height, images.width, top_k, spec.precision, directory=cache_dir,
                           weights=weights, log=log)
        extractor = create_extractor("onnxruntime", onnx_path=path, providers=row.provider)
    elif spec.runtime == "tensorrt":
        from aliked_ros.engines.cache import cached_tensorrt_plan

        path = cached_tensorrt_plan(model, images.height, images.width, top_k, spec.precision, directory=cache_dir,
                                    weights=weights, log=log)
        extractor = create_extractor("tensorrt", engine_path=path, log=log)
    else:  # pragma: no cover - the specs above name only these runtimes
        raise ValueError(spec.runtime)
    return Runner(extractor.extract, len, lambda features: features, extractor.device, extractor.describe(),
                  torch_memory=spec.runtime == "torch" and row.device.startswith("cuda"), close=extractor.close)


# --- the run ------------------------------------------------------------------------------------------------------

@dataclass
class BenchConfig:
    models: list[str]
    top_ks: list[int]
    image_sets: list[ImageSet]
    engines: list[RowSpec]
    references: list[RowSpec]
    device: str = "auto"
    warmup: int | None = None  # None: GPU_WARMUP on CUDA rows, CPU_WARMUP on CPU rows
    repeats: int | None = None  # likewise
    onnxruntime_provider: str = "auto"
    cache_dir: str | os.PathLike | None = None  # exported ONNX files and TensorRT plans
    command: str = ""  # the command line, for the report
    profile_frames: int = 0  # frames profiled per row after the timed ones (0: none)


@dataclass
class BenchResult:
    machine: dict
    config: dict
    measurements: list[Measurement]
    skipped: list[Skipped]
    notes: list[str]
    message_class: str
    interrupted: bool = False


def row_counts(row: PlannedRow, config: BenchConfig) -> tuple[int, int]:
    """(warm-up, timed frames) of a row: the configured ones, else the defaults of where it runs."""
    gpu = row.device.startswith("cuda")
    warmup = config.warmup if config.warmup is not None else GPU_WARMUP if gpu else CPU_WARMUP
    repeats = config.repeats if config.repeats is not None else GPU_REPEATS if gpu else CPU_REPEATS
    return max(warmup, row.spec.min_warmup), repeats


def run_benchmark(config: BenchConfig, message_builder: MessageBuilder | None = None,
                  log: Log | None = None) -> BenchResult:
    """Measure every planned row of every group (see the module's Convention); Ctrl-C keeps what was measured."""
    import torch

    from aliked_ros.model.configs import get_model_config

    log = log or (lambda text: print(f"bench: {text}", file=sys.stderr, flush=True))
    for model in config.models:
        get_model_config(model)  # an unknown name fails here, before minutes of work
    if not config.top_ks or any(k < 1 for k in config.top_ks):
        raise AlikedError(f"--top-k needs positive numbers of keypoints, not {config.top_ks}.")
    if (config.warmup is not None and config.warmup < 0) or (config.repeats is not None and config.repeats < 1):
        raise AlikedError("--warmup must be 0 or more and --repeats 1 or more.")
    if config.profile_frames < 0:
        raise AlikedError(f"--profile takes a number of frames, 0 or more, not {config.profile_frames}.")
    environment = probe_environment(config.device)
    references, skipped = plan_rows(config.references, environment)
    engines, skipped_engines = plan_rows(config.engines, environment, config.onnxruntime_provider)
    skipped += skipped_engines
    for item in skipped:
        log(f"skipping {item.name}: {item.reason}")
    rows = references + engines  # references first, so each engine's progress line has its ratios
    if not rows:
        raise AlikedError("No engine or reference can run here: " + "; ".join(f"{s.name}: {s.reason}"
                                                                             for s in skipped))
    builder = message_builder or rosbags_message_builder()
    probe = None
    if environment.cuda:
        torch.backends.cudnn.benchmark = True  # as the torch engine sets it: every row gets tuned convolutions
        probe = GpuMemoryProbe(torch.device(environment.device).index)
        if probe.missing:
            log(f"GPU memory by NVML: n/a ({probe.missing})")
    machine = describe_machine(environment, probe)
    notes = [row.note for row in rows if row.note]
    groups = [(model, top_k, images) for model in config.models for top_k in config.top_ks
              for images in config.image_sets]
    total = len(groups) * len(rows)
    measurements: list[Measurement] = []
    interrupted = False
    try:
        for model, top_k, images in groups:
            for row in rows:
                prefix = f"[{len(measurements) + 1}/{total}] {model} K {top_k} {images.name} " \
                         f"{images.width}x{images.height} | {row.spec.name}"
                measurement = measure_row(row, model, top_k, images, config, builder, probe,
                                          lambda text, prefix=prefix: log(f"{prefix}: {text}"))
                measurements.append(measurement)
                log(f"{prefix}: {progress_summary(measurement, measurements)}")
    except KeyboardInterrupt:
        interrupted = True
        log(f"interrupted: reporting the {len(measurements)} of {total} rows measured")
    finally:
        if probe is not None:
            if probe.missing and not any(m.gpu_process_mib is not None for m in measurements):
                notes.append(f"GPU memory by NVML: n/a ({probe.missing}).")
            probe.close()
    config_record = {key: getattr(config, key) for key in ("models", "top_ks", "device", "warmup", "repeats",
                                                            "onnxruntime_provider", "command", "profile_frames")}
    config_record["cache_dir"] = None if config.cache_dir is None else str(config.cache_dir)
    config_record["engines"] = [spec.name for spec in config.engines]
    config_record["references"] = [spec.name for spec in config.references]
    config_record["image_sets"] = [{"name": s.name, "width": s.width, "height": s.height, "frames": len(s.frames),
                                    "source": s.source} for s in config.image_sets]
    return BenchResult(machine, config_record, measurements, skipped, notes, builder.label, interrupted)


def measure_row(row: PlannedRow, model: str, top_k: int, images: ImageSet, config: BenchConfig,
                builder: MessageBuilder, probe: GpuMemoryProbe | None, log: Log) -> Measurement:
    import torch

    spec = row.spec
    warmup, repeats = row_counts(row, config)
    measurement = Measurement(model, top_k, images.name, images.width, images.height, spec.name, spec.label,
                              spec.kind, spec.runtime, spec.precision, row.device, warmup=warmup, repeats=repeats)
    if row.note:
        measurement.notes.append(row.note)
    cuda = row.device.startswith("cuda")
    _release_memory()
    start_mib = probe.process_mib() if probe is not None else None
    if cuda:
        torch.cuda.reset_peak_memory_stats(row.device)
    counters = _compile_counters() if spec.compile_mode else None
    runner = None
    try:
        start = time.perf_counter()
        runner = open_runner(row, model, top_k, images, cache_dir=config.cache_dir, log=log)
        measurement.setup_s = time.perf_counter() - start
        measurement.device, measurement.description = runner.device, runner.description
        start = time.perf_counter()
        for index in range(warmup):
            runner.call(images.frames[index % len(images.frames)])
        measurement.warmup_s = time.perf_counter() - start
        if cuda and runner.torch_memory:  # the peak of the whole row is kept in torch's counter until now
            whole_row_peak = torch.cuda.max_memory_allocated(row.device)
            torch.cuda.reset_peak_memory_stats(row.device)
        seconds, counts, last_result = time_calls(runner.call, images.frames, 0, repeats, summarize=runner.count)
        measurement.latency = latency_stats(seconds)
        measurement.times_ms = [value * 1e3 for value in seconds]
        measurement.keypoints_mean = float(np.mean(counts))
        if probe is not None:
            measurement.gpu_process_mib = probe.process_mib()
            if measurement.gpu_process_mib is not None and start_mib is not None:
                measurement.gpu_process_growth_mib = measurement.gpu_process_mib - start_mib
        if cuda and runner.torch_memory:
            timed_peak = torch.cuda.max_memory_allocated(row.device)
            measurement.torch_peak_allocated_mib = max(whole_row_peak, timed_peak) / MIB
            measurement.torch_timed_peak_allocated_mib = timed_peak / MIB
        if config.profile_frames:  # after the timing, so that the profiler's overhead is in no timed frame
            if spec.runtime in ("torch", "kornia"):
                measurement.profile = profile_calls(runner.call, images.frames, config.profile_frames, cuda)
            else:
                measurement.notes.append(f"not profiled: {spec.runtime} runs outside torch (use its own profiler)")
        features = runner.features(last_result)
        if features is not None:
            measurement.message_build_ms = time_message_build(builder, features, model, max(repeats, 10))
        if counters is not None:
            measurement.notes += _compile_notes(counters)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as error:  # a row that cannot run (export refused, compile failed) must not lose the others
        measurement.error = f"{type(error).__name__}: {str(error).strip().splitlines()[0][:300]}" if str(error) \
            else type(error).__name__
        log(f"failed: {measurement.error}")
    finally:
        if runner is not None:
            with contextlib.suppress(Exception):
                runner.close()
        del runner
        if spec.compile_mode:
            import torch._dynamo

            torch._dynamo.reset()  # the next compiled row compiles its own shapes, statically, and frees its graphs
        _release_memory()
    return measurement


# --- profile ------------------------------------------------------------------------------------------------------

PROFILE_TOP = 12


def profile_calls(call: Callable[[np.ndarray], object], frames: Sequence[np.ndarray], count: int, cuda: bool,
                  top: int = PROFILE_TOP) -> Profile:
    """``count`` calls under torch.profiler, frames cycled: GPU kernel time on CUDA, operator self time on the CPU."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as profiler:
        for index in range(count):
            call(frames[index % len(frames)])
        if cuda:
            torch.cuda.synchronize()
    return summarize_profile(profiler.key_averages(), count, cuda, top)


def summarize_profile(events, frames: int, cuda: bool, top: int = PROFILE_TOP) -> Profile:
    """Per-frame totals and the ``top`` largest entries of torch.profiler's ``key_averages()``.

    On CUDA the entries are what ran on the GPU (kernels, copies, memsets, also inside replayed CUDA graphs), timed
    by the GPU; on the CPU they are torch operators with their self time, so nested operators are not counted twice.
    """
    operations = []
    for event in events:
        on_gpu = getattr(event.device_type, "name", str(event.device_type)).upper().endswith("CUDA")
        if on_gpu != cuda:
            continue
        if cuda:
            micros = getattr(event, "device_time_total", None) or getattr(event, "cuda_time_total", 0) or 0
        else:
            micros = event.self_cpu_time_total
        if micros > 0:
            operations.append(ProfiledOperation(event.key, micros / frames, event.count / frames))
    operations.sort(key=lambda operation: operation.microseconds_per_frame, reverse=True)
    return Profile(frames=frames, clock="GPU kernel time" if cuda else "CPU operator self time",
                   total_us_per_frame=sum(o.microseconds_per_frame for o in operations),
                   calls_per_frame=sum(o.calls_per_frame for o in operations), top=operations[:top])


def profile_table(measurement: Measurement) -> list[str]:
    """The report's lines for one row's profile."""
    profile = measurement.profile
    where = f"{measurement.label}, {measurement.model} K {measurement.top_k} {measurement.image_set}"
    lines = ["", f"Profile of {where}: {profile.clock}, {profile.total_us_per_frame:.1f} µs per frame in "
                 f"{profile.calls_per_frame:.0f} entries per frame ({profile.frames} frames after the timed ones; "
                 f"the {len(profile.top)} largest):", ""]
    rows = [["operation", "µs per frame", "calls per frame", "share"]]
    for operation in profile.top:
        name = operation.name.replace("|", "/")
        name = name if len(name) <= 100 else name[:97] + "..."
        share = operation.microseconds_per_frame / profile.total_us_per_frame if profile.total_us_per_frame else 0
        rows.append([f"`{name}`", f"{operation.microseconds_per_frame:.1f}", f"{operation.calls_per_frame:.1f}",
                     f"{share:.0%}"])
    return lines + [markdown_table(rows)]


def _release_memory() -> None:
    """Free what the last row left, so the next row's memory readings start from the same floor."""
    import torch

    gc.collect()
    if torch.cuda.is_initialized():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _compile_counters():
    """torch._dynamo's counters, cleared, to read the graph breaks and CUDA-graph skips of one compiled row."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:  # pragma: no cover - a private module that may move
        return None
    counters.clear()
    return counters


def _compile_notes(counters) -> list[str]:
    if counters is None:
        return []
    notes = []
    breaks = sum(counters.get("graph_break", {}).values())
    if breaks:
        notes.append(f"torch.compile: {breaks} graph break(s)")
    skips = counters.get("inductor", {}).get("cudagraph_skips", 0)
    if skips:
        notes.append(f"torch.compile: CUDA graphs skipped {skips} time(s)")
    return notes


def progress_summary(measurement: Measurement, measured: Sequence[Measurement]) -> str:
    if measurement.error:
        return f"failed ({measurement.error})"
    latency = measurement.latency
    text = (f"median {latency.median_ms:.3f} ms (mean {latency.mean_ms:.3f}, p95 {latency.p95_ms:.3f}) on "
            f"{measurement.device}")
    for label, ratio in reference_ratios(measurement, measured):
        if ratio is not None and measurement.kind == "engine":
            text += f", {ratio:.2f}x vs {label}"
    return text


def reference_ratios(measurement: Measurement, measured: Sequence[Measurement]) -> list[tuple[str, float | None]]:
    """(reference label, reference median / this row's median) for each reference row of the same group."""
    ratios = []
    for reference in measured:
        if reference.kind != "reference" or reference.group != measurement.group:
            continue
        if reference.latency is None or measurement.latency is None:
            ratios.append((reference.label, None))
        else:
            ratios.append((reference.label, reference.latency.median_ms / measurement.latency.median_ms))
    return ratios


# --- the machine, for the report's header -------------------------------------------------------------------------

def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_machine(environment: Environment, probe: GpuMemoryProbe | None) -> dict:
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    machine = {
        "device": environment.device,
        "gpu": torch.cuda.get_device_name(environment.device) if environment.cuda else None,
        "cpu": f"{cpu_name()} ({cores} cores available, torch uses {torch.get_num_threads()} threads)",
        "driver": probe.driver_version if probe is not None else None,
        "cuda": torch.version.cuda if environment.cuda else None,
        "cudnn": torch.backends.cudnn.version() if environment.cuda else None,
        "python": platform.python_version(),
        "aliked_ros": __version__,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    for module in ("kornia", "onnxruntime", "tensorrt"):
        if _module_exists(module):
            with contextlib.suppress(Exception):  # a broken install should not stop the benchmark's header
                machine[module] = __import__(module).__version__
    return machine


# --- the report ---------------------------------------------------------------------------------------------------

def _ms(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if value < 1 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def _mib(value: float | None, growth: float | None = None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}" + (f" ({growth:+.0f})" if growth is not None else "")


def _peaks(row: float | None, timed: float | None) -> str:
    return "n/a" if row is None else f"{row:.0f} / {timed:.0f}" if timed is not None else f"{row:.0f}"


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    header, *body = rows
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def group_table(group: Sequence[Measurement], reference_labels: Sequence[str], gpu: bool) -> str:
    """One group's markdown table: its rows, with a ratio column per reference and GPU columns on a GPU run."""
    header = ["row", "device", "median ms", "mean ms", "p95 ms", *[f"vs {label}" for label in reference_labels]]
    if gpu:
        header += ["GPU MiB (NVML, process)", "peak alloc MiB (torch): row / timed"]
    header += ["keypoints", "message ms"]
    rows = [header]
    for measurement in group:
        row = [measurement.label, measurement.device]
        if measurement.error or measurement.latency is None:
            row += ["failed", "—", "—", *["—" for _ in reference_labels]]
        else:
            latency = measurement.latency
            ratios = dict(reference_ratios(measurement, group))
            row += [_ms(latency.median_ms), _ms(latency.mean_ms), _ms(latency.p95_ms),
                    *[_ratio(ratios.get(label)) for label in reference_labels]]
        if gpu:
            row += [_mib(measurement.gpu_process_mib, measurement.gpu_process_growth_mib),
                    _peaks(measurement.torch_peak_allocated_mib, measurement.torch_timed_peak_allocated_mib)]
        row += ["n/a" if measurement.keypoints_mean is None else f"{measurement.keypoints_mean:.0f}",
                _ms(measurement.message_build_ms)]
        rows.append(row)
    return markdown_table(rows)


def format_report(result: BenchResult) -> str:
    """The markdown report: how it was measured, one table per model × K × image set, then the notes."""
    machine = result.machine
    gpu = machine.get("gpu") is not None
    config = result.config
    device = f"{machine['gpu']} ({machine['device']})" if gpu else f"{machine['cpu']}"
    software = ", ".join(f"{name} {machine[name]}" for name in ("aliked_ros", "torch", "kornia", "onnxruntime",
                                                                 "tensorrt") if machine.get(name))
    lines = [REPORT_TITLE, "",
             f"- Device: {device}" + (f"; CPU: {machine['cpu']}" if gpu else ""),
             ]
    if gpu:
        lines.append(f"- Driver: {machine.get('driver') or 'n/a (NVML not available)'}; CUDA {machine.get('cuda')} "
                     f"(torch), cuDNN {machine.get('cudnn')}")
    lines += [
        f"- Software: {software}, Python {machine['python']}",
        f"- Date: {machine['date']}",
        f"- Command: `{config.get('command') or 'aliked-ros bench'}`",
        f"- Latency: host to host per frame (uint8 RGB frame in host memory in, features in host memory out), "
        f"time.perf_counter around one call; {_counts_text(result)}; frames cycled. Median, mean and p95 in ms. "
        "Grayscale frames are made RGB before timing, for every row alike.",
        "- vs *reference*: the reference's median / the row's median, same group, same run (above 1: faster).",
    ]
    if gpu:
        lines.append("- GPU MiB (NVML, process): this process's GPU memory as the driver reports it at the end of the "
                     "row (in brackets: growth during the row; the CUDA context and what earlier rows keep, such as "
                     "library workspaces, are in the total). Peak alloc: torch.cuda.max_memory_allocated over the "
                     "whole row (construction, capture or compilation, warm-up, timing) / over the timed frames alone, "
                     "for rows whose memory torch allocates.")
    lines.append(f"- Message ms: median time to build one Keypoints message from the row's last features, "
                 f"message class {result.message_class}.")
    references = list(dict.fromkeys(m.label for m in result.measurements if m.kind == "reference"))
    groups: dict[tuple, list[Measurement]] = {}
    for measurement in result.measurements:
        groups.setdefault(measurement.group, []).append(measurement)
    sets = {entry["name"]: entry for entry in config.get("image_sets", [])}
    for (model, top_k, set_name), group in groups.items():
        first = group[0]
        frames = sets.get(set_name, {}).get("frames")
        title = f"### {model}, K {top_k}, {set_name} {first.width}×{first.height}"
        lines += ["", title + (f" ({frames} frames)" if frames else ""), "",
                  group_table(group, references, gpu)]
        for measurement in group:
            if measurement.profile is not None:
                lines += profile_table(measurement)
    notes = list(result.notes)
    notes += [f"Skipped {item.name}: {item.reason}." for item in result.skipped]
    row_notes: dict[str, list[str]] = {}  # a note of several rows is listed once, with the rows
    for measurement in result.measurements:
        where = f"{measurement.label}, {measurement.model} K {measurement.top_k} {measurement.image_set}"
        if measurement.error:
            notes.append(f"{where} failed: {measurement.error}")
        for note in measurement.notes:
            if note not in result.notes:  # the planning notes (e.g. a CPU fallback) are listed already
                row_notes.setdefault(note, []).append(where)
    notes += [f"{note} ({'; '.join(wheres)})" for note, wheres in row_notes.items()]
    if result.interrupted:
        notes.append("Interrupted: the tables hold the rows measured before Ctrl-C.")
    if notes:
        lines += ["", "Notes:", "", *[f"- {note}" for note in dict.fromkeys(notes)]]
    return "\n".join(lines) + "\n"


def _counts_text(result: BenchResult) -> str:
    pairs = sorted({(m.warmup, m.repeats) for m in result.measurements})
    if not pairs:
        return "no rows measured"
    return "; ".join(f"{warmup} warm-up then {repeats} timed frames" for warmup, repeats in pairs) + \
        (" (by row: see the JSON)" if len(pairs) > 1 else "")


def result_to_json(result: BenchResult) -> dict:
    """Every raw number of the run (per-frame times included), for BENCHMARKS.md and later analysis."""
    measurements = []
    for measurement in result.measurements:
        record = asdict(measurement)
        record["ratios"] = {label: ratio for label, ratio in reference_ratios(measurement, result.measurements)}
        measurements.append(record)
    return {"tool": JSON_TOOL, "machine": result.machine, "config": result.config, "message_class": result.message_class,
            "measurements": measurements, "skipped": [asdict(item) for item in result.skipped],
            "notes": result.notes, "interrupted": result.interrupted}
