"""PyTorch → ONNX export and the metadata that makes an exported file self-describing.

``metadata`` is plain Python (no torch, no onnx at import time), so that engines and the ROS node can read what a
file is without the export toolchain. ``onnx_export`` needs torch and onnx (``pip install 'aliked-ros[export]'``).
"""

from aliked_ros.export.metadata import (DEFORM_MODES, PRECISIONS, TENSORRT_TOPK_LIMIT, OnnxMetadata,
                                        read_onnx_metadata)

__all__ = ["DEFORM_MODES", "PRECISIONS", "TENSORRT_TOPK_LIMIT", "OnnxMetadata", "read_onnx_metadata"]
