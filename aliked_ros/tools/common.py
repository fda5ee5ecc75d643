"""Options that several subcommands share, declared once."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterable
from pathlib import Path

from aliked_ros import outputs, validation
from aliked_ros.outputs import OutputKind
from aliked_ros.model.configs import DEFAULT_MODEL, MODEL_CONFIGS


def add_model_options(parser: argparse.ArgumentParser, top_k_default: int = 1000) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"ALIKED variant: {', '.join(MODEL_CONFIGS)} (default {DEFAULT_MODEL})")
    parser.add_argument("--top-k", type=int, default=top_k_default,
                        help=f"keypoints per image, or -1 for threshold mode (default {top_k_default})")
    parser.add_argument("--score-threshold", type=float, default=0.0,
                        help="keep keypoints scoring above this; in threshold mode the detection threshold "
                             "(default 0: top-k keeps all K, threshold mode uses the map's mean)")
    parser.add_argument("--max-keypoints", type=int, default=20000,
                        help="threshold mode's cap on keypoints per image (default 20000)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default auto)")
    parser.add_argument("--fp16", action="store_true", help="run the network in float16")
    parser.add_argument("--weights", default=None, help="a .pth file instead of the searched pretrained weights")


def validate_model_options(args: argparse.Namespace) -> None:
    """The options of :func:`add_model_options`, by the rules the API and the node use, named as typed."""
    validation.model(args.model, "--model")
    validation.top_k(args.top_k, "--top-k")
    validation.score_threshold(args.score_threshold, "--score-threshold")
    validation.max_keypoints(args.max_keypoints, "--max-keypoints")
    validation.device(args.device, "--device")


def create_torch_extractor(args: argparse.Namespace):
    from aliked_ros.engines import create_extractor

    validate_model_options(args)
    return create_extractor(
        "torch", model=args.model, top_k=args.top_k, device=args.device, fp16=args.fp16,
        score_threshold=args.score_threshold, max_keypoints=args.max_keypoints, weights=args.weights,
    )


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
