"""Extractors named on the command line by a SPEC, ``ENGINE[:KEY=VALUE,...]`` (see :mod:`aliked_ros.tools.compare`):
parsed by the types and rules of :class:`~aliked_ros.config.ExtractorConfig`, and turned into one."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

from aliked_ros.config import CHECKS, ExtractorConfig, setting_types
from aliked_ros.dependencies import require_installed
from aliked_ros.engines import RUNTIME_MODULES
from aliked_ros.errors import AlikedError

_BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
# Per engine: the keys a spec may set (ExtractorConfig fields, or their short names), and what a bare value is.
SPEC_KEYS = {
    "torch": (("model", "top_k", "device", "precision", "weights", "cuda_graph", "compile", "score_threshold",
               "max_keypoints", "feature_reads", "compile_mode", "deform_reads",
               "dense_layers"), None),
    "onnxruntime": (("onnx_path", "providers", "device", "score_threshold"), "onnx_path"),
    "tensorrt": (("engine_path", "score_threshold"), "engine_path"),
}
SHORT_NAMES = {"weights": "weights_path", "providers": "onnxruntime_providers"}
FILE_KINDS = {"weights": "weights file", "onnx_path": "ONNX file", "engine_path": "TensorRT engine"}
REQUIRED_KEYS = {"onnxruntime": ("onnx_path",), "tensorrt": ("engine_path",)}
_SUFFIX_ENGINES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt"}


def _parse_value(key: str, text: str):
    """A spec's text value in the type of its ExtractorConfig field, checked by the field's rule (ValueError with
    what was expected)."""
    name = SHORT_NAMES.get(key, key)
    value = _typed(setting_types()[name], text)
    try:
        return CHECKS[name](value, key)
    except AlikedError as error:
        raise ValueError(str(error).rstrip(".")) from None


def _typed(kind: type, text: str):
    if kind is bool:
        if text.lower() not in _BOOLEANS:
            raise ValueError("expected true or false")
        return _BOOLEANS[text.lower()]
    if kind is int:
        try:
            return int(text)
        except ValueError:
            raise ValueError("expected an integer") from None
    if kind is float:
        try:
            return float(text)
        except ValueError:
            raise ValueError("expected a number") from None
    return text


@dataclass(frozen=True)
class ExtractorSpec:
    """An extractor named on the command line: the engine and the options its spec sets."""

    engine: str
    options: dict = field(default_factory=dict)
    text: str = ""


def parse_spec(text: str, flag: str = "spec") -> ExtractorSpec:
    """``ENGINE[:KEY=VALUE,...]`` (see the module docstring) → ExtractorSpec; AlikedError naming what is wrong."""
    def fail(problem: str) -> AlikedError:
        return AlikedError(f"{flag} {text!r}: {problem}. Write ENGINE[:KEY=VALUE,...], e.g. torch:precision=fp16 "
                           "or onnxruntime:onnx_path=model.onnx.")

    stripped = text.strip()
    if not stripped:
        raise fail("empty")
    head, colon, rest = stripped.partition(":")
    suffix = Path(stripped).suffix.lower()
    if head in SPEC_KEYS:
        engine, items_text = head, rest if colon else ""
    elif "=" not in stripped and suffix in _SUFFIX_ENGINES:  # a bare FILE.onnx or FILE.engine
        engine, items_text = _SUFFIX_ENGINES[suffix], stripped
    elif "=" in head:  # options alone: the torch engine
        engine, items_text = "torch", stripped
    else:
        raise fail(f"unknown engine {head!r} (engines: {', '.join(SPEC_KEYS)})")
    keys, bare_key = SPEC_KEYS[engine]
    options: dict = {}
    items = [item.strip() for item in items_text.split(",")] if items_text.strip() else []
    for position, item in enumerate(items):
        if not item:
            raise fail("an empty option (two commas in a row?)")
        key, equals, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not equals:
            if position == 0 and bare_key is not None:
                key, value = bare_key, item
            else:
                raise fail(f"{item!r} is not KEY=VALUE")
        if key not in keys:
            raise fail(f"unknown option {key!r} for the {engine} engine (options: {', '.join(keys)})")
        if key in options:
            raise fail(f"{key} is given twice")
        if not value:
            raise fail(f"{key} has no value")
        try:
            options[key] = _parse_value(key, value)
        except ValueError as error:
            raise fail(f"{key}={value} is not valid ({error})") from None
    missing = [key for key in REQUIRED_KEYS.get(engine, ()) if key not in options]
    if missing:
        raise fail(f"the {engine} engine needs {', '.join(missing)}")
    return ExtractorSpec(engine, options, text)


def spec_paths(spec: ExtractorSpec) -> list[str]:
    """The files an extractor spec reads (weights, ONNX file, engine)."""
    return [spec.options[key] for key in ("weights", "onnx_path", "engine_path") if key in spec.options]


def check_spec_ready(spec: ExtractorSpec, flag: str = "spec") -> None:
    """AlikedError (one sentence) where ``spec`` cannot run here: a file it names is missing, or its engine's runtime
    is not installed. Nothing is imported or opened, so both sides are checked in milliseconds before either loads."""
    for key, kind in FILE_KINDS.items():
        if key not in spec.options:
            continue
        path = Path(spec.options[key])
        path = path.expanduser() if key == "weights" else path  # as the weights loader reads it
        if not path.exists():
            raise AlikedError(f"{flag} {spec.text!r}: the {kind} {path} does not exist.")
        if path.is_dir():
            raise AlikedError(f"{flag} {spec.text!r}: the {kind} {path} is a directory; give the file itself.")
    for module in RUNTIME_MODULES[spec.engine]:
        require_installed(module, f"{flag} {spec.text!r}: the {spec.engine} engine")


def fixed_model_and_top_k(spec: ExtractorSpec) -> tuple[str, int] | None:
    """What an exported file was made for, read without opening a session; None for torch."""
    if spec.engine == "onnxruntime":
        from aliked_ros.engines.onnxruntime_engine import read_session_metadata

        metadata = read_session_metadata(spec.options["onnx_path"])
        return metadata.model, metadata.top_k
    if spec.engine == "tensorrt":
        from aliked_ros.export.engine_info import read_sidecar

        metadata = read_sidecar(spec.options["engine_path"]).onnx
        return metadata.model, metadata.top_k
    return None


def spec_config(spec: ExtractorSpec, args: argparse.Namespace, other: ExtractorSpec) -> ExtractorConfig:
    """``spec`` as an ExtractorConfig, its gaps filled as the module docstring says."""
    settings = {SHORT_NAMES.get(key, key): value for key, value in spec.options.items()}
    if spec.engine == "torch":
        inherited = fixed_model_and_top_k(other) if ("model" not in settings or "top_k" not in settings) else None
        settings.setdefault("model", args.model or (inherited[0] if inherited else None))
        settings.setdefault("top_k", args.top_k if args.top_k is not None else inherited[1] if inherited else None)
        settings.setdefault("device", args.device)
        settings.setdefault("weights_path", args.weights)
    return ExtractorConfig(engine=spec.engine).replace(**settings)
