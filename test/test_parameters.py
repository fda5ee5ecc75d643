"""The node's parameters without ROS: defaults from config/aliked.yaml, the dataset configs, validation."""

from pathlib import Path

import pytest

from aliked_ros import parameters
from aliked_ros.errors import AlikedError

ROOT = Path(__file__).resolve().parents[1]


def test_every_parameter_has_a_documented_default():
    values = parameters.defaults()
    assert set(values) == set(parameters.SPECS_BY_NAME)
    text = (ROOT / "config" / "aliked.yaml").read_text().splitlines()
    for spec in parameters.SPECS:
        line = next(i for i, entry in enumerate(text) if entry.strip().startswith(f"{spec.name}:"))
        # the parameter's line, or one of the lines just above it, is a comment
        assert any(text[j].strip().startswith("#") for j in range(max(0, line - 3), line)), spec.name


@pytest.mark.parametrize("name, size, topic", [("tum", (480, 640), "/camera/rgb/image_color"),
                                               ("kitti", (376, 1241), "/kitti/camera_gray_left/image_raw")])
def test_dataset_configs(name, size, topic):
    path = ROOT / "config" / f"{name}.yaml"
    values = parameters.resolve(params_file=path)
    assert (values["image_height"], values["image_width"]) == size
    assert topic in path.read_text()


def test_overrides_are_validated_with_a_reason():
    assert parameters.resolve({"top_k": 2000, "device": "cuda:1"})["top_k"] == 2000
    cases = [({"model": "aliked-x"}, "Unknown model 'aliked-x'"), ({"top_k": 0}, "at least 1"),
             ({"score_threshold": 1.0}, "between 0 and 0.999"), ({"top_k": 2.5}, "integer"),
             ({"publish_debug_image": "yes"}, "true or false"),
             ({"qos_reliability": "sometimes"}, "best_effort"), ({"nonsense": 1}, "Unknown parameter")]
    for overrides, message in cases:
        with pytest.raises(AlikedError, match=message):
            parameters.resolve(overrides)


def test_run_time_parameters_are_the_ones_the_node_applies():
    """score_threshold, the debug image and the diagnostics thresholds change at run time; everything that needs a
    new engine or subscription is read-only."""
    runtime = {spec.name for spec in parameters.SPECS if not spec.read_only}
    assert runtime == {"score_threshold", "publish_debug_image", "debug_image_rate", "latency_budget_ms",
                       "max_drop_ratio"}


def test_a_bad_params_file_is_reported(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("/**: [unclosed")
    with pytest.raises(AlikedError, match="could not be read"):
        parameters.resolve(params_file=broken)
    with pytest.raises(AlikedError, match="could not be read"):
        parameters.resolve(params_file=tmp_path / "missing.yaml")


def test_the_node_path_of_a_prebuilt_engine_needs_no_torch():
    """DESIGN.md: a robot running a prebuilt TensorRT engine needs tensorrt, cuda-python, numpy and ROS 2, not torch.
    Everything the node imports besides rclpy and the engine's runtime must load without importing torch."""
    import subprocess
    import sys

    code = ("import sys; import aliked_ros.processing, aliked_ros.parameters, aliked_ros.latency, "
            "aliked_ros.messages, aliked_ros.visualize, aliked_ros.export.engine_info, aliked_ros.engines.cache, "
            "aliked_ros.cuda_runtime, aliked_ros.vo, aliked_ros.matching; "
            "from aliked_ros import parameters, processing; "
            "config = processing.extractor_config(parameters.resolve({'engine': 'auto', 'engine_path': 'x.engine'})); "
            "assert config.resolved().engine == 'tensorrt'; "
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'kornia') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
