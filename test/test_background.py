"""Background builds: the worker that compiles the torch engine's image sizes while the uncompiled graph serves."""

import os
import shutil
import threading
import time

import pytest
import torch

from aliked_ros.engines.background import DONE, FAILED, PENDING, BackgroundBuilds


def test_jobs_run_in_order_once_per_key_and_keep_their_results():
    builds = BackgroundBuilds()
    release = threading.Event()
    order = []

    def job(name, wait=False):
        def run():
            if wait:
                release.wait(5)
            order.append(name)
            return name.upper()
        return run

    builds.submit("a", job("a", wait=True))
    builds.submit("b", job("b"))
    builds.submit("a", job("again"))  # a key is built once: the second job is ignored
    assert builds.state("a") == PENDING and builds.busy
    with pytest.raises(KeyError, match="not built"):
        builds.result("a")
    release.set()
    assert builds.wait("b", timeout=5) == DONE
    assert order == ["a", "b"]
    assert (builds.result("a"), builds.result("b")) == ("A", "B")
    assert not builds.busy and builds.state("never") is None


def test_a_failed_job_is_kept_as_failed_with_its_reason_and_the_worker_goes_on():
    messages = []
    builds = BackgroundBuilds(log=messages.append)

    def broken():
        raise RuntimeError("no Triton here\nsecond line")

    builds.submit("bad", broken)
    builds.submit("good", lambda: 1)
    assert builds.wait("good", timeout=5) == DONE
    assert builds.state("bad") == FAILED
    assert isinstance(builds.error("bad"), RuntimeError)
    assert messages == ["Background build 'bad' failed: RuntimeError: no Triton here"]


def test_close_drops_the_queued_jobs_and_the_thread_is_a_daemon():
    builds = BackgroundBuilds()
    started, release = threading.Event(), threading.Event()

    def slow():
        started.set()
        release.wait(5)
        return "slow"

    builds.submit("running", slow)
    builds.submit("queued", lambda: "never")
    assert started.wait(5)
    assert builds._thread.daemon  # a node that exits does not wait for a compilation it no longer needs
    builds.close()
    assert builds.state("queued") == FAILED and "closed" in str(builds.error("queued"))
    release.set()
    assert builds.wait("running", timeout=5) == FAILED  # it ends on its own, its result kept by nobody
    assert "closed while it was built" in str(builds.error("running"))
    with pytest.raises(RuntimeError, match="closed"):
        builds.submit("late", lambda: None)
    # The worker stays, idle: a thread that ran torch's compiler must not end while the interpreter shuts down.
    builds._thread.join(0.2)
    assert builds._thread.is_alive() and not builds.busy


def test_wait_idle_waits_for_every_queued_job():
    builds = BackgroundBuilds()
    assert builds.wait_idle(timeout=0)  # nothing queued: idle at once
    release = threading.Event()
    builds.submit("first", lambda: release.wait(5))
    builds.submit("second", lambda: "b")
    assert not builds.wait_idle(timeout=0.1)
    release.set()
    assert builds.wait_idle(timeout=5) and builds.state("second") == DONE


def test_wait_gives_up_after_its_timeout():
    builds = BackgroundBuilds()
    release = threading.Event()
    builds.submit("slow", lambda: release.wait(5))
    start = time.monotonic()
    assert builds.wait("slow", timeout=0.2) == PENDING
    assert time.monotonic() - start < 2
    release.set()
    assert builds.wait("slow", timeout=5) == DONE


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile on the CPU needs a C++ compiler")
def test_torch_compile_on_the_worker_while_the_caller_goes_on(tmp_path, monkeypatch):
    """What the torch engine relies on: Dynamo and Inductor compile on the worker thread while the calling thread
    goes on with tensor work, and the compiled forward then serves the caller with the same results.

    The caller calls no nn.Module meanwhile: torch's FX tracers patch ``nn.Module.__call__`` for every thread while
    they trace, and a module called on another thread then lands in the tracer ("module is not installed as a
    submodule", seen here in about one run in three when this test called the module eagerly). The engine keeps to
    that rule: during a build it only replays CUDA graphs."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.SELU(), torch.nn.Conv2d(8, 4, 1)).eval()
    example = torch.rand(1, 3, 24, 32)
    builds = BackgroundBuilds()

    def compile_for_example():
        forward = torch.compile(module, dynamic=False)
        with torch.inference_mode():
            forward(example)
        return forward

    with torch.inference_mode():
        expected = module(example)
    builds.submit("24x32", compile_for_example)
    other_work = 0
    matrix = torch.rand(64, 64)
    while builds.state("24x32") == PENDING:  # the caller goes on meanwhile
        torch.testing.assert_close(matrix @ torch.eye(64), matrix)
        other_work += 1
    assert builds.state("24x32") == DONE, builds.error("24x32")
    with torch.inference_mode():
        torch.testing.assert_close(builds.result("24x32")(example), expected, rtol=1e-5, atol=1e-5)
    assert other_work > 0


def test_an_exit_while_a_job_runs_waits_for_it(tmp_path):
    """The interpreter's shutdown must not cut a running job off (a compilation cut off there aborts the process):
    the exit waits for it, and queued jobs are dropped."""
    import subprocess
    import sys

    done, dropped = tmp_path / "done", tmp_path / "dropped"
    code = f"""
import threading, time
from pathlib import Path
from aliked_ros.engines.background import BackgroundBuilds
started = threading.Event()
def slow():
    started.set()
    time.sleep(1.5)
    Path({str(done)!r}).write_text("finished")
builds = BackgroundBuilds()
builds.submit("slow", slow)
builds.submit("queued", lambda: Path({str(dropped)!r}).write_text("ran"))
started.wait(5)
"""  # and the script ends here, the job still running
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert done.read_text() == "finished" and not dropped.exists()


def test_graph_steps_make_nothing_while_the_worker_compiles():
    """The torch engine's rule for its graphs when it compiles in the background (next_graph_step): while the worker
    compiles only replays (a stand-in, or another layout's graph), and each size is compiled once."""
    from aliked_ros.engines.torch_engine import next_graph_step

    for build in (None, PENDING, DONE, FAILED):
        assert next_graph_step("final", busy=True, build=build) == "replay"
        assert next_graph_step("final", busy=False, build=build) == "replay"
        assert next_graph_step("stand-in", busy=True, build=build) == "replay"
        assert next_graph_step("none", busy=True, build=build) == "elsewhere"
    # Idle: the first frame of a size captures the eager module's graph and queues the size's compilation ...
    assert next_graph_step("none", busy=False, build=None) == "stand-in"
    # ... a compiled size captures its compiled graph, for any layout (one compilation per size) ...
    assert next_graph_step("stand-in", busy=False, build=DONE) == "compiled"
    assert next_graph_step("none", busy=False, build=DONE) == "compiled"
    # ... and a failed one keeps the eager module's graph for good.
    assert next_graph_step("stand-in", busy=False, build=FAILED) == "keep"
    assert next_graph_step("none", busy=False, build=FAILED) == "eager-final"


def test_a_program_that_is_done_can_leave_without_waiting_for_a_running_job(tmp_path):
    """exit_without_waiting_for_builds: where a job runs, the process ends at once with the code given (its output
    flushed), the job cut off; where none runs, it returns and the program goes on."""
    import subprocess
    import sys
    import time

    done = tmp_path / "done"
    code = f"""
import threading, time
from pathlib import Path
from aliked_ros.engines.background import BackgroundBuilds, builds_running, exit_without_waiting_for_builds
assert not builds_running()
exit_without_waiting_for_builds(3)  # nothing runs: returns
started = threading.Event()
def slow():
    started.set()
    time.sleep(30)
    Path({str(done)!r}).write_text("finished")
builds = BackgroundBuilds()
builds.submit("slow", slow)
started.wait(5)
assert builds_running()
print("leaving", end="")  # no newline: flushed by the exit, not by a line buffer
exit_without_waiting_for_builds(7)
print("not reached")
"""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (7, "leaving"), result.stderr[-2000:]
    assert time.perf_counter() - start < 20 and not done.exists()


def test_the_gil_changes_hands_quickly_while_a_build_runs_and_the_interval_comes_back_after():
    """While any build runs, sys.getswitchinterval() is BUILD_SWITCH_INTERVAL_S (the serving thread waits less for
    the GIL); two engines' builds overlapping, the interval found before the first comes back after the last."""
    import sys
    import threading

    from aliked_ros.engines.background import BUILD_SWITCH_INTERVAL_S

    original = sys.getswitchinterval()
    assert original > BUILD_SWITCH_INTERVAL_S  # the interpreter's default, 5 ms
    first_started, second_started, release_first, release_second = (threading.Event() for _ in range(4))
    seen = {}

    def job(name, started, release):
        def run():
            seen[name] = sys.getswitchinterval()
            started.set()
            release.wait(10)
        return run

    first, second = BackgroundBuilds(), BackgroundBuilds()
    first.submit("a", job("a", first_started, release_first))
    assert first_started.wait(10)
    second.submit("b", job("b", second_started, release_second))
    assert second_started.wait(10)
    release_first.set()
    assert first.wait("a", 10) == "done"
    assert sys.getswitchinterval() == BUILD_SWITCH_INTERVAL_S  # the second build still runs
    release_second.set()
    assert second.wait("b", 10) == "done"
    assert seen == {"a": BUILD_SWITCH_INTERVAL_S, "b": BUILD_SWITCH_INTERVAL_S}
    assert sys.getswitchinterval() == original


def test_a_compile_child_ends_when_its_parent_does(tmp_path):
    """compile_child.exit_when_orphaned: a child whose parent has gone ends (a stopped node does not leave a
    compilation running): a parent starts a child that would sleep 60 s, then exits at once."""
    import subprocess
    import sys
    import time

    pid_file = tmp_path / "child.pid"
    child = f"""
import os, time
from aliked_ros.engines.compile_child import exit_when_orphaned
exit_when_orphaned(0.1)
with open({str(pid_file)!r} + ".part", "w") as file:
    file.write(str(os.getpid()))
os.replace({str(pid_file)!r} + ".part", {str(pid_file)!r})  # whole when it appears
time.sleep(60)
"""
    parent = f"""
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", {child!r}])
while not os.path.exists({str(pid_file)!r}):
    time.sleep(0.05)
"""  # and the parent ends here, its child sleeping
    subprocess.run([sys.executable, "-c", parent], timeout=60, check=True)
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the orphaned child still runs 20 s after its parent ended")


def test_a_compile_child_that_cannot_compile_says_why_and_the_worker_compiles_itself(caplog):
    """The child exits non-zero where the settings make no compiled CUDA fast path (here: the CPU); the worker logs
    the child's last line and goes on (returns False), compiling in its own process."""
    import json
    import logging
    import subprocess
    import sys

    from aliked_ros.engines.compile_child import compile_in_child

    settings = '{"model": "aliked-t16", "top_k": 100, "device": "cpu", "precision": "fp32"}'
    result = subprocess.run([sys.executable, "-m", "aliked_ros.engines.compile_child", settings, "64", "64", "100"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "no compiled CUDA fast path" in result.stderr
    for bad in ('{"model": "aliked-x"}', "{not json"):  # one line the worker can log, not a traceback
        result = subprocess.run([sys.executable, "-m", "aliked_ros.engines.compile_child", bad, "64", "64", "100"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and result.stderr.startswith("compile_child: ") and "Traceback" not in (
            result.stderr), result.stderr
    with caplog.at_level(logging.WARNING, logger="aliked_ros"):
        assert compile_in_child(json.loads(settings), 64, 64, 100) is False
    assert "64x64 in a child process failed (compile_child: these settings make no compiled CUDA fast path" in (
        caplog.text)
