"""The four published ALIKED variants: the one place their shapes and weight files are described."""

from __future__ import annotations

from dataclasses import dataclass

from aliked_ros.errors import AlikedError


@dataclass(frozen=True)
class ModelConfig:
    """Layer widths of one ALIKED variant (Zhao et al. 2023, table 1) and its published weights."""

    name: str
    c1: int  # block1 channels (full resolution)
    c2: int  # block2 channels (1/2)
    c3: int  # block3 channels (1/8, deformable)
    c4: int  # block4 channels (1/32, deformable)
    dim: int  # dense feature channels = descriptor size
    descriptor_kernel: int  # patch size the descriptor head reads its sampling offsets from
    descriptor_positions: int  # deformable sampling positions per keypoint
    md5: str  # of the official .pth file

    @property
    def descriptor_size(self) -> int:
        return self.dim

    @property
    def weights_filename(self) -> str:
        return f"{self.name}.pth"

    @property
    def weights_url(self) -> str:
        return f"https://github.com/Shiaoming/ALIKED/raw/main/models/{self.weights_filename}"


MODEL_CONFIGS: dict[str, ModelConfig] = {
    config.name: config
    for config in (
        ModelConfig("aliked-t16", 8, 16, 32, 64, 64, 3, 16, "35c6ae58f4f67dd422550605de21fab5"),
        ModelConfig("aliked-n16", 16, 32, 64, 128, 128, 3, 16, "8411636df70dbb476c0746a77802b33b"),
        ModelConfig("aliked-n16rot", 16, 32, 64, 128, 128, 3, 16, "bfec5e8086e9f6bf68ffeb90ca7a793a"),
        ModelConfig("aliked-n32", 16, 32, 64, 128, 128, 3, 32, "fb7434eaaf6c52604541322d7e0fde58"),
    )
}

DEFAULT_MODEL = "aliked-n16rot"

# The network pools by 32 in all; an image side below one cell of the coarsest level carries no usable structure.
MIN_IMAGE_SIDE = 32
# NMS and soft-argmax window radius of the original detector (kernel 5x5).
NMS_RADIUS = 2


def get_model_config(name: str) -> ModelConfig:
    """The config of a model by name, or an AlikedError that lists the known names."""
    try:
        return MODEL_CONFIGS[name]
    except KeyError:
        known = ", ".join(MODEL_CONFIGS)
        raise AlikedError(f"Unknown model {name!r}: choose one of {known}.") from None
