"""Options that several subcommands share, declared once."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

from aliked_ros import config, outputs
from aliked_ros.config import ExtractorConfig
from aliked_ros.model.configs import MODEL_CONFIGS
from aliked_ros.outputs import OutputKind


def add_model_options(parser: argparse.ArgumentParser, engine_default: str | None = "torch") -> None:
    """The extractor's settings as flags: each one an override of :class:`~aliked_ros.config.ExtractorConfig`, whose
    defaults (config/aliked.yaml) apply where a flag is not given."""
    defaults = ExtractorConfig()
    parser.add_argument("--model", default=None,
                        help=f"ALIKED variant: {', '.join(MODEL_CONFIGS)} (default {defaults.model})")
    parser.add_argument("--engine", default=engine_default, choices=config.ENGINES,
                        help=f"runtime (default {engine_default or defaults.engine}; onnxruntime and tensorrt take "
                             "one image size, from --onnx-path/--engine-path or the engine cache)")
    parser.add_argument("--top-k", type=int, default=None,
                        help=f"keypoints per image, or -1 for threshold mode (default {defaults.top_k})")
    parser.add_argument("--score-threshold", type=float, default=None,
                        help="keep keypoints scoring above this; in threshold mode the detection threshold "
                             f"(default {defaults.score_threshold:g}: top-k keeps all K, threshold mode uses the map's "
                             "mean)")
    parser.add_argument("--max-keypoints", type=int, default=None,
                        help=f"threshold mode's cap on keypoints per image (default {defaults.max_keypoints})")
    parser.add_argument("--device", default=None, help=f"cpu, cuda, cuda:N or auto (default {defaults.device})")
    parser.add_argument("--precision", default=None, choices=config.PRECISIONS,
                        help=f"network arithmetic (default {defaults.precision}: fp16 on a GPU, fp32 on the CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch engine on CUDA: torch.compile before the CUDA graph (default "
                             f"{'on' if defaults.compile else 'off'}; the first frame of each size then compiles)")
    parser.add_argument("--weights", default=None, help="a .pth file instead of the searched pretrained weights")
    parser.add_argument("--onnx-path", default=None, help="the onnxruntime engine's ONNX file (from export-onnx)")
    parser.add_argument("--engine-path", default=None, help="the tensorrt engine's plan (from build-engine)")


MODEL_FLAGS = {"model": "--model", "engine": "--engine", "top_k": "--top-k", "score_threshold": "--score-threshold",
               "max_keypoints": "--max-keypoints", "device": "--device", "precision": "--precision",
               "compile": "--compile", "weights_path": "--weights", "onnx_path": "--onnx-path",
               "engine_path": "--engine-path"}


def config_from_args(args: argparse.Namespace, **overrides) -> ExtractorConfig:
    """The configuration that :func:`add_model_options`' flags (and ``overrides``) describe, its errors naming the
    flags as typed."""
    given = {name: getattr(args, "weights" if name == "weights_path" else name) for name in MODEL_FLAGS}
    values = {name: value for name, value in {**given, **overrides}.items() if value is not None}
    for name, value in values.items():  # the shared rules, with the flag's name in the sentence
        if name in MODEL_FLAGS and name in config.CHECKS:
            config.CHECKS[name](value, MODEL_FLAGS[name])
    return ExtractorConfig(**values)


def create_extractor_from_args(args: argparse.Namespace, log=None, **overrides):
    from aliked_ros.engines import create_extractor

    return create_extractor(config_from_args(args, **overrides), log=log)


def output_path(text: str | None, flag: str, kind: OutputKind, overwrite: bool,
                inputs: Iterable[str | os.PathLike | None] = ()) -> Path | None:
    """The file an option names for writing, checked before any work by the policy of :mod:`aliked_ros.outputs`;
    None when the option is not given."""
    if not text:
        return None
    return outputs.check_output(text, kind, flag=flag, overwrite=overwrite, inputs=inputs)


def add_overwrite_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help=f"replace {what} that an earlier run wrote (never other files)")
