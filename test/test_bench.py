"""`aliked-ros bench` and aliked_ros.bench: statistics, engine specs and what is skipped, the report's format
(from measurement records made up here: these test the formatting, not speed), and one tiny real run on the CPU."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from aliked_ros.bench.images import image_set
from aliked_ros.bench.machine import Environment
from aliked_ros.bench.memory import GpuMemoryProbe
from aliked_ros.bench.profiler import profile_calls, summarize_profile
from aliked_ros.bench.records import BenchResult, Measurement
from aliked_ros.bench.report import format_report, result_to_json
from aliked_ros.bench.run import CPU_REPEATS, CPU_WARMUP, GPU_REPEATS, GPU_WARMUP, BenchConfig, row_counts
from aliked_ros.bench.specs import (DEFAULT_ENGINES, DEFAULT_REFERENCES, ENGINE_SPECS, REFERENCE_SPECS, PlannedRow,
                                    Skipped, parse_engines, parse_references, plan_rows)
from aliked_ros.bench.timing import (LatencyStats, latency_stats, quarter_medians_ms, rosbags_message_builder,
                                     time_calls, time_message_build)
from aliked_ros.cli import main
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features

# --- statistics ---------------------------------------------------------------------------------------------------


def test_latency_stats_of_known_lists():
    stats = latency_stats([value / 1000 for value in range(1, 101)])  # 1 .. 100 ms
    assert stats.frames == 100
    assert stats.median_ms == pytest.approx(50.5)
    assert stats.mean_ms == pytest.approx(50.5)
    assert stats.p95_ms == pytest.approx(95.05)  # linear interpolation between the 95th and 96th value
    skewed = latency_stats([0.001, 0.001, 0.001, 0.010])
    assert skewed.median_ms == pytest.approx(1.0) and skewed.mean_ms == pytest.approx(3.25)
    assert skewed.p95_ms == pytest.approx(8.65)
    single = latency_stats([0.002])
    assert (single.median_ms, single.mean_ms, single.p95_ms) == pytest.approx((2.0, 2.0, 2.0))
    with pytest.raises(ValueError):
        latency_stats([])


def test_time_calls_cycles_frames_after_warmup_and_times_only_the_call():
    frames = [np.full((1,), index) for index in range(3)]
    seen = []
    ticks = iter(range(100))

    def call(frame):
        seen.append(int(frame[0]))
        return int(frame[0])

    seconds, summaries, last = time_calls(call, frames, warmup=2, repeats=5, summarize=lambda value: 10 * value,
                                          clock=lambda: next(ticks))
    assert seen == [0, 1, 2, 0, 1, 2, 0]  # warm-up takes frames 0, 1; timing goes on cycling from there
    assert summaries == [20, 0, 10, 20, 0]
    assert last == 0
    assert seconds == [1, 1, 1, 1, 1]  # one clock read before and one after each timed call, nothing else


def test_time_calls_calls_between_after_each_timed_frame_outside_the_clock():
    ticks = iter(range(100))
    calls = []
    seconds, _, _ = time_calls(lambda frame: None, [np.zeros(1)], warmup=3, repeats=4, clock=lambda: next(ticks),
                               between=calls.append)
    assert calls == [0, 1, 2, 3]  # the timed frames' indices, none for the warm-up
    assert seconds == [1, 1, 1, 1]


def test_quarter_medians_show_a_row_that_changes_speed():
    seconds = [0.9] * 50 + [0.8] * 50 + [0.7] * 50 + [0.7] * 49 + [5.0]  # one outlier does not move its quarter
    assert quarter_medians_ms(seconds) == pytest.approx([900.0, 800.0, 700.0, 700.0])
    assert quarter_medians_ms([0.001, 0.002, 0.003]) == pytest.approx([1.0, 2.0, 3.0])  # fewer frames than quarters


def test_the_report_shows_each_rows_quarters_and_sm_clock():
    steady = measurement("torch-graph-fp16", 0.5, gpu=True, times_ms=[0.5] * 8, sm_clock_mhz=[1980, 1980, 1755])
    changing = measurement("kornia-graphs", 2.0, kind="reference", gpu=True, times_ms=[2.4] * 4 + [1.8] * 4)
    failed = measurement("tensorrt-fp16", None, gpu=True, error="AlikedError: no plan")
    report = format_report(fake_result([changing, steady, failed], gpu=True))
    assert "- torch CUDA graph fp16: 0.5 / 0.5 / 0.5 / 0.5 ms; SM clock 1980 MHz (1755-1980, NVML, 3 readings)" in report
    assert "- kornia compiled+graphs: 2.4 / 2.4 / 1.8 / 1.8 ms\n" in report + "\n"  # no clock read: none said
    assert "TensorRT fp16:" not in report.split("by quarter")[1]


def test_time_calls_keeps_no_result_but_the_last():
    import gc
    import weakref

    class Result:
        pass

    alive = []

    def call(frame):
        result = Result()
        alive.append(weakref.ref(result))
        return result

    _, _, last = time_calls(call, [np.zeros(1)], warmup=0, repeats=4, summarize=lambda result: None)
    gc.collect()
    assert [ref() is not None for ref in alive] == [False, False, False, True]
    assert alive[-1]() is last


def test_message_build_time_is_positive_with_the_rosbags_class():
    builder = rosbags_message_builder()
    rng = np.random.default_rng(0)
    features = Features(rng.random((200, 2), dtype=np.float32), np.linspace(1, 0.1, 200, dtype=np.float32),
                        rng.random((200, 64), dtype=np.float32), 480, 640)
    assert time_message_build(builder, features, "aliked-t16", repeats=5) > 0
    message = builder.build(features, "aliked-t16")
    assert message.descriptor_size == 64 and len(message.scores) == 200


# --- engine specs and what runs where ------------------------------------------------------------------------------


def names(specs):
    return [spec.name for spec in specs]


def test_engine_specs_parse_with_aliases_in_order_once():
    assert names(parse_engines(DEFAULT_ENGINES)) == [
        "torch-fp32", "torch-fp16", "torch-graph-fp16", "torch-graph-fp32", "torch-compiled-graph-fp16",
        "onnxruntime-fp32", "tensorrt-fp16"]
    assert names(parse_engines("tensorrt, torch-fp32,tensorrt-fp16")) == ["tensorrt-fp16", "torch-fp32"]
    assert names(parse_engines("all")) == list(ENGINE_SPECS)
    spec = ENGINE_SPECS["torch-graph-fp16"]
    assert (spec.runtime, spec.precision, spec.cuda_graph, spec.needs_cuda) == ("torch", "fp16", True, True)
    # The gathers' row: the compiled fast path but for the reads (the kernel by default there), in one run with it.
    reads, fast = ENGINE_SPECS["torch-compiled-graph-gathers-fp16"], ENGINE_SPECS["torch-compiled-graph-fp16"]
    assert (reads.feature_reads, fast.feature_reads) == ("torch", "auto")
    assert ((reads.precision, reads.cuda_graph, reads.compile_mode)
            == (fast.precision, fast.cuda_graph, fast.compile_mode))
    deform = ENGINE_SPECS["torch-compiled-graph-deform-gathers-fp16"]  # the fast path but for the deformable reads
    assert (deform.deform_reads, fast.deform_reads, deform.feature_reads, deform.compile_mode) == (
        "torch", "auto", fast.feature_reads, fast.compile_mode)
    cudnn = ENGINE_SPECS["torch-compiled-graph-cudnn-fp16"]  # the fast path but for the full-resolution layers
    assert (cudnn.dense_layers, fast.dense_layers, cudnn.deform_reads, cudnn.feature_reads, cudnn.compile_mode) == (
        "torch", "auto", fast.deform_reads, fast.feature_reads, fast.compile_mode)
    # Inductor's autotuning: the fast path but for torch.compile's mode.
    tuned = ENGINE_SPECS["torch-compiled-autotune-graph-fp16"]
    assert (tuned.compile_mode, tuned.feature_reads, tuned.precision, tuned.cuda_graph) == (
        "max-autotune-no-cudagraphs", fast.feature_reads, fast.precision, fast.cuda_graph)
    with pytest.raises(AlikedError, match="Unknown engine 'torch-fp8'.*torch-fp32"):
        parse_engines("torch-fp32,torch-fp8")
    with pytest.raises(AlikedError, match="empty"):
        parse_engines("torch-fp32,,onnxruntime")


def test_reference_specs_parse():
    assert names(parse_references("kornia")) == ["kornia-eager", "kornia-compiled", "kornia-graphs"]
    assert names(parse_references("kornia-graphs,kornia-eager")) == ["kornia-graphs", "kornia-eager"]
    assert parse_references("none") == []
    assert REFERENCE_SPECS["kornia-graphs"].compile_mode == "reduce-overhead"
    assert names(parse_references("lightglue")) == ["lightglue-eager", "lightglue-compiled", "lightglue-graphs"]
    assert names(parse_references(DEFAULT_REFERENCES)) == names(parse_references("all")) == [
        "kornia-eager", "kornia-compiled", "kornia-graphs", "lightglue-eager", "lightglue-compiled",
        "lightglue-graphs"]
    assert REFERENCE_SPECS["lightglue-graphs"].compile_mode == "reduce-overhead"
    with pytest.raises(AlikedError, match="Unknown reference 'superpoint'"):
        parse_references("superpoint")


CPU_ONLY = Environment("cpu", ("CPUExecutionProvider",), "TensorRT's Python package is not installed", None)


def test_on_a_cpu_machine_the_cpu_rows_run_and_the_others_are_skipped_with_a_reason():
    specs = parse_engines(DEFAULT_ENGINES) + parse_references("kornia")
    planned, skipped = plan_rows(specs, CPU_ONLY)
    assert [(row.spec.name, row.device, row.provider) for row in planned] == [
        ("torch-fp32", "cpu", None), ("onnxruntime-fp32", "cpu", "cpu"), ("kornia-eager", "cpu", None)]
    reasons = {item.name: item.reason for item in skipped}
    assert set(reasons) == {"torch-fp16", "torch-graph-fp16", "torch-graph-fp32", "torch-compiled-graph-fp16",
                            "tensorrt-fp16", "kornia-compiled", "kornia-graphs"}
    assert "float16" in reasons["torch-fp16"]
    assert "CUDA" in reasons["torch-graph-fp16"] and "cpu" in reasons["torch-graph-fp16"]
    assert "CUDA" in reasons["tensorrt-fp16"] and "torch.compile" in reasons["kornia-graphs"]


def test_on_a_gpu_machine_missing_runtimes_are_skipped_and_onnxruntime_falls_back_to_the_cpu():
    environment = Environment("cuda:0", ("CPUExecutionProvider",), "TensorRT's Python package is not installed",
                              None)
    planned, skipped = plan_rows(parse_engines("all") + parse_references("kornia"), environment)
    by_name = {row.spec.name: row for row in planned}
    assert {"torch-fp32", "torch-fp16", "torch-graph-fp32", "torch-graph-fp16", "kornia-eager", "kornia-compiled",
            "kornia-graphs"} <= set(by_name)
    assert by_name["torch-graph-fp16"].device == "cuda:0"
    ort = by_name["onnxruntime-fp32"]
    assert (ort.device, ort.provider) == ("cpu", "cpu") and "CUDAExecutionProvider" in ort.note
    assert {item.name: item.reason for item in skipped} == {
        "tensorrt-fp16": "TensorRT's Python package is not installed",
        "tensorrt-fp32": "TensorRT's Python package is not installed"}
    # A provider named explicitly is not replaced by another: the row is skipped with the reason.
    _, skipped = plan_rows(parse_engines("onnxruntime"), environment, onnxruntime_provider="cuda")
    assert skipped[0].name == "onnxruntime-fp32" and "no CUDAExecutionProvider" in skipped[0].reason
    gpu_ort = Environment("cuda:1", ("CUDAExecutionProvider", "CPUExecutionProvider"), None, None)
    planned, skipped = plan_rows(parse_engines("onnxruntime,tensorrt"), gpu_ort)
    assert [(row.spec.name, row.device, row.provider, row.note) for row in planned] == [
        ("onnxruntime-fp32", "cuda:1", "cuda", None), ("tensorrt-fp16", "cuda:1", None, None)] and not skipped


def test_missing_onnxruntime_and_kornia_are_skipped():
    environment = Environment("cpu", None, "not installed", "kornia is not installed (pip install kornia)")
    planned, skipped = plan_rows(parse_engines("torch-fp32,onnxruntime") + parse_references("kornia-eager"),
                                 environment)
    assert names(row.spec for row in planned) == ["torch-fp32"]
    reasons = {item.name: item.reason for item in skipped}
    assert "onnxruntime is not installed" in reasons["onnxruntime-fp32"]
    assert "kornia is not installed" in reasons["kornia-eager"]


def test_lightglue_rows_are_skipped_with_what_is_missing_and_compiled_ones_need_cuda():
    missing = Environment("cuda:0", None, "not installed", None,
                          "LightGlue's ALIKED needs torchvision (pip install torchvision)")
    planned, skipped = plan_rows(parse_references("all"), missing)
    assert names(row.spec for row in planned) == ["kornia-eager", "kornia-compiled", "kornia-graphs"]
    assert {item.name: item.reason for item in skipped} == {
        name: "LightGlue's ALIKED needs torchvision (pip install torchvision)"
        for name in ("lightglue-eager", "lightglue-compiled", "lightglue-graphs")}
    planned, skipped = plan_rows(parse_references("lightglue"), CPU_ONLY)
    assert names(row.spec for row in planned) == ["lightglue-eager"]
    assert all("torch.compile" in item.reason for item in skipped)


def test_the_environment_probe_names_what_lightglue_lacks(monkeypatch):
    import importlib.util

    from aliked_ros.bench.machine import probe_environment

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None if name == "torchvision"
                        else real(name, *args))
    assert "needs torchvision" in probe_environment("cpu").lightglue_missing


def test_warmup_and_repeats_default_by_device_and_compiled_rows_warm_up_enough():
    config = BenchConfig([], [], [], [], [])
    gpu = PlannedRow(ENGINE_SPECS["torch-fp32"], "cuda:0")
    cpu = PlannedRow(ENGINE_SPECS["onnxruntime-fp32"], "cpu", "cpu")
    graphs = PlannedRow(REFERENCE_SPECS["kornia-graphs"], "cuda:0")
    assert row_counts(gpu, config) == (GPU_WARMUP, GPU_REPEATS)
    assert row_counts(cpu, config) == (CPU_WARMUP, CPU_REPEATS)
    config.warmup, config.repeats = 0, 7
    assert row_counts(gpu, config) == (0, 7)
    assert row_counts(graphs, config) == (3, 7)  # compile, then record the CUDA graphs, then time
    compiled = REFERENCE_SPECS["kornia-compiled"]
    assert row_counts(PlannedRow(compiled, "cuda:0"), config) == (2, 7)
    assert row_counts(PlannedRow(REFERENCE_SPECS["lightglue-graphs"], "cuda:0"), config) == (3, 7)
    assert row_counts(PlannedRow(REFERENCE_SPECS["lightglue-eager"], "cpu"), config) == (0, 7)
    for name, spec in ENGINE_SPECS.items():  # the torch engine's graph path captures in its first call
        assert row_counts(PlannedRow(spec, "cuda:0"), config)[0] == int(spec.cuda_graph), name


def test_an_image_set_needs_one_size_and_holds_rgb_frames():
    gray = np.zeros((40, 50), np.uint8)
    images = image_set("s", [("a", gray), ("b", np.zeros((40, 50, 3), np.uint8))], "test")
    assert (images.height, images.width, len(images.frames)) == (40, 50, 2)
    assert all(frame.shape == (40, 50, 3) and frame.flags.writeable for frame in images.frames)
    with pytest.raises(AlikedError, match="2 sizes.*50x40.*60x40"):
        image_set("s", [("a", gray), ("b", np.zeros((40, 60), np.uint8))], "test")


def test_nvml_probe_without_pynvml_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    probe = GpuMemoryProbe(0)
    assert probe.process_mib() is None and "nvidia-ml-py" in probe.missing


# --- the report, from made-up measurements --------------------------------------------------------------------------


def measurement(name, median, *, kind="engine", group=("aliked-t16", 1000, "tum"), gpu=False, **fields):
    spec = (REFERENCE_SPECS if kind == "reference" else ENGINE_SPECS)[name]
    model, top_k, set_name = group
    record = Measurement(model, top_k, set_name, 640, 480, name, spec.label, kind, spec.runtime, spec.precision,
                         "cuda:0" if gpu else "cpu", warmup=20, repeats=200)
    if median is not None:
        record.latency = LatencyStats(median, median * 1.1, median * 1.5, 200)
        record.keypoints_mean = 1000.0
    for key, value in fields.items():
        setattr(record, key, value)
    return record


def fake_result(measurements, *, gpu=False, skipped=(), notes=()):
    machine = {"device": "cuda:0" if gpu else "cpu", "gpu": "NVIDIA H100 80GB HBM3" if gpu else None,
               "cpu": "Test CPU (2 cores available)", "driver": "580.1" if gpu else None, "cuda": "13.0",
               "cudnn": 91000, "python": "3.12", "aliked_ros": "0.1.0", "torch": "2.11", "kornia": "0.9.0",
               "date": "2026-01-01 00:00 UTC"}
    config = {"command": "aliked-ros bench --device cuda", "image_sets": [
        {"name": "tum", "width": 640, "height": 480, "frames": 20, "source": "x"}]}
    return BenchResult(machine, config, list(measurements), list(skipped), list(notes), "rosbags (test)")


def table_lines(report: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in report.splitlines()
            if line.startswith("|")]


def test_gpu_report_has_a_ratio_column_per_reference_and_memory_columns():
    rows = [
        measurement("kornia-eager", 8.0, kind="reference", gpu=True, gpu_process_mib=900.0,
                    gpu_process_growth_mib=300.0, torch_peak_allocated_mib=250.0),
        measurement("kornia-graphs", 2.4, kind="reference", gpu=True, torch_peak_allocated_mib=260.0,
                    notes=["torch.compile: 3 graph break(s)"]),
        measurement("torch-graph-fp16", 0.5, gpu=True, gpu_process_mib=1000.0, gpu_process_growth_mib=12.4,
                    torch_peak_allocated_mib=80.0, torch_timed_peak_allocated_mib=41.6, message_build_ms=0.12),
        measurement("tensorrt-fp16", None, gpu=True, error="AlikedError: no plan"),
    ]
    report = format_report(fake_result(rows, gpu=True, skipped=[Skipped("onnxruntime-fp32", "no onnxruntime")]))
    assert "- Device: NVIDIA H100 80GB HBM3 (cuda:0); CPU: Test CPU" in report
    assert "- Driver: 580.1" in report and "- Command: `aliked-ros bench --device cuda`" in report
    assert "### aliked-t16, K 1000, tum 640×480 (20 frames)" in report
    header, separator, *body = table_lines(report)
    assert header == ["row", "device", "median ms", "mean ms", "p95 ms", "vs kornia eager",
                      "vs kornia compiled+graphs", "GPU MiB (NVML, process)", "peak alloc MiB (torch): row / timed",
                      "keypoints", "message ms"]
    assert all(cell == "---" for cell in separator)
    rows_by_label = {row[0]: dict(zip(header, row)) for row in body}
    fast = rows_by_label["torch CUDA graph fp16"]
    assert (fast["median ms"], fast["mean ms"], fast["p95 ms"]) == ("0.500", "0.550", "0.750")
    assert fast["vs kornia eager"] == "16.0×" and fast["vs kornia compiled+graphs"] == "4.80×"
    assert fast["GPU MiB (NVML, process)"] == "1000 (+12)"
    assert fast["peak alloc MiB (torch): row / timed"] == "80 / 42"
    assert rows_by_label["kornia eager"]["peak alloc MiB (torch): row / timed"] == "250"
    assert fast["keypoints"] == "1000" and fast["message ms"] == "0.120"
    eager = rows_by_label["kornia eager"]
    assert eager["vs kornia eager"] == "1.00×" and eager["vs kornia compiled+graphs"] == "0.30×"
    assert rows_by_label["kornia compiled+graphs"]["GPU MiB (NVML, process)"] == "n/a"
    assert rows_by_label["TensorRT fp16"]["median ms"] == "failed"
    assert "- Skipped onnxruntime-fp32: no onnxruntime." in report
    assert "TensorRT fp16, aliked-t16 K 1000 tum failed: AlikedError: no plan" in report
    assert "torch.compile: 3 graph break(s) (kornia compiled+graphs, aliked-t16 K 1000 tum)" in report


def test_cpu_report_has_no_gpu_columns_and_one_table_per_group():
    rows = [measurement("kornia-eager", 300.0, kind="reference"), measurement("torch-fp32", 200.0),
            measurement("kornia-eager", 900.0, kind="reference", group=("aliked-t16", 1000, "kitti")),
            measurement("onnxruntime-fp32", 450.0, group=("aliked-t16", 1000, "kitti"))]
    report = format_report(fake_result(rows, notes=["onnxruntime-fp32 runs on the CPU: no CUDA provider"]))
    assert "Driver" not in report and "GPU MiB" not in report
    assert report.count("### aliked-t16, K 1000") == 2
    tables = [line for line in report.splitlines() if line.startswith("| row |")]
    assert tables == ["| row | device | median ms | mean ms | p95 ms | vs kornia eager | keypoints | message ms |"] * 2
    body = {row[0] + "/" + row[2]: row for row in table_lines(report) if row[0] != "row" and row[0] != "---"}
    assert body["torch fp32/200.0"][5] == "1.50×"  # ratios stay within their group
    assert body["onnxruntime fp32/450.0"][5] == "2.00×"
    assert "- onnxruntime-fp32 runs on the CPU: no CUDA provider" in report


def test_json_holds_every_raw_number_and_the_ratios():
    rows = [measurement("kornia-eager", 8.0, kind="reference", times_ms=[8.0, 8.1]),
            measurement("torch-fp32", 2.0, times_ms=[2.0, 2.1])]
    data = json.loads(json.dumps(result_to_json(fake_result(rows))))
    engine = data["measurements"][1]
    assert engine["times_ms"] == [2.0, 2.1] and engine["latency"]["median_ms"] == 2.0
    assert engine["ratios"] == {"kornia eager": 4.0}
    assert data["machine"]["cpu"].startswith("Test CPU") and data["message_class"] == "rosbags (test)"


# --- the command --------------------------------------------------------------------------------------------------


def test_bad_arguments_fail_before_any_measurement(tmp_path, capsys):
    assert main(["bench", "--engines", "torch-fp8", "--images", str(tmp_path)]) == 2
    assert "Unknown engine 'torch-fp8'" in capsys.readouterr().err
    assert main(["bench", "--top-k", "1000,lots"]) == 2
    assert "whole numbers" in capsys.readouterr().err
    assert main(["bench", "--output", str(tmp_path / "missing" / "x.md")]) == 2
    assert "does not exist; create it first" in capsys.readouterr().err
    assert main(["bench", "--profile", "-1"]) == 2
    assert "--profile takes a number of frames" in capsys.readouterr().err


def fake_event(key, device, count, *, device_us=0.0, self_cpu_us=0.0):
    """What torch.profiler's key_averages() entries offer the summary: a key, a device type, counts and times."""
    return SimpleNamespace(key=key, device_type=SimpleNamespace(name=device), count=count,
                           device_time_total=device_us, self_cpu_time_total=self_cpu_us)


def test_profile_summary_takes_gpu_time_on_cuda_and_cpu_self_time_on_the_cpu():
    events = [fake_event("aten::conv2d", "CPU", 40, self_cpu_us=900.0),
              fake_event("cudaGraphLaunch", "CPU", 20, self_cpu_us=300.0),
              fake_event("sm90_xmma_fprop", "CUDA", 60, device_us=1200.0),
              fake_event("triton_poi_fused_selu", "CUDA", 20, device_us=400.0),
              fake_event("Memcpy HtoD", "CUDA", 20, device_us=100.0)]
    gpu = summarize_profile(events, frames=20, cuda=True, top=2)
    assert gpu.clock == "GPU kernel time" and gpu.frames == 20
    assert gpu.total_us_per_frame == pytest.approx(85.0) and gpu.calls_per_frame == pytest.approx(5.0)
    assert [(o.name, o.microseconds_per_frame, o.calls_per_frame) for o in gpu.top] == [
        ("sm90_xmma_fprop", 60.0, 3.0), ("triton_poi_fused_selu", 20.0, 1.0)]
    # Every entry counts in the kinds, those below the top too.
    assert gpu.by_kind == pytest.approx({"convolutions and matrix products (cuDNN, cuBLAS, CUTLASS)": 60.0,
                                         "Inductor (Triton)": 20.0, "copies": 5.0})
    assert list(gpu.by_kind) == ["convolutions and matrix products (cuDNN, cuBLAS, CUTLASS)", "Inductor (Triton)",
                                 "copies"]
    cpu = summarize_profile(events, frames=20, cuda=False)
    assert cpu.by_kind is None
    assert [o.name for o in cpu.top] == ["aten::conv2d", "cudaGraphLaunch"]
    assert cpu.total_us_per_frame == pytest.approx(60.0)


def test_profile_of_real_cpu_calls_names_the_operators_they_run():
    import torch

    weight = torch.randn(64, 64)

    def call(frame):
        return torch.mm(torch.from_numpy(frame).float(), weight).relu()

    frames = [np.ones((64, 64), np.float32)]
    profile = profile_calls(call, frames, 3, cuda=False)
    by_name = {operation.name: operation for operation in profile.top}
    assert by_name["aten::mm"].calls_per_frame == pytest.approx(1.0)
    assert profile.total_us_per_frame >= sum(o.microseconds_per_frame for o in profile.top) > 0


@pytest.fixture
def crops(tmp_path, rgb_frame) -> str:
    """Two 96×64 crops of a real frame: small enough for a CPU run in seconds."""
    directory = tmp_path / "crops"
    directory.mkdir()
    bgr = cv2.cvtColor(rgb_frame, cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(directory / "a.png"), bgr[100:164, 200:296])
    cv2.imwrite(str(directory / "b.png"), bgr[300:364, 100:196])
    return str(directory)


def test_a_tiny_real_cpu_run_gives_torch_and_kornia_rows_with_a_ratio(crops, tmp_path, capsys):
    pytest.importorskip("kornia")
    from aliked_ros.model.weights import resolve_weights

    try:
        resolve_weights("aliked-t16", allow_download=False)
    except AlikedError as error:
        pytest.skip(f"no aliked-t16 weights here: {error}")
    output, raw = tmp_path / "bench.md", tmp_path / "bench.json"
    assert main(["bench", "--models", "aliked-t16", "--top-k", "100", "--engines", "torch-fp32", "--reference",
                 "kornia", "--device", "cpu", "--warmup", "1", "--repeats", "2", "--images", crops,
                 "--output", str(output), "--json", str(raw)]) == 0
    captured = capsys.readouterr()
    report = captured.out
    assert output.read_text() == report
    assert "### aliked-t16, K 100, crops 96×64 (2 frames)" in report
    header, _, *body = table_lines(report)
    assert header == ["row", "device", "median ms", "mean ms", "p95 ms", "vs kornia eager", "keypoints",
                      "message ms"]
    rows = {row[0]: dict(zip(header, row)) for row in body}
    assert set(rows) == {"kornia eager", "torch fp32"}
    for row in rows.values():
        assert row["device"] == "cpu"
        assert all(float(row[column]) > 0 for column in ("median ms", "mean ms", "p95 ms"))
        assert 0 < float(row["keypoints"]) <= 100
    assert float(rows["torch fp32"]["vs kornia eager"].rstrip("×")) > 0
    assert rows["kornia eager"]["vs kornia eager"] == "1.00×"
    assert float(rows["torch fp32"]["message ms"]) > 0
    assert "Skipped kornia-compiled" in report and "Skipped kornia-graphs" in report
    # Progress: one line per row with its median, on stderr.
    assert len(re.findall(r"\[\d/2\] aliked-t16 K 100 crops 96x64 \| [a-z0-9-]+: median", captured.err)) == 2
    assert "Profile of" not in report  # only with --profile
    data = json.loads(raw.read_text())
    assert [m["name"] for m in data["measurements"]] == ["kornia-eager", "torch-fp32"]
    assert all(len(m["times_ms"]) == 2 and min(m["times_ms"]) > 0 for m in data["measurements"])
    assert data["config"]["command"].startswith("aliked-ros bench --models aliked-t16")


def test_profile_option_adds_the_largest_operators_of_each_torch_row(crops, tmp_path, capsys):
    from aliked_ros.model.weights import resolve_weights

    try:
        resolve_weights("aliked-t16", allow_download=False)
    except AlikedError as error:
        pytest.skip(f"no aliked-t16 weights here: {error}")
    raw = tmp_path / "bench.json"
    assert main(["bench", "--models", "aliked-t16", "--top-k", "50", "--engines", "torch-fp32", "--reference", "none",
                 "--device", "cpu", "--warmup", "1", "--repeats", "1", "--images", crops, "--profile", "2",
                 "--json", str(raw)]) == 0
    report = capsys.readouterr().out
    assert "Profile of torch fp32, aliked-t16 K 50 crops: CPU operator self time" in report
    profile_rows = [row for row in table_lines(report) if row[0].startswith("`")]
    assert profile_rows and all(row[0].startswith("`aten::") for row in profile_rows)
    profile = json.loads(raw.read_text())["measurements"][0]["profile"]
    assert profile["frames"] == 2 and profile["top"] and profile["total_us_per_frame"] > 0
    assert "--profile 2" in json.loads(raw.read_text())["config"]["command"]


def test_frame_path_option_times_every_encoding_beside_the_engine_row(crops, tmp_path, capsys):
    """--frame-path: the node's path from a camera message of each encoding to the serialised Keypoints message,
    with its stages, beside the engine's row (issue 16)."""
    from aliked_ros.model.weights import resolve_weights

    try:
        resolve_weights("aliked-t16", allow_download=False)
    except AlikedError as error:
        pytest.skip(f"no aliked-t16 weights here: {error}")
    grey = tmp_path / "grey"
    grey.mkdir()
    for path in sorted(Path(crops).iterdir()):
        cv2.imwrite(str(grey / path.name), cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2GRAY))
    raw = tmp_path / "bench.json"
    assert main(["bench", "--models", "aliked-t16", "--top-k", "50", "--engines", "torch-fp32", "--reference", "none",
                 "--device", "cpu", "--warmup", "1", "--repeats", "2", "--images", crops, str(grey), "--frame-path",
                 "--json", str(raw)]) == 0
    report = capsys.readouterr().out
    frame_rows = [row for row in table_lines(report) if len(row) == 10 and row[0] == "torch fp32"]
    assert [row[1] for row in frame_rows] == ["rgb8", "bgr8", "yuv422", "bayer_rggb8", "jpeg", "mono8"]
    for row in frame_rows:
        total, decode, extract, build, serialize = (float(row[index]) for index in (2, 4, 5, 6, 7))
        assert 0 < decode and 0 < extract and 0 < build and 0 < serialize and extract < total
    measurements = json.loads(raw.read_text())["measurements"]
    assert [stats["encoding"] for stats in measurements[1]["frame_path"]] == ["mono8"]
    assert json.loads(raw.read_text())["config"]["frame_path"] is True


def test_kernel_kinds_from_the_names_of_an_h100_profile():
    from aliked_ros.bench.profiler import kernel_kind

    names = {  # as torch.profiler named them on the H100 (BENCHMARKS.md)
        "sm80_xmma_fprop_implicit_gemm_indexed_wo_smem_f16f16_f16f32_f32_nhwckrsc_nhwc": "convolutions",
        "void cudnn::cnn::conv2d_grouped_direct_kernel<false, true>": "convolutions",
        "at::native::mbtopk::computeDigitCumSum(short*, unsigned int*, unsigned int)": "top-k",
        "void at::native::radixSortKVInPlace<-2, -1, 32, 32, float, long, unsigned int>": "top-k",
        "triton_poi_fused__to_copy_add_arange_bitwise_and_clamp_ge_index_le_mul_stack_transpose": "Inductor",
        "_feature_pyramid_read_kernel": "aliked_ros",
        "_direct_conv_mma_kernel": "aliked_ros",  # not a convolution library's, though its name says conv
        "_direct_conv_kernel": "aliked_ros",
        "_deformable_conv_kernel": "aliked_ros",  # blocks 3 and 4, fused: a convolution library's by its name
        "_nms_pass_kernel": "aliked_ros",
        "_top_k_threshold_kernel": "aliked_ros",
        "_top_k_count_kernel": "aliked_ros",  # was "other": the kinds named the top-k kernels one by one
        "_top_k_gather_kernel": "aliked_ros",
        "Memcpy HtoD (Pinned -> Device)": "copies",
        "void at::native::vectorized_elementwise_kernel<4>": "other",
    }
    for name, kind in names.items():
        assert kernel_kind(name).startswith(kind), (name, kernel_kind(name))


def test_a_gpu_profile_in_the_report_says_its_time_by_kind():
    from aliked_ros.bench.report import profile_table

    events = [fake_event("sm90_xmma_fprop", "CUDA", 60, device_us=1200.0),
              fake_event("triton_poi_fused_selu", "CUDA", 20, device_us=400.0),
              fake_event("Memcpy HtoD", "CUDA", 20, device_us=100.0)]
    measurement = SimpleNamespace(label="torch compiled + CUDA graph fp16", model="aliked-t16", top_k=1000,
                                  image_set="tum", profile=summarize_profile(events, frames=20, cuda=True, top=1))
    lines = profile_table(measurement)
    assert lines[-1] == ("By kind (every entry, told by its name): convolutions and matrix products (cuDNN, cuBLAS, "
                         "CUTLASS) 60.0 µs, Inductor (Triton) 20.0 µs, copies 5.0 µs.")
