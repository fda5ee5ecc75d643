"""The node's parameters without ROS: names, types, ranges, descriptions, validation, and their defaults, which come
from ``config/aliked.yaml`` (the one source the node, the launch file and ``process-bag`` share)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from aliked_ros import config, validation
from aliked_ros.config import config_dir, read_params_file
from aliked_ros.errors import AlikedError, InvalidTypeError, InvalidValueError
from aliked_ros.model.configs import MODEL_CONFIGS

ENGINE_CHOICES = config.ENGINES


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    type: type  # bool, int, float or str
    description: str
    read_only: bool = True  # changing it needs a new engine or subscription: set at start-up only
    choices: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    # The shared rule of aliked_ros.validation for a parameter that the API and the command line also take.
    check: Callable | None = None

    def validate(self, value):
        """``value`` converted to this parameter's type, or InvalidTypeError / InvalidValueError with the reason."""
        if self.type is bool:
            return validation.flag(value, self.name)
        if self.type is int:
            value = validation.integer(value, self.name)
        if self.type is float:
            value = validation.number(value, self.name)
        if self.type is str and not isinstance(value, str):
            raise InvalidTypeError(f"{self.name} must be a string, not {value!r}.")
        if self.check is not None:
            value = self.check(value, self.name)
        elif self.choices and value not in self.choices:
            raise InvalidValueError(f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}.")
        if self.minimum is not None and value < self.minimum:
            raise InvalidValueError(f"{self.name} must be at least {self.minimum:g}, not {value}.")
        if self.maximum is not None and value > self.maximum:
            raise InvalidValueError(f"{self.name} must be at most {self.maximum:g}, not {value}.")
        return value


def _node_top_k(value, name: str) -> int:
    """The node's engines are static top-k engines: no threshold mode."""
    return validation.top_k(value, name, threshold_mode=False)


SPECS: tuple[ParameterSpec, ...] = (
    ParameterSpec("model", str, "ALIKED variant", choices=tuple(MODEL_CONFIGS), check=validation.model),
    ParameterSpec("engine", str, "runtime: auto, tensorrt, onnxruntime or torch", choices=ENGINE_CHOICES,
                  check=config.CHECKS["engine"]),
    ParameterSpec("device", str, "device of the torch and onnxruntime engines", choices=("auto", "cpu", "cuda"),
                  check=validation.device),
    ParameterSpec("precision", str, "network arithmetic: auto (fp16 on a GPU, fp32 on the CPU), fp16 or fp32",
                  choices=config.PRECISIONS, check=config.CHECKS["precision"]),
    ParameterSpec("torch_compile", bool, "torch engine on CUDA: torch.compile the extraction before its CUDA graph"),
    ParameterSpec("background_compile", bool, "with torch_compile: serve the uncompiled CUDA graph while a worker "
                  "thread compiles"),
    ParameterSpec("top_k", int, "keypoints per image (the engine's fixed K)", minimum=1, maximum=10000,
                  check=_node_top_k),
    ParameterSpec("score_threshold", float, "publish keypoints scoring above this", read_only=False, minimum=0.0,
                  maximum=validation.SCORE_THRESHOLD_MAX, check=validation.score_threshold),
    ParameterSpec("image_height", int, "image height the engine is built for; 0 = first image's", minimum=0,
                  maximum=16384),
    ParameterSpec("image_width", int, "image width the engine is built for; 0 = first image's", minimum=0,
                  maximum=16384),
    ParameterSpec("weights_path", str, "ALIKED .pth weights; empty = search"),
    ParameterSpec("onnx_path", str, "prebuilt ONNX file; empty = engine cache"),
    ParameterSpec("engine_path", str, "prebuilt TensorRT plan; empty = engine cache"),
    ParameterSpec("input_format", str, "a cached static engine's input: auto (the camera's), rgb, bgr or gray",
                  choices=config.INPUT_FORMATS, check=config.CHECKS["input_format"]),
    ParameterSpec("cache_dir", str, "engine cache directory; empty = default"),
    ParameterSpec("input_transport", str, "raw (sensor_msgs/Image) or compressed (CompressedImage)",
                  choices=("raw", "compressed")),
    ParameterSpec("qos_reliability", str, "image subscription reliability", choices=("best_effort", "reliable")),
    ParameterSpec("qos_depth", int, "image subscription queue depth", minimum=1, maximum=100),
    ParameterSpec("publish_debug_image", bool, "publish ~/debug_image with the keypoints drawn", read_only=False),
    ParameterSpec("debug_image_rate", float, "maximum rate of ~/debug_image (Hz)", read_only=False, minimum=0.1,
                  maximum=100.0),
    ParameterSpec("diagnostics_period", float, "seconds between /diagnostics updates", minimum=0.1, maximum=60.0),
    ParameterSpec("latency_window", int, "frames in the latency statistics window", minimum=2, maximum=10000),
    ParameterSpec("latency_budget_ms", float, "WARN above this end-to-end p95 latency (ms)", read_only=False,
                  minimum=0.1, maximum=100000.0),
    ParameterSpec("max_drop_ratio", float, "WARN above this ratio of dropped frames", read_only=False, minimum=0.0,
                  maximum=1.0),
)
SPECS_BY_NAME = {spec.name: spec for spec in SPECS}


def defaults() -> dict:
    """Every parameter's default, from config/aliked.yaml, validated; a missing or unknown entry is an error."""
    values = read_params_file(config_dir() / "aliked.yaml")
    missing = [spec.name for spec in SPECS if spec.name not in values]
    unknown = sorted(set(values) - set(SPECS_BY_NAME))
    if missing or unknown:
        raise AlikedError(f"config/aliked.yaml does not match the node's parameters: missing {missing}, "
                          f"unknown {unknown}.")
    return {spec.name: spec.validate(values[spec.name]) for spec in SPECS}


def resolve(overrides: dict | None = None, params_file: str | os.PathLike | None = None) -> dict:
    """Defaults, then a parameters file, then explicit overrides (None values ignored), all validated."""
    values = defaults()
    layers = [read_params_file(params_file) if params_file else {}, overrides or {}]
    for layer in layers:
        for name, value in layer.items():
            if value is None:
                continue
            if name not in SPECS_BY_NAME:
                raise AlikedError(f"Unknown parameter {name!r}; known: {', '.join(SPECS_BY_NAME)}.")
            values[name] = SPECS_BY_NAME[name].validate(value)
    return values
