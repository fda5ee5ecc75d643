"""One configuration of an extractor, :class:`ExtractorConfig`, with its defaults from ``config/aliked.yaml`` and its
validation in one place. The node's parameters, every command-line flag, the compare SPEC strings and the bench
rows are overrides of it; :func:`aliked_ros.engines.create_extractor` is the one factory that reads it.

Standard library and PyYAML only (core layer): nothing here imports an engine or a runtime.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aliked_ros import validation
from aliked_ros.errors import AlikedError, InvalidTypeError, InvalidValueError
from aliked_ros.resources import package_file
from aliked_ros.validation import KERNEL_CHOICES

__all__ = ["ENGINES", "PRECISIONS", "KERNEL_CHOICES", "INPUT_FORMATS", "STATIC_ENGINES", "ONNXRUNTIME_PROVIDERS",
           "DEFAULT_MAX_KEYPOINTS", "Log", "config_dir", "read_params_file", "yaml_defaults", "PARAMETER_OF", "CHECKS",
           "ExtractorConfig", "setting_types"]

ENGINES = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("auto", "fp32", "fp16")  # auto: fp16 where the network runs on a GPU, fp32 on the CPU
INPUT_FORMATS = ("auto", "rgb", "bgr", "gray")  # a static engine's input; auto: the camera's, from its first image
STATIC_ENGINES = ("tensorrt", "onnxruntime")  # fixed image size and K, from an exported file
ONNXRUNTIME_PROVIDERS = ("auto", "cpu", "cuda", "tensorrt")
DEFAULT_MAX_KEYPOINTS = 20000  # threshold mode's cap, as the original ALIKED's n_limit
Log = Callable[[str], None]


# --- ROS 2 parameter files (the defaults' source, and the node's --params-file) ----------------------------------


def config_dir() -> Path:
    """``config/``: in the checkout, beside a pip install or in a ROS 2 install."""
    return package_file("config", "aliked.yaml").parent


def read_params_file(path: str | os.PathLike, node_name: str = "aliked_node") -> dict:
    """The ``ros__parameters`` of a ROS 2 parameters file that apply to ``node_name`` (``/**`` first, then the
    node's own section), unvalidated."""
    import yaml

    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise AlikedError(f"The parameters file {path} could not be read ({error}).") from None
    if not isinstance(document, dict):
        raise AlikedError(f"{path} is not a ROS 2 parameters file (a mapping of node names to ros__parameters).")
    merged = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = document.get(key)
        if isinstance(section, dict):
            merged.update(section.get("ros__parameters") or {})
    return merged


@functools.cache
def yaml_defaults() -> Mapping[str, object]:
    """config/aliked.yaml, read once: the one source of every default."""
    return dict(read_params_file(config_dir() / "aliked.yaml"))


# ExtractorConfig field → the node parameter that holds its default (and its value in the node).
PARAMETER_OF = {"model": "model", "engine": "engine", "device": "device", "precision": "precision",
                "top_k": "top_k", "score_threshold": "score_threshold", "compile": "torch_compile",
                "weights_path": "weights_path", "onnx_path": "onnx_path", "engine_path": "engine_path",
                "cache_dir": "cache_dir", "image_height": "image_height", "image_width": "image_width",
                "input_format": "input_format"}


# --- the configuration -------------------------------------------------------------------------------------------


def _choice(choices: tuple[str, ...]) -> Callable:
    return lambda value, name: validation.one_of(value, choices, name)


def _path_text(value, name: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise InvalidTypeError(f"{name} must be a path, not {value!r}.")
    return value


def _size(value, name: str) -> int:
    value = validation.integer(value, name)
    if value < 0:
        raise InvalidValueError(f"{name} must be 0 (the first image's) or a number of pixels, not {value}.")
    return value


def _optional_flag(value, name: str) -> bool | None:
    return None if value is None else validation.flag(value, name)


CHECKS: dict[str, Callable] = {
    "model": validation.model, "engine": _choice(ENGINES), "device": validation.device,
    "precision": _choice(PRECISIONS), "top_k": validation.top_k, "score_threshold": validation.score_threshold,
    "max_keypoints": validation.max_keypoints, "compile": validation.flag, "cuda_graph": _optional_flag,
    "weights_path": _path_text, "onnx_path": _path_text, "engine_path": _path_text, "cache_dir": _path_text,
    "image_height": _size, "image_width": _size, "onnxruntime_providers": _choice(ONNXRUNTIME_PROVIDERS),
    "input_format": _choice(INPUT_FORMATS), "feature_reads": validation.kernel_choice,
    "background_compile": validation.flag, "compile_mode": validation.compile_mode,
    "deform_reads": validation.kernel_choice, "compile_in_subprocess": validation.flag,
    "dense_layers": validation.kernel_choice,
}


@dataclass(frozen=True)
class ExtractorConfig:
    """What an extractor is: its network, runtime, device, arithmetic, output size and files.

    Convention:
        - A field left at ``None`` takes its default from ``config/aliked.yaml`` (the node's parameters of the same
          meaning; ``compile`` is ``torch_compile`` there); ``max_keypoints``, ``cuda_graph``,
          ``onnxruntime_providers`` and ``feature_reads`` are not node parameters and default to 20000, "as the node
          runs", auto and auto (the torch engine's descriptor-head reads: its Triton kernel on the compiled CUDA
          fast path, gathers elsewhere; see :class:`~aliked_ros.engines.torch_engine.TorchExtractor`).
        - ``precision`` is the one vocabulary of arithmetic: ``"fp32"``, ``"fp16"``, or ``"auto"``: fp16 where the
          network runs on a GPU, fp32 on the CPU (where fp16 is emulated and slower). An explicit fp16 on the CPU runs
          as asked, for precision studies.
        - ``top_k`` > 0 keeps the K best keypoints, of which those scoring above ``score_threshold`` are returned;
          -1 is threshold mode (the torch engine only): every maximum above ``score_threshold`` (the map's mean where
          it is 0), at most ``max_keypoints``.
        - Paths are strings, "" for none: ``weights_path`` (else the searched official weights), ``onnx_path`` /
          ``engine_path`` (else the engine cache in ``cache_dir``, built for ``image_height`` × ``image_width``).
        - Every value is validated on construction (:mod:`aliked_ros.validation`): a wrong type is a TypeError, a
          value out of range a ValueError, both AlikedErrors.
        - :meth:`resolved` turns what is asked for into what runs here (``engine`` and ``precision`` "auto", the
          CUDA graph and torch.compile on CUDA), saying each decision through ``log``.
    """

    model: str | None = None
    engine: str | None = None
    device: str | None = None
    precision: str | None = None
    top_k: int | None = None
    score_threshold: float | None = None
    max_keypoints: int = DEFAULT_MAX_KEYPOINTS
    compile: bool | None = None
    cuda_graph: bool | None = None  # None: on CUDA in top-k mode, as the node runs the torch engine
    weights_path: str | None = None
    onnx_path: str | None = None
    engine_path: str | None = None
    cache_dir: str | None = None
    image_height: int | None = None
    image_width: int | None = None
    onnxruntime_providers: str = "auto"
    input_format: str | None = None  # a static engine's input layout: rgb, bgr, gray, or auto (the camera's)
    feature_reads: str = "auto"  # the torch engine's descriptor-head reads: auto, torch (gathers) or triton (kernel)
    # The torch engine's fast path: serve the uncompiled CUDA graph at once and compile on a worker thread, changing
    # to the compiled graph when it is ready (a first frame in seconds instead of after the compilation). Off unless
    # asked: a program that calls extract() gets the compiled graph's output from its first frame. The node's
    # parameter of that name (on in config/aliked.yaml) asks for it (processing.extractor_config).
    background_compile: bool = False
    # torch.compile's mode for the fast path: default, or max-autotune-no-cudagraphs (Inductor times Triton templates
    # against cuDNN/cuBLAS for each convolution and matrix product and keeps the fastest; minutes more to compile).
    compile_mode: str = "default"
    # The torch engine's deformable-convolution reads: auto (the Triton kernel on the compiled CUDA fast path, where it
    # pays; gathers elsewhere), torch (gathers) or triton (one kernel for the bilinear reads).
    deform_reads: str = "auto"
    # With background_compile: each size is compiled first in a child process (filling torch.compile's cache), then
    # here from that cache, so that the compilation holds the serving process's GIL for seconds, not its whole time.
    # An experiment until measured on a GPU (BENCHMARKS.md).
    compile_in_subprocess: bool = False
    # The torch engine's full-resolution layers (block 1, the finest level, the score head's convolutions, NMS): auto
    # (Triton kernels on the compiled CUDA fast path, where they pay; cuDNN and torch elsewhere), torch or triton.
    dense_layers: str = "auto"

    def __post_init__(self):
        defaults = yaml_defaults()
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if value is None and item.name in PARAMETER_OF:
                value = defaults[PARAMETER_OF[item.name]]
            object.__setattr__(self, item.name, CHECKS[item.name](value, item.name))
        if self.top_k == -1 and self.engine in STATIC_ENGINES:
            raise InvalidValueError(f"Threshold mode (top_k -1) is the torch engine's; the {self.engine} engine has "
                                    "a fixed K.")

    def replace(self, **overrides) -> ExtractorConfig:
        """A copy with ``overrides`` (None values ignored: "not given"), validated; unknown names are refused."""
        names = {item.name for item in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise InvalidValueError(f"Unknown extractor setting {unknown[0]!r}; known: {', '.join(sorted(names))}.")
        return dataclasses.replace(self, **{name: value for name, value in overrides.items() if value is not None})

    @classmethod
    def from_parameters(cls, values: Mapping[str, object], **overrides) -> ExtractorConfig:
        """The extractor of the node's (validated) parameters, with ``overrides``."""
        fields = {name: values[parameter] for name, parameter in PARAMETER_OF.items() if parameter in values}
        return cls(**fields).replace(**overrides)

    # --- what runs here ---

    def resolved_engine(self) -> str:
        """What ``engine="auto"`` means here: TensorRT where it is installed (or a plan is given), else onnxruntime
        where an ONNX file is given, else torch. Decided without importing any runtime."""
        if self.engine != "auto":
            return self.engine
        if self.engine_path or (importlib.util.find_spec("tensorrt") and self.device != "cpu"):
            return "tensorrt"
        return "onnxruntime" if self.onnx_path else "torch"

    def needs_image_size(self) -> bool:
        """Whether the engine must know the image size before it is made (a static engine from the cache)."""
        engine = self.resolved_engine()
        explicit = self.engine_path if engine == "tensorrt" else self.onnx_path
        return engine in STATIC_ENGINES and not explicit and not (self.image_height and self.image_width)

    def needs_first_image(self) -> bool:
        """Whether the engine is made from the first image: a static engine from the cache whose size, or whose input
        format (``auto``: the camera's layout), only the camera can tell."""
        engine = self.resolved_engine()
        explicit = self.engine_path if engine == "tensorrt" else self.onnx_path
        return self.needs_image_size() or (engine in STATIC_ENGINES and not explicit and self.input_format == "auto")

    def runs_on_gpu(self, engine: str) -> bool:
        """Whether ``engine`` runs the network on a GPU with these settings (imports only that engine's runtime)."""
        if engine == "tensorrt":
            return True
        if engine == "onnxruntime":
            if self.onnxruntime_providers == "auto" and self.device in ("auto", "cpu"):
                try:
                    import onnxruntime
                except ImportError:
                    return False
                return self.device == "auto" and onnxruntime.get_available_providers()[0] != "CPUExecutionProvider"
            return self.onnxruntime_providers in ("cuda", "tensorrt") or self.device.startswith("cuda")
        from aliked_ros.devices import resolve_device

        return resolve_device(self.device).type == "cuda"

    def resolved(self, log: Log | None = None) -> ExtractorConfig:
        """What runs here: the engine decided, ``precision="auto"`` made fp16 on a GPU and fp32 on the CPU, and for
        the torch engine the CUDA graph on CUDA in top-k mode unless asked otherwise, torch.compile only with the
        graph on CUDA with Triton. Each decision that changes what was asked for is said through ``log``."""
        log = log or (lambda text: None)
        engine = self.resolved_engine()
        on_gpu = self.runs_on_gpu(engine)
        precision = self.precision
        if precision == "auto":
            precision = "fp16" if on_gpu else "fp32"
        if engine != "torch":
            input_format = "rgb" if self.input_format == "auto" else self.input_format
            return dataclasses.replace(self, engine=engine, precision=precision, input_format=input_format)
        from aliked_ros.devices import has_triton

        cuda_graph = on_gpu and self.top_k > 0 and self.cuda_graph is not False
        compile = self.compile and cuda_graph
        if self.compile and self.cuda_graph is not False and on_gpu and self.top_k <= 0:
            log("threshold mode runs eagerly: no CUDA graph, no torch.compile")
        if compile and not has_triton():
            log("compile is on but this PyTorch has no Triton: the CUDA graph runs uncompiled (slower; see "
                "BENCHMARKS.md)")
            compile = False
        elif compile and self.background_compile:
            log("torch.compile in the background: each image size is served by the uncompiled CUDA graph until a "
                "worker thread has compiled it (tens of seconds on a desktop GPU, longer on a Jetson)")
        elif compile:
            log("torch.compile: the first frame of each image size compiles first (tens of seconds on a desktop "
                "GPU, longer on a Jetson)")
        return dataclasses.replace(self, engine=engine, precision=precision, cuda_graph=cuda_graph, compile=compile)

    def describe(self) -> str:
        # A given ONNX file or plan fixes model, K, size and precision itself: name the file, not settings it ignores.
        explicit = {"onnxruntime": self.onnx_path, "tensorrt": self.engine_path}.get(self.engine)
        if explicit:
            return f"{self.engine} engine from {explicit} (model, K, image size and precision are the file's)"
        mode = f"top_k {self.top_k}" if self.top_k > 0 else f"threshold mode (at most {self.max_keypoints})"
        return f"{self.engine} engine for {self.model} ({mode}, {self.precision})"


def setting_types() -> dict[str, type]:
    """Each setting's type as text parsers need it (compare's SPEC strings): bool, int, float or str."""
    kinds = {}
    for item in dataclasses.fields(ExtractorConfig):
        annotation = str(item.type)
        kinds[item.name] = (bool if "bool" in annotation else int if "int" in annotation
                            else float if "float" in annotation else str)
    return kinds
