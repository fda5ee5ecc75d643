"""One validation of every user parameter, shared by the command-line flags, the Python API and the node's
parameters, so that a value refused in one place is refused in all of them with the same sentence.

Each function takes the value and the name the user knows it by (``top_k`` in Python and YAML, ``--top-k`` on the
command line) and returns the value in its canonical type. A value of the wrong type raises
:class:`~aliked_ros.errors.InvalidTypeError` (a TypeError), a value out of range
:class:`~aliked_ros.errors.InvalidValueError` (a ValueError); both are AlikedErrors.
"""

from __future__ import annotations

import math
import numbers
import re

from aliked_ros.errors import InvalidTypeError, InvalidValueError

# Scores are sigmoid outputs in (0, 1): a threshold of 1 or more keeps nothing. ROS parameter ranges are closed
# intervals, hence a largest value rather than "below 1".
SCORE_THRESHOLD_MAX = 0.999
PRECISIONS = ("fp32", "fp16")
# Each of the torch engine's Triton-kernel choices (feature_reads, deform_reads, dense_layers; TorchExtractor).
KERNEL_CHOICES = ("auto", "torch", "triton")
# torch.compile's modes that leave the CUDA graph to the engine (the others capture graphs of their own).
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")


def integer(value, name: str) -> int:
    """An int (numpy integers too); bools, floats and strings are refused, never rounded or parsed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(f"{name} must be an integer, not {value!r}.")
    return int(value)


def number(value, name: str) -> float:
    """A finite real number as a float; strings are refused, never parsed."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(f"{name} must be a number, not {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise InvalidValueError(f"{name} must be a finite number, not {value}.")
    return value


def top_k(value, name: str = "top_k", threshold_mode: bool = True) -> int:
    """Keypoints per image: positive, or -1 for threshold mode where the engine has it (the torch engine)."""
    value = integer(value, name)
    if value >= 1 or (threshold_mode and value == -1):
        return value
    allowed = "positive, or -1 for threshold mode" if threshold_mode else "at least 1"
    raise InvalidValueError(f"{name} must be {allowed}, not {value}.")


def score_threshold(value, name: str = "score_threshold") -> float:
    value = number(value, name)
    if not 0.0 <= value <= SCORE_THRESHOLD_MAX:
        raise InvalidValueError(f"{name} must be between 0 and {SCORE_THRESHOLD_MAX} (scores lie between 0 and 1), "
                                f"not {value:g}.")
    return value


def max_keypoints(value, name: str = "max_keypoints") -> int:
    value = integer(value, name)
    if value < 1:
        raise InvalidValueError(f"{name} must be at least 1, not {value}.")
    return value


def model(value, name: str = "model") -> str:
    from aliked_ros.model.configs import MODEL_CONFIGS

    if not isinstance(value, str):
        raise InvalidTypeError(f"{name} must be a model name, not {value!r}.")
    if value not in MODEL_CONFIGS:
        raise InvalidValueError(f"Unknown {name} {value!r}: choose one of {', '.join(MODEL_CONFIGS)}.")
    return value


def device(value, name: str = "device") -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(f"{name} must be a device name, not {value!r}.")
    if not DEVICE_PATTERN.fullmatch(value):
        raise InvalidValueError(f"Unknown {name} {value!r}: use cpu, cuda, cuda:N or auto.")
    return value


def precision(value, name: str = "precision") -> str:
    if value not in PRECISIONS:
        raise InvalidValueError(f"{name} must be fp32 or fp16, not {value!r}.")
    return value


def one_of(value, choices: tuple[str, ...], name: str, why: str = "") -> str:
    """``value`` if it is one of ``choices``, else an InvalidValueError that lists them (and says ``why``)."""
    if value not in choices:
        raise InvalidValueError(f"Unknown {name} {value!r}: choose one of {', '.join(choices)}{why}.")
    return value


def kernel_choice(value, name: str) -> str:
    return one_of(value, KERNEL_CHOICES, name)


def compile_mode(value, name: str = "compile_mode") -> str:
    return one_of(value, COMPILE_MODES, name, " (torch.compile's modes with CUDA graphs of their own would capture "
                                               "inside the engine's graph)")


def flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidTypeError(f"{name} must be true or false, not {value!r}.")
    return value


def rate_hz(value, name: str = "rate") -> float:
    value = number(value, name)
    if value <= 0:
        raise InvalidValueError(f"{name} must be a positive number of frames per second, not {value:g}.")
    return value
