"""Options that several subcommands share, declared once."""

from __future__ import annotations

import argparse
from pathlib import Path

from aliked_ros.errors import AlikedError
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


def create_torch_extractor(args: argparse.Namespace):
    from aliked_ros.engines import create_extractor

    return create_extractor(
        "torch", model=args.model, top_k=args.top_k, device=args.device, fp16=args.fp16,
        score_threshold=args.score_threshold, max_keypoints=args.max_keypoints, weights=args.weights,
    )


def output_path(text: str | None, flag: str) -> Path | None:
    """The file an option names for writing, or None when not given; AlikedError before any work if it cannot be."""
    if not text:
        return None
    path = Path(text)
    if path.is_dir() or not path.parent.is_dir():
        raise AlikedError(f"{flag} {path}: name a file in an existing directory.")
    return path
