"""``python test/kernel_cross_compile.py ARCH``: every Triton kernel of aliked_ros compiled for the NVIDIA GPU of
compute capability ARCH (87: Jetson AGX Orin; 90: H100) with Triton's own ptxas, no GPU needed; prints one JSON
line: the kernels compiled, and each one's configurations.

The kernels are not run: ``JITFunction.run`` is replaced by a compilation for ARCH of exactly what the launch asked
for (argument types, constexprs, warps), and the tensors it was given are zeroed, so that what follows reads defined
values. The launches are the network's own (its score map, features and descriptors), in float16 and float32 for each
model size, with every kernel chosen, plus top-k over a float16 map (on the CPU detection takes torch's top-k). Run
by test_kernels_compile_for_gpus.py in a subprocess: the replacement must not leak into other tests.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import triton
import triton.runtime.jit as triton_jit
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

LAUNCH_OPTIONS = {"num_warps", "num_stages", "num_ctas", "maxnreg"}


def compile_instead_of_running(target: GPUTarget, compiled: dict):
    def run(kernel, *args, grid, warmup, **kwargs):
        values = dict(zip(kernel.arg_names, args))
        values.update({name: value for name, value in kwargs.items() if name not in LAUNCH_OPTIONS})
        options = {name: value for name, value in kwargs.items() if name in LAUNCH_OPTIONS}
        signature, constexprs = {}, {}
        for parameter in kernel.params:
            value = values[parameter.name]
            if parameter.is_constexpr:
                signature[parameter.name], constexprs[parameter.name] = "constexpr", value
            else:
                signature[parameter.name] = triton_jit.mangle_type(value)
        configuration = json.dumps([signature, constexprs, options], sort_keys=True, default=str)
        if configuration not in compiled.setdefault(kernel.__name__, {}):
            start = time.perf_counter()
            triton.compile(ASTSource(kernel, signature, constexprs), target=target, options=options)
            compiled[kernel.__name__][configuration] = round(time.perf_counter() - start, 2)
        for value in values.values():
            if isinstance(value, torch.Tensor):
                value.zero_()

    return run


def main(arch: int) -> None:
    compiled: dict = {}
    triton_jit.JITFunction.run = compile_instead_of_running(GPUTarget("cuda", arch, 32), compiled)
    from aliked_ros.model import nms_kernels
    from aliked_ros.model.aliked import NMS_RADIUS, Aliked
    from aliked_ros.model.detection import detect_top_k

    with torch.inference_mode():
        for model in ("aliked-t16", "aliked-n16rot", "aliked-n32"):
            for dtype in (torch.float16, torch.float32):
                aliked = Aliked(model, top_k=100).eval()
                aliked.network.fold_batch_norm()
                aliked.network.feature_reads = "triton"
                aliked.network.set_dense_layers("triton")
                aliked.network.set_deform_implementation("triton")
                network = aliked.to(dtype).network
                score_map, pyramid = network.score_map_and_features(torch.rand(1, 3, 64, 96, dtype=dtype))
                pyramid.use_kernel = True  # on CUDA levels only, otherwise
                keypoints, _ = detect_top_k(score_map.float(), 100, NMS_RADIUS, True, nms_kernel=True)
                network.desc_head(pyramid, keypoints)
        nms_kernels.nms_top_k(torch.rand(64, 96, dtype=torch.float16), 2, 100)
    print(json.dumps({"arch": arch, "kernels": compiled}))


if __name__ == "__main__":
    main(int(sys.argv[1]))
