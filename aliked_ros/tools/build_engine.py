"""`aliked-ros build-engine`: an aliked-ros ONNX file → a TensorRT plan and its JSON sidecar."""

from __future__ import annotations

import argparse
import sys

from aliked_ros import outputs
from aliked_ros.export.engine_info import ENGINE_OUTPUT, SIDECAR_OUTPUT, sidecar_path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "build-engine", help="build a TensorRT engine from an exported ONNX file",
        description="Builds a strongly typed TensorRT plan (TensorRT 10.x or 11.x; the precision is the ONNX "
                    "file's) and writes FILE.engine.json beside it with what it was built from and for.")
    parser.add_argument("onnx", help="an ONNX file written by `aliked-ros export-onnx`")
    parser.add_argument("--output", "-o", required=True, help="the .engine file to write")
    parser.add_argument("--workspace", type=int, default=None, metavar="MiB", help="builder workspace limit")
    parser.add_argument("--opt-level", type=int, default=3, choices=range(6), metavar="0-5",
                        help="builder optimisation level (default 3)")
    parser.add_argument("--timing-cache", default=None, metavar="FILE",
                        help="read and update this timing cache (faster rebuilds)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an engine (and its sidecar) that build-engine wrote (never other files)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from aliked_ros.export.tensorrt_build import build_engine

    # The plan and its sidecar are checked before TensorRT loads (README, "Outputs and failures").
    inputs = (args.onnx, args.timing_cache)
    output = outputs.check_output(args.output, ENGINE_OUTPUT, flag="--output", overwrite=args.overwrite,
                                  inputs=inputs)
    outputs.check_output(sidecar_path(output), SIDECAR_OUTPUT, flag="--output", overwrite=args.overwrite,
                         inputs=inputs)
    if args.timing_cache:  # read and rewritten: it must be neither the ONNX file nor the plan
        outputs.check_not_an_input(args.timing_cache, (args.onnx, output, sidecar_path(output)), "--timing-cache")
    build_engine(args.onnx, output, workspace_mib=args.workspace, optimization_level=args.opt_level,
                 timing_cache=args.timing_cache, log=log)
    return 0


def log(text: str) -> None:
    """The build's progress on stderr as it happens: the command shows it whatever logging is configured."""
    print(text, file=sys.stderr, flush=True)
