"""`aliked-ros export-onnx`: one ALIKED graph for a fixed image size and K, checked against PyTorch."""

from __future__ import annotations

import argparse
import sys
import time

from aliked_ros import outputs
from aliked_ros.dependencies import require
from aliked_ros.export.metadata import DEFORM_MODES, INPUT_FORMATS, ONNX_OUTPUT
from aliked_ros.config import ExtractorConfig
from aliked_ros.model.configs import MODEL_CONFIGS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-onnx", help="export ALIKED to ONNX (uint8 image in, fixed H, W and K)",
        description="Writes an ONNX graph whose input is `image` uint8 (H, W, 3) RGB and whose outputs are "
                    "`keypoints` float32 (K, 2) pixels, `scores` float32 (K,) and `descriptors` float32 (K, D). "
                    "The graph is checked (onnx.checker, shape inference) and compared with PyTorch through "
                    "onnxruntime on a real frame before it is written; a failed check writes nothing.")
    default_model = ExtractorConfig().model
    parser.add_argument("--model", default=default_model,
                        help=f"ALIKED variant: {', '.join(MODEL_CONFIGS)} (default {default_model})")
    parser.add_argument("--height", type=int, required=True, help="image height in pixels (fixed in the graph)")
    parser.add_argument("--width", type=int, required=True, help="image width in pixels (fixed in the graph)")
    parser.add_argument("--top-k", type=int, required=True,
                        help="keypoints per image, K (fixed in the graph; at most 3840, TensorRT's TopK limit)")
    parser.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                        help="arithmetic inside the graph (default fp32; input stays uint8, outputs float32)")
    parser.add_argument("--input-format", choices=INPUT_FORMATS, default="rgb",
                        help="the graph's input, the camera's layout: rgb or bgr (H, W, 3), or gray (H, W), made three "
                             "channels inside the graph, so a robot uploads its camera's bytes as they are (default "
                             "rgb)")
    parser.add_argument("--deform", choices=DEFORM_MODES, default=DEFORM_MODES[0],
                        help="deformable convolutions as ONNX DeformConv nodes (default; TensorRT >= 10.1, "
                             "recent onnxruntime) or as plain gathers and matrix products")
    parser.add_argument("--weights", default=None, help="a .pth file instead of the searched pretrained weights")
    parser.add_argument("--parity-image", default=None,
                        help="image for the comparison with PyTorch (default: a shared TUM/KITTI frame or a "
                             "scikit-image sample, resized to H x W)")
    parser.add_argument("--output", "-o", required=True, help="the .onnx file to write")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an ONNX file that export-onnx wrote (never other files)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # The output is checked before the network loads (README, "Outputs and failures").
    output = outputs.check_output(args.output, ONNX_OUTPUT, flag="--output", overwrite=args.overwrite,
                                  inputs=(args.weights, args.parity_image))
    require("torch", "Export")
    from aliked_ros.export.onnx_export import export_onnx, validate_export_options

    validate_export_options(args.model, args.height, args.width, args.top_k, args.deform)

    start = time.perf_counter()

    def progress(stage: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f} s] {stage}", file=sys.stderr, flush=True)

    result = export_onnx(output, args.model, args.height, args.width, args.top_k, fp16=args.precision == "fp16",
                         deform=args.deform, weights=args.weights, parity_image=args.parity_image,
                         progress=progress, input_format=args.input_format)
    print(f"{result.path}: {result.metadata.describe()}")
    return 0
