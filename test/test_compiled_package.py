"""The torch engine's AOTInductor packages: named by what made them, built once, loaded without the compiler, rebuilt
where a file does not load, never left half-written. AOTInductor compiles for the CPU too, so a small module stands in
for ALIKED here (seconds instead of a minute); the engine's own packages are built on CUDA by its CUDA tests."""

import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from aliked_ros.engines import compiled_package  # noqa: E402
from aliked_ros.engines.cache import graph_revision  # noqa: E402


class SmallTopK(torch.nn.Module):
    """The call signature of Aliked's top-k forward, ``(network_input, top_k) → (keypoints, scores, descriptors)``."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, 3))

    def forward(self, image, top_k):
        scores = (image[0] * self.weight.view(3, 1, 1)).sum(0).reshape(-1)
        best, index = torch.topk(scores, top_k)
        keypoints = torch.stack((index % image.shape[-1], index // image.shape[-1]), dim=1).float()
        return keypoints, best, best[:, None] * self.weight


def test_package_names_say_model_size_k_precision_revision_torch_and_device(tmp_path):
    path = compiled_package.package_path("aliked-t16", 480, 640, 1000, "fp16", torch.device("cpu"),
                                         directory=tmp_path)
    assert path.parent == tmp_path
    assert path.name.startswith(f"aliked-t16_640x480_k1000_fp16_g{graph_revision()}_torch")
    assert path.name.endswith("_cpu.pt2") and "+" not in path.name


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    module = SmallTopK().eval()
    image = torch.rand(1, 3, 12, 16, generator=torch.Generator().manual_seed(0))
    path = tmp_path_factory.mktemp("packages") / "small.pt2"
    logs = []
    forward = compiled_package.compiled_forward(module, image, 7, path, logs.append)
    return module, image, path, forward, logs


def test_a_package_computes_what_the_module_computes(built):
    module, image, path, forward, logs = built
    assert path.is_file() and "Compiling small.pt2" in logs[0]
    for got, want in zip(forward(image), module(image, 7)):
        torch.testing.assert_close(got, want)
    other = torch.rand(1, 3, 12, 16)  # not the example it was built with
    for got, want in zip(forward(other), module(other, 7)):
        torch.testing.assert_close(got, want)
    assert sorted(os.listdir(path.parent)) == ["small.pt2"]  # no temporary file left beside it


def test_a_second_start_loads_the_package_without_the_compiler(built):
    module, image, path, forward, logs = built
    script = (
        "import sys, torch\n"
        "from aliked_ros.engines import compiled_package\n"
        f"forward = compiled_package.load_package(compiled_package.Path({str(path)!r}), torch.device('cpu'))\n"
        "keypoints, scores, descriptors = forward(torch.zeros(1, 3, 12, 16))\n"
        "print(tuple(descriptors.shape), 'torch._dynamo' in sys.modules, 'torch._inductor' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[0] == "(7, 3) False False"


def test_a_package_that_does_not_load_is_built_again(built, tmp_path):
    module, image, _, _, _ = built
    path = tmp_path / "damaged.pt2"
    path.write_bytes(b"PK\x03\x04 half a zip")  # a build cut short by a full disk, or a file from elsewhere
    logs = []
    forward = compiled_package.compiled_forward(module, image, 7, path, logs.append)
    assert "does not load" in logs[0] and "compiling it again" in logs[0]
    torch.testing.assert_close(forward(image)[1], module(image, 7)[1])


def test_a_failed_build_leaves_no_file(tmp_path):
    class Untraceable(SmallTopK):
        def forward(self, image, top_k):
            if image.sum() > 0:  # data-dependent control flow: torch.export refuses it
                return super().forward(image, top_k)
            return super().forward(-image, top_k)

    path = tmp_path / "untraceable.pt2"
    with pytest.raises(Exception):
        compiled_package.compiled_forward(Untraceable(), torch.rand(1, 3, 12, 16), 7, path, lambda text: None)
    assert os.listdir(tmp_path) == []


def test_the_engine_compiles_in_process_where_no_package_can_be_written(tmp_path):
    """A cache_dir that cannot hold files (here a file) must not stop the engine: it says why and falls back to
    torch.compile. The compiled path runs on CUDA only, so its per-size step is called directly here."""
    from aliked_ros.engines.torch_engine import TorchExtractor

    not_a_directory = tmp_path / "cache"
    not_a_directory.write_text("a file where the cache should be")
    logs = []
    extractor = TorchExtractor("aliked-t16", 50, device="cpu", cache_dir=not_a_directory, log=logs.append)
    forward = extractor._compile(64, 96, 50)
    assert "No compiled package for 96x64" in logs[-1] and "torch.compile compiles in this process" in logs[-1]
    assert forward is extractor._torch_compiled and extractor._compile(64, 96, 50) is forward
    assert not_a_directory.read_text() == "a file where the cache should be"
