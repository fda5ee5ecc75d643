"""Every dependency key of package.xml resolves with rosdep, for Humble on Ubuntu jammy and Jazzy on Ubuntu noble,
whichever engine ALIKED_ROS_ENGINE selects. Checked without ROS and without a network, against a copy of
ros/rosdistro's rosdep rules and distribution files in ``../shared/rosdistro`` (or ``ALIKED_ROS_ROSDISTRO``);
skips where it is absent.

A key resolves when it is a package released in the distribution file of that ROS 2 distribution, or a rosdep key
whose rule for the platform names something to install (apt packages, or pip packages for a ``-pip`` key)."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
catkin_pkg = pytest.importorskip("catkin_pkg.package", reason="needs catkin_pkg (pip install catkin_pkg)")

ROSDISTRO = Path(os.environ.get("ALIKED_ROS_ROSDISTRO", ROOT.parent / "shared" / "rosdistro"))
PLATFORMS = {"humble": ("ubuntu", "jammy"), "jazzy": ("ubuntu", "noble")}
ENGINES = ("", "torch", "onnxruntime", "tensorrt")  # ALIKED_ROS_ENGINE when rosdep runs; "" = unset
INSTALLERS = {"apt", "pip", "source", "snap"}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where PyYAML has it: the files are large

pytestmark = [
    pytest.mark.skipif(not (ROSDISTRO / "rosdep_base.yaml").is_file(),
                       reason=f"needs ros/rosdistro's rosdep files in {ROSDISTRO}"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # catkin_pkg's conditions on a newer pyparsing
]


@functools.lru_cache(maxsize=None)
def rosdep_rules() -> dict:
    rules = {}
    for name in ("rosdep_base.yaml", "rosdep_python.yaml"):
        rules.update(yaml.load((ROSDISTRO / name).read_text(), Loader=_LOADER))
    return rules


@functools.lru_cache(maxsize=None)
def distribution(distro: str) -> dict:
    return yaml.load((ROSDISTRO / f"{distro}_distribution.yaml").read_text(), Loader=_LOADER)


def released_packages(distro: str) -> set[str]:
    data = distribution(distro)
    packages = set()
    for name, repository in data["repositories"].items():
        release = repository.get("release")
        if release and release.get("version"):
            packages.update(release.get("packages", [name]))
    return packages


def release_platform(distro: str) -> dict:
    return distribution(distro)["release_platforms"]


def _installs(rule) -> list[str]:
    """What a rule (already narrowed to one OS version) installs; [] where it installs nothing."""
    if rule is None:
        return []
    if isinstance(rule, str):
        return rule.split()
    if isinstance(rule, list):
        return [str(item) for item in rule]
    if isinstance(rule, dict):
        if "packages" in rule:
            return _installs(rule["packages"])
        installers = [key for key in rule if key in INSTALLERS]
        if installers:
            return [package for key in installers for package in _installs(rule[key])]
    return []


def resolve(rules: dict, key: str, os_name: str, codename: str) -> list[str]:
    """rosdep's resolution of ``key`` on ``os_name`` ``codename``: the packages it installs, [] if none."""
    definition = rules.get(key)
    if not isinstance(definition, dict):
        return []
    by_os = definition.get(os_name, definition.get("*"))
    if isinstance(by_os, dict) and not any(name in INSTALLERS or name == "packages" for name in by_os):
        by_os = by_os.get(codename, by_os.get("*"))  # per-version rules; null means "not on this version"
    return _installs(by_os)


def dependency_keys(distro: str, engine: str) -> dict[str, str]:
    """Every key package.xml declares for ``distro`` with ALIKED_ROS_ENGINE=``engine``, with its kind."""
    package = catkin_pkg.parse_package(str(ROOT / "package.xml"))
    package.evaluate_conditions({"ROS_DISTRO": distro, "ROS_VERSION": "2", "ROS_PYTHON_VERSION": "3",
                                 "ALIKED_ROS_ENGINE": engine})
    kinds = {"buildtool_depends": package.buildtool_depends, "build_depends": package.build_depends,
             "build_export_depends": package.build_export_depends, "exec_depends": package.exec_depends,
             "test_depends": package.test_depends, "doc_depends": package.doc_depends}
    return {dependency.name: kind for kind, dependencies in kinds.items() for dependency in dependencies
            if dependency.evaluated_condition is not False}


def test_the_platforms_are_the_distributions_own():
    for distro, (os_name, codename) in PLATFORMS.items():
        assert codename in release_platform(distro)[os_name]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("distro", sorted(PLATFORMS))
def test_every_key_resolves(distro, engine):
    rules, packages = rosdep_rules(), released_packages(distro)
    os_name, codename = PLATFORMS[distro]
    keys = dependency_keys(distro, engine)
    assert "rclpy" in keys and "python3-numpy" in keys
    unresolved = [f"{key} ({kind})" for key, kind in sorted(keys.items())
                  if key not in packages and not resolve(rules, key, os_name, codename)]
    assert not unresolved, f"keys rosdep cannot resolve for {distro} on {os_name} {codename}: {unresolved}"


@pytest.mark.parametrize("distro", sorted(PLATFORMS))
def test_one_torch_per_distribution_and_none_for_the_other_engines(distro):
    torch_keys = {"python3-torch", "python3-pytorch-pip"}
    for engine in ("", "torch"):
        keys = dependency_keys(distro, engine)
        assert len(torch_keys & set(keys)) == 1 and "python3-kornia-pip" in keys
    for engine in ("onnxruntime", "tensorrt"):
        assert not torch_keys & set(dependency_keys(distro, engine))
    assert "python3-onnxruntime-gpu-pip" in dependency_keys(distro, "onnxruntime")


def test_humble_gets_a_torch_new_enough():
    """jammy's apt python3-torch is 1.8; the package needs torch >= 2.1, so Humble takes the pip key."""
    assert "python3-pytorch-pip" in dependency_keys("humble", "")
    assert resolve(rosdep_rules(), "python3-pytorch-pip", "ubuntu", "jammy") == ["torch", "torchvision"]
    assert "python3-torch" in dependency_keys("jazzy", "")


def test_opencv_is_the_distributions_and_pip_stays_below_5():
    """cv_bridge is built on the distribution's OpenCV 4; pip's opencv-python-headless 5 renumbered the types."""
    assert "python3-opencv" in dependency_keys("humble", "")
    requirement = re.search(r'"opencv-python-headless([^"]*)"', (ROOT / "pyproject.toml").read_text())
    assert requirement and "<5" in requirement.group(1).replace(" ", "")


def test_resolver_reads_rosdep_rules_as_rosdep_does():
    rules = {
        "apt-list": {"ubuntu": ["a", "b"]},
        "per-version": {"ubuntu": {"*": ["new"], "focal": None}},
        "pip-everywhere": {"*": {"pip": {"packages": ["p"]}}},
        "pip-ubuntu": {"ubuntu": {"pip": {"packages": ["q"]}}},
        "other-os": {"debian": ["d"]},
    }
    assert resolve(rules, "apt-list", "ubuntu", "jammy") == ["a", "b"]
    assert resolve(rules, "per-version", "ubuntu", "noble") == ["new"]
    assert resolve(rules, "per-version", "ubuntu", "focal") == []
    assert resolve(rules, "pip-everywhere", "ubuntu", "jammy") == ["p"]
    assert resolve(rules, "pip-ubuntu", "ubuntu", "noble") == ["q"]
    assert resolve(rules, "other-os", "ubuntu", "noble") == []
    assert resolve(rules, "missing", "ubuntu", "noble") == []
