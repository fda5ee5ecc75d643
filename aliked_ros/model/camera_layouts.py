"""Camera layouts converted on the device, inside the CUDA graph, as OpenCV converts them on the host (YUV within
one intensity level, Bayer exactly): packed YUV 4:2:2 and Bayer mosaics to RGB. The host then uploads the camera's
own bytes, two or one per pixel instead of three, and spends nothing on the conversion."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# ITU-R BT.601, video range, as OpenCV's YUV 4:2:2 to RGB applies it (Y below 16 counts as 16).
_Y_SCALE, _V_R, _U_G, _V_G, _U_B = 255 / 219, 1.596027, 0.391762, 0.812968, 2.017232
# Where each colour sits in the top-left 2×2 of a mosaic (0 R, 1 G, 2 B), by the ROS encoding's name.
BAYER_PATTERNS = {"bayer_rggb": ((0, 1), (1, 2)), "bayer_bggr": ((2, 1), (1, 0)),
                  "bayer_gbrg": ((1, 2), (0, 1)), "bayer_grbg": ((1, 0), (2, 1))}


def yuv422_to_rgb(packed: Tensor, order: str) -> Tensor:
    """(H, W, 2) uint8 UYVY or YUYV → (H, W, 3) uint8 RGB: each pixel pair shares its U and V."""
    luma, chroma = (packed[..., 1], packed[..., 0]) if order == "uyvy" else (packed[..., 0], packed[..., 1])
    u = chroma[:, 0::2].float().repeat_interleave(2, dim=1) - 128
    v = chroma[:, 1::2].float().repeat_interleave(2, dim=1) - 128
    y = (luma.float() - 16).clamp(min=0) * _Y_SCALE
    rgb = torch.stack([y + _V_R * v, y - _U_G * u - _V_G * v, y + _U_B * u], dim=-1)
    return rgb.round().clamp(0, 255).to(torch.uint8)


def demosaic_bilinear(mosaic: Tensor, order: str) -> Tensor:
    """(H, W) uint8 Bayer mosaic → (H, W, 3) uint8 RGB by bilinear interpolation: each missing colour is the mean of
    its nearest samples of that colour; the outermost rows and columns copy their inner neighbours, as OpenCV's
    bilinear demosaicing does."""
    pattern = BAYER_PATTERNS[order]
    height, width = mosaic.shape
    planes = torch.zeros((1, 3, height, width), dtype=torch.float32, device=mosaic.device)
    for dy in range(2):
        for dx in range(2):
            planes[0, pattern[dy][dx], dy::2, dx::2] = mosaic[dy::2, dx::2].float()
    # Built by arithmetic on the device, not from Python lists or item assignment: a copy from host memory is not
    # allowed while a CUDA graph is captured.
    centre = (torch.arange(3, device=mosaic.device) == 1).float()  # 0 1 0
    corners = torch.outer(centre + 0.5 * (1 - centre), centre + 0.5 * (1 - centre))  # .25 .5 .25 / .5 1 .5 / ...
    cross = 0.25 * (centre[:, None] + centre[None, :]) + 0.5 * torch.outer(centre, centre)  # 0 .25 0 / .25 1 .25 / ...
    kernels = torch.stack([corners, cross, corners]).unsqueeze(1)  # red and blue from corners, green from a cross
    rgb = F.conv2d(F.pad(planes, (1, 1, 1, 1), mode="reflect"), kernels, groups=3)[0].permute(1, 2, 0)
    rgb = torch.cat([rgb[1:2], rgb[1:-1], rgb[-2:-1]], dim=0)
    rgb = torch.cat([rgb[:, 1:2], rgb[:, 1:-1], rgb[:, -2:-1]], dim=1)
    # Halves round up, as OpenCV's integer (sum + 2) >> 2 does (torch.round would round them to even).
    return (rgb + 0.5).floor().clamp(0, 255).to(torch.uint8)
