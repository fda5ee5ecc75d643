"""One image size and pixel layout's extraction captured as a CUDA graph (the torch engine's fast path): the
upload of the camera's uint8 frame from pinned host memory, the network's forward, and the download of its outputs
into pinned host memory, replayed with one synchronisation per frame."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from aliked_ros.features import Features
from aliked_ros.model.aliked import pixels_to_network_input

GRAPH_WARMUP_RUNS = 3  # eager runs of a frame before its CUDA graph is captured
THREADED_COPY_FROM_BYTES = 512 * 1024  # between the two sizes measured (copied_rows)


def shared_tensor(pixels: np.ndarray) -> torch.Tensor:
    """A CPU tensor on the pixels' own memory (no copy), read-only arrays too (a message's buffer): torch warns once
    that it could write to those; nothing here writes to them."""
    if pixels.flags.writeable:
        return torch.from_numpy(pixels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(pixels)


def copied_rows(host_view: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` rows of a pinned output, copied out before the next replay overwrites them. A large one
    (aliked-n16rot's 2000 descriptors, 1 MB) by torch's intra-op threads: 0.910 → 0.847 ms a KITTI frame host to host
    on an H100; a small one (aliked-t16's 1000, 256 KB) by numpy, cheaper than waking the threads (0.565 against
    0.608 ms a TUM frame). BENCHMARKS.md, twelfth session."""
    rows = host_view[:count]
    if rows.nbytes < THREADED_COPY_FROM_BYTES:
        return rows.copy()
    return torch.from_numpy(rows).clone().numpy()


def features_above(host_views: tuple[np.ndarray, ...], score_threshold: float, height: int, width: int) -> Features:
    """A replay's features scoring above ``score_threshold``: its rows are sorted by score, so a prefix."""
    keypoints, scores, descriptors = host_views
    valid = int(np.count_nonzero(scores > score_threshold))
    return Features(copied_rows(keypoints, valid), copied_rows(scores, valid), copied_rows(descriptors, valid),
                    height, width)


class CapturedExtraction:
    """One image size and pixel layout's extraction captured as a CUDA graph, with its pinned host buffers (see
    TorchExtractor): the host buffer has the camera's shape, grey (H, W) or colour (H, W, 3)."""

    def __init__(self, network_forward, device: torch.device, dtype: torch.dtype, shape: tuple[int, ...],
                 channel_order: str, top_k: int, upload: bool = True, final: bool = True):
        # upload=False: the frame is put on the device by the caller (a JPEG decoded there), not copied from the host.
        # final=False: a stand-in (the eager graph) until the compiled forward of this size is ready.
        self.final = final
        self.host_image = torch.empty(shape, dtype=torch.uint8).pin_memory()
        self.device_image = torch.empty(shape, dtype=torch.uint8, device=device)
        self.network_forward, self.dtype, self.top_k = network_forward, dtype, top_k
        self.channel_order, self.upload = channel_order, upload
        self.stream = torch.cuda.Stream(device)
        self.host_image.numpy()[...] = 128
        self.device_image.fill_(128)
        with torch.inference_mode(), torch.cuda.stream(self.stream):
            # Kernel selection (cudnn.benchmark) and lazy initialisation, outside the graph.
            for _ in range(GRAPH_WARMUP_RUNS):
                outputs = self._frame()
            self.host_outputs = tuple(torch.empty(o.shape, dtype=o.dtype).pin_memory() for o in outputs)
            self.stream.synchronize()
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=self.stream):
                outputs = self._frame()
                for host, output in zip(self.host_outputs, outputs):
                    host.copy_(output, non_blocking=True)
        self.stream.synchronize()
        self.host_views = tuple(host.numpy() for host in self.host_outputs)

    def _frame(self):
        if self.upload:
            self.device_image.copy_(self.host_image, non_blocking=True)
        network_input = pixels_to_network_input(self.device_image, self.channel_order, self.dtype)
        return tuple(output.float() for output in self.network_forward(network_input, self.top_k))

    def __call__(self, pixels: np.ndarray):
        # torch's copy runs on its intra-op threads: on the H100 machine's host a TUM frame took 13 µs against
        # numpy's one-thread 52 µs, and the whole frame 0.51 against 0.66 ms (BENCHMARKS.md).
        self.host_image.copy_(shared_tensor(pixels))
        with torch.cuda.stream(self.stream):  # replay() launches on the current stream: make it ours
            self.graph.replay()
        self.stream.synchronize()
        return self.host_views

    def from_device(self, image: torch.Tensor):
        """Replay on a frame already on the device (made on the current stream): copied into the graph's input on
        the graph's stream, after the current stream's work."""
        self.stream.wait_stream(torch.cuda.current_stream(image.device))
        with torch.cuda.stream(self.stream):
            self.device_image.copy_(image)
            self.graph.replay()
        self.stream.synchronize()
        return self.host_views
