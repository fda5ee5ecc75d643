"""One configuration of an extractor (aliked_ros/config.py): its defaults are config/aliked.yaml's, its rules are the
ones every flag and parameter meets, and each way of making an extractor is an override of it."""

from __future__ import annotations

import argparse

import pytest

from aliked_ros import config, parameters
from aliked_ros.config import ExtractorConfig
from aliked_ros.errors import AlikedError, InvalidTypeError, InvalidValueError


def test_defaults_are_the_node_parameters_of_config_aliked_yaml():
    node = parameters.defaults()
    defaults = ExtractorConfig()
    for field, parameter in config.PARAMETER_OF.items():
        assert getattr(defaults, field) == node[parameter], field
    assert defaults.max_keypoints == config.DEFAULT_MAX_KEYPOINTS and defaults.cuda_graph is None


def test_a_changed_yaml_default_changes_every_default(monkeypatch):
    changed = dict(config.yaml_defaults(), model="aliked-t16", top_k=123)
    monkeypatch.setattr(config, "yaml_defaults", lambda: changed)
    assert (ExtractorConfig().model, ExtractorConfig().top_k) == ("aliked-t16", 123)


@pytest.mark.parametrize("settings, error", [
    (dict(model="aliked-x"), InvalidValueError), (dict(engine="openvino"), InvalidValueError),
    (dict(precision="fp8"), InvalidValueError), (dict(precision=True), InvalidValueError),
    (dict(top_k=0), InvalidValueError), (dict(top_k=2.5), InvalidTypeError), (dict(top_k="5"), InvalidTypeError),
    (dict(score_threshold=1.5), InvalidValueError), (dict(score_threshold="0.5"), InvalidTypeError),
    (dict(compile="yes"), InvalidTypeError), (dict(image_height=-1), InvalidValueError),
    (dict(engine="onnxruntime", top_k=-1), InvalidValueError),  # threshold mode is the torch engine's
])
def test_every_setting_is_validated(settings, error):
    with pytest.raises(error) as raised:
        ExtractorConfig(**settings)
    assert isinstance(raised.value, AlikedError)


def test_replace_ignores_unset_values_and_refuses_unknown_names():
    base = ExtractorConfig(model="aliked-t16")
    assert base.replace(top_k=None, device="cpu") == ExtractorConfig(model="aliked-t16", device="cpu")
    with pytest.raises(InvalidValueError, match="Unknown extractor setting 'fp16'"):
        base.replace(fp16=True)


def test_resolved_says_what_runs_on_the_cpu():
    logs = []
    auto = ExtractorConfig(engine="auto", model="aliked-t16", device="cpu").resolved(logs.append)
    assert (auto.engine, auto.precision, auto.cuda_graph, auto.compile) == ("torch", "fp32", False, False)
    # An explicit fp16 runs as asked, for precision studies (emulated, slower).
    explicit = ExtractorConfig(engine="torch", device="cpu", precision="fp16").resolved(logs.append)
    assert explicit.precision == "fp16"
    assert ExtractorConfig(engine="onnxruntime", onnx_path="x.onnx", device="cpu").resolved().precision == "fp32"
    assert ExtractorConfig(engine="tensorrt", engine_path="x.engine").resolved().precision == "fp16"


def test_static_engines_need_an_image_size_or_a_file():
    assert ExtractorConfig(engine="onnxruntime").needs_image_size()
    assert not ExtractorConfig(engine="onnxruntime", image_height=480, image_width=640).needs_image_size()
    assert not ExtractorConfig(engine="tensorrt", engine_path="x.engine").needs_image_size()
    assert not ExtractorConfig(engine="torch").needs_image_size()
    assert ExtractorConfig(engine="auto", engine_path="x.engine").resolved_engine() == "tensorrt"
    assert ExtractorConfig(engine="auto", onnx_path="x.onnx", device="cpu").resolved_engine() == "onnxruntime"


def test_a_given_file_is_described_by_its_name_not_by_settings_it_ignores():
    """The loading line of process-bag --onnx-path m.onnx named the default model and K, which the file overrides."""
    described = ExtractorConfig(engine="onnxruntime", onnx_path="m240.onnx").describe()
    assert "m240.onnx" in described and "aliked-n16rot" not in described and "top_k" not in described
    assert "plan.engine" in ExtractorConfig(engine="tensorrt", engine_path="plan.engine").describe()
    cached = ExtractorConfig(engine="onnxruntime", model="aliked-t16", top_k=200, precision="fp32").describe()
    assert cached == "onnxruntime engine for aliked-t16 (top_k 200, fp32)"


def test_the_node_parameters_are_an_override():
    from aliked_ros.processing import extractor_config

    values = parameters.resolve({"model": "aliked-t16", "top_k": 300, "score_threshold": 0.5,
                                 "torch_compile": False, "image_height": 480, "image_width": 640})
    made = extractor_config(values)
    assert (made.model, made.top_k, made.compile, made.image_height, made.image_width) == \
        ("aliked-t16", 300, False, 480, 640)
    assert made.score_threshold == 0.0  # the node thresholds each frame itself: its threshold changes at run time
    assert extractor_config(values, image_size=(376, 1241)).image_width == 1241


def test_command_line_flags_are_overrides_named_as_typed():
    from aliked_ros.tools.common import add_model_options, config_from_args

    parser = argparse.ArgumentParser()
    add_model_options(parser)
    made = config_from_args(parser.parse_args(["--model", "aliked-t16", "--precision", "fp16", "--no-compile",
                                               "--top-k", "-1", "--max-keypoints", "50"]))
    assert (made.engine, made.model, made.precision, made.compile, made.top_k, made.max_keypoints) == \
        ("torch", "aliked-t16", "fp16", False, -1, 50)
    assert config_from_args(parser.parse_args([])) == ExtractorConfig(engine="torch")
    with pytest.raises(InvalidValueError, match="--score-threshold must be between 0 and 0.999"):
        config_from_args(parser.parse_args(["--score-threshold", "2"]))


def test_compare_specs_and_bench_rows_are_overrides():
    from aliked_ros.tools.compare_specs import parse_spec, spec_config

    args = argparse.Namespace(model="aliked-t16", top_k=None, device="cpu", weights=None)
    made = spec_config(parse_spec("torch:precision=fp16,cuda_graph=false,weights=w.pth"), args, parse_spec("torch"))
    assert (made.engine, made.model, made.precision, made.cuda_graph, made.weights_path, made.device) == \
        ("torch", "aliked-t16", "fp16", False, "w.pth", "cpu")
    with pytest.raises(AlikedError, match="precision=fp8 is not valid"):
        parse_spec("torch:precision=fp8")
