"""The torch engine: the ALIKED network run directly by PyTorch, on the CPU or CUDA, in float32 or float16."""

from __future__ import annotations

import copy
import logging
import os

import numpy as np
import torch

from aliked_ros import validation
from aliked_ros.config import DEFAULT_MAX_KEYPOINTS
from aliked_ros.devices import has_triton, resolve_device
from aliked_ros.engines.background import DONE, FAILED, BackgroundBuilds
from aliked_ros.engines.base import Extractor
from aliked_ros.engines.compile_cache import use_persistent_compile_cache
from aliked_ros.engines.compile_child import compile_in_child
from aliked_ros.engines.cuda_graph import CapturedExtraction, features_above, shared_tensor
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.imaging import CHANNEL_ORDERS, as_rgb
from aliked_ros.model.aliked import load_aliked, pixels_to_network_input
from aliked_ros.model.configs import MIN_IMAGE_SIDE
from aliked_ros.model.feature_lookup import load_kernel

_logger = logging.getLogger(__name__)


def resolve_reads(reads: tuple[str, ...], kernels_pay: bool) -> tuple[str, ...]:
    """The feature reads, deformable reads and dense layers with "auto" decided: the Triton kernels where
    ``kernels_pay`` (the compiled CUDA fast path with Triton, where they were measured to pay), "torch" elsewhere."""
    return tuple(("triton" if kernels_pay else "torch") if choice == "auto" else choice for choice in reads)
def next_graph_step(graph: str, busy: bool, build: str | None) -> str:
    """What a frame does about its graph when the engine compiles in the background (TorchExtractor._captured).

    Args:
        graph: this size and layout's graph: "none", "stand-in" (the eager module's, until the compiled one) or
            "final".
        busy: whether the worker is compiling (or has builds queued).
        build: the state of this size's compilation (background.PENDING, DONE, FAILED, or None: never queued).

    Returns:
        "replay" the graph there is; "elsewhere": no graph may be made now, so replay another layout's graph of the
        size (converting on the host) or wait for the worker; "stand-in": capture the eager module's graph and queue
        the size's compilation; "compiled": capture the compiled forward; "keep": the stand-in stays for good (its
        compilation failed); "eager-final": capture the eager module's graph for good (failed, no stand-in yet).

    While the worker compiles, nothing but replays: no capture (CUDA forbids work on other threads that a capture
    could depend on) and no eager module call (torch's FX tracers patch ``nn.Module.__call__`` for every thread
    while they trace, so a module called meanwhile lands in the tracer).
    """
    if graph == "final":
        return "replay"
    if busy:
        return "replay" if graph == "stand-in" else "elsewhere"
    if build == DONE:
        return "compiled"
    if build == FAILED:
        return "keep" if graph == "stand-in" else "eager-final"
    return "stand-in"  # never queued (idle and pending cannot meet: idle means nothing queued or running)


class TorchExtractor(Extractor):
    """ALIKED in PyTorch eager mode.

    Convention (beyond :class:`Extractor`'s):
        - ``top_k > 0``: top-k mode, the K best maxima, of which those scoring above ``score_threshold`` are
          returned (0, the default, keeps all K). A K above an image's pixel count is clamped to it.
          ``top_k == -1``: threshold mode, the maxima above ``score_threshold`` (or above the map's mean when it is
          0), at most ``max_keypoints`` of them.
        - Every argument is checked by :mod:`aliked_ros.validation` (a wrong type is a TypeError, a value out of
          range a ValueError; both AlikedErrors).
        - ``precision="fp16"`` runs the network in float16 (CUDA; on the CPU it works but is slow); detection and
          descriptor sampling stay float32.
        - Images of any size at least 32×32 work; each size is computed as it comes.
        - ``cuda_graph`` (CUDA, top-k mode): the fast path. For each image size, the whole frame — the upload
          of the uint8 image from pinned host memory, conversion, network, detection, descriptors and the download
          of the outputs to pinned host memory — is captured once as a CUDA graph and replayed: no allocation, no
          kernel launch from Python and one synchronisation per frame.
        - ``compile`` (with ``cuda_graph``): the extraction is compiled by ``torch.compile`` (Inductor fuses the
          elementwise, pooling, upsampling and sampling work into Triton kernels) before it is captured; the first
          frame of each size then waits for the compilation (tens of seconds; see BENCHMARKS.md for what it gains).
          Needs Triton (desktop CUDA builds of PyTorch have it).
        - ``compile_mode``: torch.compile's mode, "default" or "max-autotune-no-cudagraphs" (Inductor times its
          Triton templates against cuDNN and cuBLAS for every convolution and matrix product; longer compilation).
        - ``background_compile`` (with ``compile``): each new image size is served at once by the uncompiled CUDA
          graph while a worker thread compiles it; the compiled graph takes over when ready (see ``_captured``).
          ``compile_in_subprocess`` (with it): a child process compiles each size first
          (:mod:`~aliked_ros.engines.compile_child`) and the worker then compiles from torch.compile's cache, holding
          the GIL, which the serving thread needs after each synchronisation, for seconds instead of the whole time.
        - ``deform_reads``: how the backbone's deformable convolutions (blocks 3 and 4) run. ``"triton"`` (CUDA with
          Triton): one Triton kernel per convolution, its offsets, bilinear reads, product, bias, shortcut and SELU
          together (:mod:`~aliked_ros.model.deform_kernel`); ``"torch"``: cuDNN's offsets, gathers and a matrix
          product; ``"auto"`` (the default): the kernels on the compiled fast path, where they took 29-35 kernels
          and 0.02 ms off a frame against the read kernel alone, which had taken 0.09-0.15 ms off the gathers
          (BENCHMARKS.md), the torch formulation elsewhere.
        - ``feature_reads``: how the descriptor head reads the feature pyramid. ``"triton"`` (CUDA with Triton):
          one Triton kernel (:mod:`~aliked_ros.model.sampling_kernel`); ``"torch"``: gathers, the formulation that
          runs everywhere (and that ONNX exports); ``"auto"`` (the default): the kernel on the compiled fast path,
          where it took 0.05 ms (aliked-t16) and 0.31 ms (aliked-n16rot) off a frame (BENCHMARKS.md), gathers
          elsewhere.
        - ``dense_layers``: the full-resolution layers (block 1's convolutions, the finest level, the score head's
          convolutions, NMS). ``"triton"`` (CUDA with Triton): the kernels of :mod:`~aliked_ros.model.dense_kernels`;
          ``"torch"``: cuDNN's convolutions and torch's pooling; ``"auto"`` (the default): the kernels on the
          compiled fast path, where they took 0.09 ms (aliked-t16) and 0.13 ms (aliked-n16rot) off a frame
          (BENCHMARKS.md), torch elsewhere.
    """

    engine = "torch"

    def __init__(self, model: str = "aliked-n16rot", top_k: int = 1000, *, device: str = "auto",
                 precision: str = "fp32", score_threshold: float = 0.0, max_keypoints: int = DEFAULT_MAX_KEYPOINTS,
                 weights: str | os.PathLike | None = None, allow_download: bool = True, cuda_graph: bool = False,
                 compile: bool = False, feature_reads: str = "auto", background_compile: bool = False,
                 compile_mode: str = "default", deform_reads: str = "auto", compile_in_subprocess: bool = False,
                 dense_layers: str = "auto"):
        model = validation.model(model)
        top_k = validation.top_k(top_k)
        score_threshold = validation.score_threshold(score_threshold)
        max_keypoints = validation.max_keypoints(max_keypoints)
        precision = validation.precision(precision)
        self.compile_mode = validation.compile_mode(compile_mode)
        feature_reads, deform_reads, dense_layers = (
            validation.kernel_choice(value, name) for name, value in (
                ("feature_reads", feature_reads), ("deform_reads", deform_reads), ("dense_layers", dense_layers)))
        for name, value in (("cuda_graph", cuda_graph), ("compile", compile), ("allow_download", allow_download),
                            ("background_compile", background_compile),
                            ("compile_in_subprocess", compile_in_subprocess)):
            validation.flag(value, name)
        self.torch_device = resolve_device(validation.device(device))
        if compile and cuda_graph and self.torch_device.type == "cuda" and not has_triton():
            raise AlikedError("compile=True needs Triton on CUDA (torch.compile's GPU code generator), which this "
                              "PyTorch lacks; run with compile=False (the CUDA graph alone).")
        fast_path = compile and cuda_graph and self.torch_device.type == "cuda" and top_k > 0
        if fast_path or "triton" in (feature_reads, deform_reads, dense_layers):
            # Before anything imports the compiler (the kernel below does): torch's cache_dir() writes its /tmp
            # default into TORCHINDUCTOR_CACHE_DIR when first asked, which would then pass for the user's choice.
            self.compile_cache = use_persistent_compile_cache()
        background = background_compile and fast_path
        # The kernels where they were measured to pay (BENCHMARKS.md): the compiled fast path. Compiling in the
        # background, the worker decides (importing a kernel brings the compiler stack, seconds the start should not
        # wait for).
        if not background:
            feature_reads, deform_reads, dense_layers = resolve_reads((feature_reads, deform_reads, dense_layers),
                                                                      fast_path and load_kernel().AVAILABLE)
        kernels = [name for name, reads in (("feature_reads", feature_reads), ("deform_reads", deform_reads),
                                            ("dense_layers", dense_layers)) if reads == "triton"]
        if kernels and (self.torch_device.type != "cuda" or not load_kernel().AVAILABLE):
            asked = " and ".join(f"{name}='triton'" for name in kernels)
            raise AlikedError(f"{asked} runs a Triton kernel on CUDA: it needs a CUDA device and Triton (with torch "
                              f">= 2.6); use {' and '.join(f'{name}=' + repr('torch') for name in kernels)} here.")
        self.dtype = torch.float16 if precision == "fp16" else torch.float32
        self.aliked = load_aliked(model, max(top_k, 1), weights, allow_download=allow_download)
        self.aliked.network.fold_batch_norm()  # inference only: one pass over the activations less per layer
        self.aliked.to(self.torch_device, self.dtype)
        self.model = model
        self.top_k = top_k
        self.score_threshold = score_threshold
        self.max_keypoints = max_keypoints
        self.device = str(self.torch_device)
        self.precision = precision
        self.descriptor_size = self.aliked.descriptor_size
        self.cuda_graph = cuda_graph and self.torch_device.type == "cuda" and top_k > 0
        self._graphs: dict[tuple[int, int, str], CapturedExtraction] = {}
        self._jpeg_decoder = None  # decided on first use (see decodes_jpeg)
        self.compiled = fast_path  # compile and self.cuda_graph
        if self.cuda_graph:
            # The tensor deformable convolution, in the warm-up runs too: it is capture-safe (torchvision's is not),
            # and the warm-up then meets every convolution shape and layout the capture will (cudnn.benchmark picks
            # its algorithms there, not while capturing), and compiled code has no branch on the capture state.
            self.aliked.network.set_deform_implementation("tensor")
        self.background_compile = background
        self.compile_in_subprocess = background and compile_in_subprocess
        self._builds: BackgroundBuilds | None = None
        if background:
            # The graphs serve this eager module at once; a copy of it (a few MB) with the fast path's settings is
            # compiled, one image size at a time, on a worker thread (see _captured).
            self._fast_module = copy.deepcopy(self.aliked)
            self._fast_module.rank_sort = True
            self._fast_reads = feature_reads, deform_reads, dense_layers
            # What a child process needs to make this engine (see compile_child).
            self._child_settings = dict(model=model, top_k=top_k, device=str(self.torch_device), precision=precision,
                                        weights=None if weights is None else str(weights),
                                        allow_download=allow_download, feature_reads=feature_reads,
                                        deform_reads=deform_reads, compile_mode=self.compile_mode,
                                        dense_layers=dense_layers)
            self._fast_forward = None  # torch.compile's, made by the worker's first build
            self._builds = BackgroundBuilds("aliked-compile", log=_logger.warning)
            self._waited_for_builds = False  # said once: a frame that waits for the worker
        elif self.compiled:
            self.aliked.rank_sort = True  # the final sort as two fused kernels instead of a radix sort's passes
        # The serving module's kernels: the torch formulation while the worker compiles (its own: _compile_size).
        self._use_kernels(self.aliked, ("torch",) * 3 if background else (feature_reads, deform_reads, dense_layers))
        # What the CUDA graphs capture: the top-k forward, compiled by torch.compile where asked (the module itself
        # stays eager).
        self._network_forward = (self._compile(self.aliked) if self.compiled and not background else self.aliked)
        if self.torch_device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # static shapes: pick the fastest convolution once per size

    def _use_kernels(self, module, choices: tuple[str, str, str]) -> None:
        """Set the resolved feature reads, deformable reads and dense layers ("torch" or "triton") on ``module``,
        the one whose graphs serve, and say them in this engine's attributes."""
        self.feature_reads, self.deform_reads, self.dense_layers = choices
        module.network.feature_reads = self.feature_reads
        module.network.set_dense_layers(self.dense_layers)
        if self.deform_reads == "triton":  # else the implementation chosen at construction stays
            module.network.set_deform_implementation("triton")

    def _compile(self, module: torch.nn.Module):
        mode = None if self.compile_mode == "default" else self.compile_mode
        return torch.compile(module.forward, dynamic=False, mode=mode)

    def describe(self) -> str:
        return (super().describe() + (", torch.compile" if self.compiled else "")
                + (f" {self.compile_mode}" if self.compiled and self.compile_mode != "default" else "")
                + (" (in the background)" if self.background_compile and not self.compile_in_subprocess else "")
                + (" (in the background, first in a child process)" if self.compile_in_subprocess else "")
                + (", CUDA graph" if self.cuda_graph else "")
                + (", feature-read kernel" if self.feature_reads == "triton" else "")
                + (", deformable-convolution kernels" if self.deform_reads == "triton" else "")
                + (", full-resolution kernels" if self.dense_layers == "triton" else ""))

    def device_memory(self) -> dict[str, float] | None:
        if self.torch_device.type != "cuda":
            return None
        mib = 1 << 20
        return {
            "gpu_memory_allocated_mib": torch.cuda.memory_allocated(self.torch_device) / mib,
            "gpu_memory_peak_allocated_mib": torch.cuda.max_memory_allocated(self.torch_device) / mib,
            "gpu_memory_reserved_mib": torch.cuda.memory_reserved(self.torch_device) / mib,
        }

    def _extract(self, rgb: np.ndarray) -> Features:
        return self._extract_pixels(rgb, "rgb")

    @property
    def decodes_jpeg(self) -> bool:
        """Whether JPEG bytes are decoded on this engine's device (nvJPEG, through torchvision, on CUDA)."""
        if self._jpeg_decoder is None:
            self._jpeg_decoder = False
            if self.torch_device.type == "cuda" and self.top_k > 0:
                try:
                    from torchvision.io import ImageReadMode, decode_jpeg
                except Exception:  # absent, or built for another torch (its operators fail to register)
                    return False
                self._jpeg_decoder = lambda data: decode_jpeg(data, mode=ImageReadMode.RGB, device=self.torch_device)
        return bool(self._jpeg_decoder)

    @torch.inference_mode()
    def extract_jpeg(self, data) -> Features:
        """Features of a JPEG (``sensor_msgs/CompressedImage`` data), decoded on the device by nvJPEG straight into
        the frame the CUDA graph reads: the host copies the compressed bytes only. Needs :attr:`decodes_jpeg`."""
        if not self.decodes_jpeg:
            raise AlikedError("This engine decodes JPEG on the host only (nvJPEG needs CUDA and torchvision).")
        encoded = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        try:
            image = self._jpeg_decoder(encoded).permute(1, 2, 0)  # (H, W, 3) RGB on the device
        except RuntimeError as error:
            raise AlikedError(f"A CompressedImage ({len(encoded)} bytes) is not a JPEG nvJPEG decodes "
                              f"({str(error).strip().splitlines()[0][:200]}).") from None
        height, width = image.shape[:2]
        if min(height, width) < MIN_IMAGE_SIDE:
            raise AlikedError(f"The image is {width}x{height} pixels; ALIKED needs at least {MIN_IMAGE_SIDE} "
                              "pixels on each side.")
        top_k = min(self.top_k, height * width)
        captured = self._captured((height, width, "device-rgb"), (height, width, 3), "rgb", top_k, upload=False)
        if captured is None:  # none may be made while the worker compiles: through the RGB graph of this size
            return self._extract_elsewhere(image.cpu().numpy(), "rgb", top_k)
        return features_above(captured.from_device(image), self.score_threshold, height, width)

    @torch.inference_mode()
    def _extract_pixels(self, pixels: np.ndarray, channel_order: str) -> Features:
        """The camera's pixels as they come: grey frames are uploaded as one channel and made three, and BGR is
        reordered, YUV 4:2:2 and Bayer frames converted, on the device (inside the CUDA graph on the fast path)."""
        if self.torch_device.type == "cpu" and channel_order not in CHANNEL_ORDERS:
            pixels, channel_order = as_rgb(pixels, channel_order), "rgb"  # the CPU is the host: OpenCV's is faster
        height, width = pixels.shape[:2]
        # A K above the pixel count of a small image asks for every maximum there is: clamp it (never an error).
        top_k = min(self.top_k, height * width)
        if self.cuda_graph:
            layout = "grey" if pixels.ndim == 2 and channel_order in CHANNEL_ORDERS else channel_order
            captured = self._captured((height, width, layout), pixels.shape, channel_order, top_k)
            if captured is None:  # none may be made while the worker compiles
                return self._extract_elsewhere(pixels, channel_order, top_k)
            return features_above(captured(pixels), self.score_threshold, height, width)
        host = shared_tensor(pixels)  # message buffers are read-only: shared, not copied
        image = host.to(self.torch_device, non_blocking=True)
        network_input = pixels_to_network_input(image, channel_order, self.dtype)
        if self.top_k > 0:
            keypoints, scores, descriptors = self.aliked(network_input, top_k)
            # One host sync. The slots without a maximum score 0 and sort last; score_threshold (0 unless given)
            # cuts the sorted rows the same way.
            valid = int((scores > self.score_threshold).sum())
            keypoints, scores, descriptors = keypoints[:valid], scores[:valid], descriptors[:valid]
        else:
            keypoints, scores, descriptors = self.aliked.detect_threshold(
            network_input, self.score_threshold, self.max_keypoints)
        return Features(
            keypoints.float().cpu().numpy(),
            scores.float().cpu().numpy(),
            descriptors.float().cpu().numpy(),
            height,
            width,
        )

    def _extract_elsewhere(self, pixels: np.ndarray, channel_order: str, top_k: int) -> Features:
        """A frame whose graph cannot be made while the worker compiles: made RGB on the host and replayed through
        this size's RGB graph (the warm-up makes one); without one, after the worker has finished."""
        height, width = pixels.shape[:2]
        rgb_graph = self._graphs.get((height, width, "rgb"))
        if rgb_graph is None:
            if not self._waited_for_builds:
                self._waited_for_builds = True
                _logger.warning("A %dx%d frame waits for the background compilation under way to end before its "
                                "graph is captured (warm up each image size in RGB to serve it meanwhile)",
                                width, height)
            self._builds.wait_idle()
            return self._extract_pixels(pixels, channel_order)
        return features_above(rgb_graph(as_rgb(pixels, channel_order)), self.score_threshold, height, width)

    def _captured(self, key: tuple[int, int, str], shape: tuple[int, ...], channel_order: str,
                  top_k: int, upload: bool = True) -> CapturedExtraction | None:
        """The CUDA graph of one image size and layout, captured on its first frame; None where the frame must run
        the eager module instead.

        Compiling in the background, a size's first frame queues its compilation on the worker and captures the
        eager module's graph to serve meanwhile; once compiled, a frame captures the compiled forward in its place
        (one compilation per size: every layout's network input has the same shape and strides). While the worker
        compiles nothing is captured and no module is called eagerly (:func:`next_graph_step` says why): a layout
        without a graph then returns None (see :meth:`_extract_elsewhere`).
        """
        captured = self._graphs.get(key)
        if captured is not None and captured.final:
            return captured

        def capture(forward, final: bool = True) -> CapturedExtraction:
            return CapturedExtraction(forward, self.torch_device, self.dtype, shape, channel_order, top_k,
                                      upload=upload, final=final)

        if self._builds is None:
            self._graphs[key] = capture(self._network_forward)
            return self._graphs[key]
        size = (key[0], key[1], top_k)
        # Only this thread submits builds: a worker found idle here stays idle until the next submit below.
        step = next_graph_step("none" if captured is None else "stand-in", self._builds.busy, self._builds.state(size))
        if step == "stand-in":
            captured = self._graphs[key] = capture(self.aliked, final=False)
            self._builds.submit(size, lambda: self._compile_size(*size))
        elif step == "compiled":
            # Other layouts' stand-ins of this size go (their graphs hold the eager module's activations); a frame
            # of theirs captures its compiled graph when it comes.
            for other in [other for other, graph in self._graphs.items() if other[:2] == key[:2] and not graph.final]:
                del self._graphs[other]
            captured = self._graphs[key] = capture(self._builds.result(size))
            _logger.info("The compiled graph of %s serves from now on", key)
        elif step in ("keep", "eager-final"):
            captured = self._graphs[key] = captured or capture(self.aliked)
            captured.final = True
        elif step == "elsewhere":
            return None
        return captured

    def _compile_size(self, height: int, width: int, top_k: int):
        """(The worker.) torch.compile's forward, compiled for one image size: one call on a network input made as
        the graphs make it (the same shape, strides and dtype for every layout: their captures meet no
        recompilation), on a stream of the worker's own. With ``compile_in_subprocess``, a child process compiles it
        first and this compilation reads the child's results from torch.compile's cache."""
        if self.compile_in_subprocess:
            compile_in_child(self._child_settings, height, width, top_k)
        with torch.cuda.device(self.torch_device):
            if self._fast_forward is None:
                self._use_kernels(self._fast_module, resolve_reads(self._fast_reads, load_kernel().AVAILABLE))
                self._fast_forward = self._compile(self._fast_module)
            stream = torch.cuda.Stream(self.torch_device)
            with torch.inference_mode(), torch.cuda.stream(stream):
                pixels = torch.full((height, width, 3), 128, dtype=torch.uint8, device=self.torch_device)
                self._fast_forward(pixels_to_network_input(pixels, "rgb", self.dtype), top_k)
            stream.synchronize()
        return self._fast_forward

    @property
    def compiling(self) -> bool:
        return self._builds is not None and self._builds.busy

    def wait_for_compilation(self, timeout: float | None = None) -> bool:
        """Block until the background compilations queued so far have ended (or ``timeout`` seconds); whether they
        have. The next frame of each size then captures its compiled graph. True at once where nothing compiles in
        the background."""
        if self._builds is None:
            return True
        return self._builds.wait_idle(timeout)

    def close(self) -> None:
        if self._builds is not None:
            self._builds.close()  # a compilation under way finishes on its daemon thread, unused
        super().close()

