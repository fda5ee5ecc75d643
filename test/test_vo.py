"""Visual odometry: rotations and TUM files, the motion of a synthetic scene with known poses (conventions pinned),
degenerate pairs, the KITTI frames (forward motion, consistent rotations, fp16), and `aliked-ros vo` on an image bag,
a Keypoints bag and a folder."""

from __future__ import annotations

import contextlib
import io
import math
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from aliked_ros import vo
from aliked_ros.cli import main
from aliked_ros.errors import AlikedError
from aliked_ros.features import Features
from aliked_ros.sample_data import dataset_frames

KITTI_INTRINSICS = "718.856,718.856,607.1928,185.2157"
KITTI_P0 = "P0: 7.188560e+02 0 6.071928e+02 0 0 7.188560e+02 1.852157e+02 0 0 0 1 0"
NETWORK = ("--model", "aliked-t16", "--top-k", "1000", "--device", "cpu")
CLI_FRAMES = 6


def random_rotation(rng) -> np.ndarray:
    axis = rng.normal(size=3)
    angle = rng.uniform(0, math.pi)
    return cv2.Rodrigues(axis / np.linalg.norm(axis) * angle)[0]


def yaw(degrees: float) -> np.ndarray:
    return cv2.Rodrigues(np.array([0.0, math.radians(degrees), 0.0]))[0]


# --- rotations and files -------------------------------------------------------------------------------------------


def test_quaternions_round_trip():
    rng = np.random.default_rng(0)
    rotations = [random_rotation(rng) for _ in range(200)]
    rotations += [np.eye(3), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]
    for rotation in rotations:
        quaternion = vo.rotation_to_quaternion(rotation)
        assert quaternion[3] >= 0 and math.isclose(np.linalg.norm(quaternion), 1.0)
        assert np.allclose(vo.quaternion_to_rotation(quaternion), rotation, atol=1e-12)
    # (qx, qy, qz, qw) order and Hamilton sign: 90° about z is (0, 0, sin 45°, cos 45°).
    about_z = cv2.Rodrigues(np.array([0.0, 0.0, math.pi / 2]))[0]
    assert np.allclose(vo.rotation_to_quaternion(about_z), [0, 0, math.sqrt(0.5), math.sqrt(0.5)])
    assert math.isclose(vo.rotation_angle_deg(about_z), 90.0)


def test_tum_and_kitti_files_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    trajectory = vo.Trajectory()
    for index in range(5):
        pose = np.eye(4)
        pose[:3, :3] = random_rotation(rng)
        pose[:3, 3] = rng.normal(size=3) * 10
        trajectory.append(1305031102.175304 + 0.1 * index, pose)
    vo.write_tum(tmp_path / "trajectory.txt", trajectory)
    back = vo.read_tum(tmp_path / "trajectory.txt")
    assert np.allclose(back.stamps, trajectory.stamps, rtol=0, atol=1e-6)
    assert all(np.allclose(a, b, atol=1e-7) for a, b in zip(back.poses, trajectory.poses, strict=True))
    vo.write_kitti(tmp_path / "poses.txt", trajectory)
    rows = np.loadtxt(tmp_path / "poses.txt")
    assert rows.shape == (5, 12) and np.allclose(rows.reshape(5, 3, 4), np.array(trajectory.poses)[:, :3], atol=1e-7)
    with pytest.raises(AlikedError, match="must increase"):
        trajectory.append(0.0, np.eye(4))
    (tmp_path / "bad.txt").write_text("1.0 2.0 3.0\n")
    with pytest.raises(AlikedError, match="timestamp tx ty tz qx qy qz qw"):
        vo.read_tum(tmp_path / "bad.txt")


# --- a synthetic scene with known poses ----------------------------------------------------------------------------


class Scene:
    """Random 3D points seen by cameras with known camera-to-world poses; every point has one descriptor in every
    view, so mutual nearest neighbours match each point with itself."""

    def __init__(self, count: int = 400, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.points = np.column_stack([rng.uniform(-20, 20, count), rng.uniform(-3, 3, count),
                                       rng.uniform(8, 60, count)])
        descriptors = rng.normal(size=(count, 32))
        self.descriptors = (descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)).astype(np.float32)

    def view(self, rotation: np.ndarray, position: np.ndarray, noise_px: float = 0.3) -> Features:
        camera_points = (self.points - position) @ rotation  # R.T (X - C), row-wise
        pixels = camera_points @ vo.KITTI_00_CAMERA_MATRIX.T
        pixels = pixels[:, :2] / pixels[:, 2:]
        pixels += self.rng.normal(scale=noise_px, size=pixels.shape) if noise_px else 0.0
        scores = np.linspace(0.9, 0.1, len(pixels), dtype=np.float32)
        return Features(pixels.astype(np.float32), scores, self.descriptors, 376, 1241)


POSES = [(yaw(0.0), np.zeros(3)), (yaw(3.0), np.array([0.1, 0.0, 1.0])), (yaw(6.0), np.array([0.3, -0.02, 2.0]))]


def test_the_relative_motion_of_known_cameras():
    """OpenCV's convention (x2 = R x1 + t) and the camera's motion (-R.T t: camera 2 seen from camera 1)."""
    scene = Scene()
    (rotation1, position1), (rotation2, position2) = POSES[0], POSES[1]
    relative = vo.estimate_relative_pose(scene.view(rotation1, position1), scene.view(rotation2, position2),
                                         vo.KITTI_00_CAMERA_MATRIX)
    assert relative.valid and relative.failure == "" and relative.inliers > 350
    assert vo.rotation_difference_deg(relative.rotation, rotation2.T @ rotation1) < 0.05
    assert vo.rotation_difference_deg(relative.camera_rotation, rotation1.T @ rotation2) < 0.05
    assert vo.vector_angle_deg(relative.camera_translation, rotation1.T @ (position2 - position1)) < 0.5
    assert math.isclose(np.linalg.norm(relative.translation), 1.0)
    assert relative.camera_translation[2] > 0.99  # forward
    assert relative.in_front > 0.9 * relative.inliers and relative.parallax_px > 5


def test_distorted_keypoints_are_undistorted_for_the_geometry():
    """A TUM fr1-like camera (strong radial distortion): with its coefficients the motion comes back; without them
    it is off."""
    camera = vo.camera_matrix(517.3, 516.5, 318.6, 255.3)
    distortion = np.array([0.2624, -0.9531, -0.0054, 0.0026, 1.1633])
    rng = np.random.default_rng(3)
    points = np.column_stack([rng.uniform(-1.6, 1.6, 500), rng.uniform(-1.2, 1.2, 500), rng.uniform(3, 8, 500)])
    rotation2, position2 = yaw(4.0), np.array([0.3, 0.0, 0.3])
    descriptors = rng.normal(size=(500, 32))
    descriptors = (descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)).astype(np.float32)
    views = []
    for rotation, position in ((np.eye(3), np.zeros(3)), (rotation2, position2)):
        rvec = cv2.Rodrigues(rotation.T)[0]
        pixels = cv2.projectPoints(points, rvec, -rotation.T @ position, camera, distortion)[0].reshape(-1, 2)
        views.append(Features(pixels.astype(np.float32), np.linspace(0.9, 0.1, 500, dtype=np.float32), descriptors,
                              480, 640))
    corrected = vo.estimate_relative_pose(*views, camera, distortion=distortion)
    assert corrected.valid and vo.rotation_difference_deg(corrected.camera_rotation, rotation2) < 0.05
    assert vo.vector_angle_deg(corrected.camera_translation, position2) < 0.3
    ignored = vo.estimate_relative_pose(*views, camera)  # measured: 0.33 deg and 1.1 deg off (0.005, 0.04 above)
    assert vo.rotation_difference_deg(ignored.camera_rotation, rotation2) > 0.15


def test_chained_poses_with_known_scale_give_the_trajectory():
    scene = Scene()
    odometry = vo.VisualOdometry(vo.KITTI_00_CAMERA_MATRIX)
    previous = None
    for index, (rotation, position) in enumerate(POSES):
        scale = None if previous is None else float(np.linalg.norm(position - previous))
        result = odometry.process(scene.view(rotation, position), 10.0 + index, scale)
        assert result.index == index and (index == 0 or result.valid)
        assert vo.rotation_difference_deg(result.pose[:3, :3], rotation) < 0.1
        assert np.linalg.norm(result.pose[:3, 3] - position) < 0.02 * max(1.0, np.linalg.norm(position))
        previous = position
    unit = vo.VisualOdometry(vo.KITTI_00_CAMERA_MATRIX)
    for index, (rotation, position) in enumerate(POSES):
        unit.process(scene.view(rotation, position), 10.0 + index)
    assert math.isclose(unit.trajectory.path_length(), 2.0)  # up to scale: unit steps


def test_degenerate_pairs_leave_the_pose_unchanged_with_a_reason():
    scene = Scene()
    first = scene.view(*POSES[0], noise_px=0.0)
    few = vo.estimate_relative_pose(first[:12], scene.view(*POSES[1])[:12], vo.KITTI_00_CAMERA_MATRIX)
    assert not few.valid and few.failure == "matches" and "only 12 matches" in few.reason

    still = vo.estimate_relative_pose(first, scene.view(*POSES[0], noise_px=0.2), vo.KITTI_00_CAMERA_MATRIX)
    assert not still.valid and still.failure == "parallax" and "standing still" in still.reason

    moved = scene.view(*POSES[1])
    shuffled = Features(moved.keypoints[scene.rng.permutation(len(moved))], moved.scores, moved.descriptors,
                        moved.image_height, moved.image_width)  # every match wrong
    wrong = vo.estimate_relative_pose(first, shuffled, vo.KITTI_00_CAMERA_MATRIX)
    assert not wrong.valid and wrong.failure in ("inliers", "cheirality"), wrong.reason
    assert np.array_equal(wrong.rotation, np.eye(3)) and not wrong.translation.any()

    # Standing still keeps the reference frame: the next frame is measured from it.
    odometry = vo.VisualOdometry(vo.KITTI_00_CAMERA_MATRIX)
    odometry.process(first, 1.0)
    waiting = odometry.process(scene.view(*POSES[0], noise_px=0.2), 2.0)
    assert not waiting.valid and np.array_equal(waiting.pose, np.eye(4))
    resumed = odometry.process(scene.view(*POSES[1]), 3.0)
    assert resumed.valid and resumed.reference_stamp == 1.0
    # Lost tracking restarts from the new frame.
    lost = odometry.process(shuffled, 4.0)
    assert not lost.valid and np.array_equal(lost.pose, resumed.pose) and odometry.reference_stamp == 4.0


def test_bad_settings_are_sentences():
    with pytest.raises(AlikedError, match="fx,fy,cx,cy"):
        vo.parse_intrinsics("718,718,600")
    with pytest.raises(AlikedError, match="3x3"):
        vo.check_camera_matrix(np.eye(4))
    with pytest.raises(AlikedError, match="Unknown estimator"):
        vo.VOOptions(estimator="magic")
    with pytest.raises(AlikedError, match="at least 5"):
        vo.VOOptions(min_inliers=3)
    with pytest.raises(AlikedError, match="reversal_cosine"):
        vo.VOOptions(reversal_cosine=-2)


def test_frames_out_of_order_are_skipped_and_counted():
    scene = Scene()
    odometry = vo.VisualOdometry(vo.KITTI_00_CAMERA_MATRIX)
    odometry.process(scene.view(*POSES[0]), 5.0)
    for stamp in (4.0, 5.0):  # back in time, then the same stamp again
        late = odometry.process(scene.view(*POSES[1]), stamp, scale=-1.0)  # no scale error: nothing is estimated
        assert late.skipped and "not after the previous frame's (5.000000 s): frames out of order" in late.skipped
        assert late.relative is None and not late.valid and "skipped" in vo.describe_frame(late)
    assert odometry.out_of_order_frames == 2 and len(odometry.trajectory) == 1
    resumed = odometry.process(scene.view(*POSES[1]), 6.0)
    assert resumed.valid and resumed.index == 3 and resumed.reference_index == 0


def test_steps_that_reverse_or_jump_are_flagged():
    """Half a metre forward a step, turning 1 deg a step: nothing flagged. A step back reverses the direction; a
    10 deg turn after 1 deg steps is a rotation jump (rate 10 times the median); a first step of 20 deg in 0.1 s
    turns faster than max_rotation_rate_deg_s."""
    scene = Scene(seed=1)

    def run(steps):
        odometry = vo.VisualOdometry(vo.KITTI_00_CAMERA_MATRIX)
        results = [odometry.process(scene.view(yaw(angle), np.array([0.0, 0.0, z])), 1.0 + 0.1 * index)
                   for index, (angle, z) in enumerate(steps)]
        assert all(result.valid for result in results[1:]), [result.relative.reason for result in results[1:]]
        return odometry, results

    smooth = [(index, 0.5 * index) for index in range(6)]
    odometry, results = run(smooth)
    assert odometry.implausible_steps == 0 and not any(result.implausible for result in results)
    odometry, results = run(smooth[:4] + [(3.5, 1.0)])  # back to z = 1.0
    assert odometry.implausible_steps == 1 and "direction of motion reverses" in results[-1].implausible
    assert "implausible: the direction" in vo.describe_frame(results[-1])
    odometry, results = run(smooth[:5] + [(14.0, 2.5)])
    assert odometry.implausible_steps == 1 and "rotates 10.0 deg" in results[-1].implausible
    assert np.allclose(results[-1].pose[:3, 3], [0, 0, 5.0], atol=0.05)  # flagged, not dropped (unit steps)
    # With no steps before it to compare with, a turn of 20 deg in 0.1 s (200 deg/s) is too fast on its own.
    odometry, results = run([(0.0, 0.0), (20.0, 0.5)])
    assert odometry.implausible_steps == 1 and "rotates 20.0 deg in 0.1 s (200 deg/s" in results[-1].implausible


# --- the KITTI frames ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kitti_features() -> list[Features]:
    """KITTI 00 frames 100-107, aliked-t16, K 1000, extracted once."""
    paths = dataset_frames("kitti")
    if len(paths) < 8:
        pytest.skip("the KITTI frames (../shared/data/kitti) are not beside the checkout")
    from aliked_ros.engines import create_extractor
    from aliked_ros.imaging import read_image

    extractor = create_extractor("torch", model="aliked-t16", top_k=1000, device="cpu")
    return [extractor.extract(read_image(path)) for path in paths[:8]]


def test_kitti_motion_is_forward_with_consistent_rotations(kitti_features):
    """Measured on frames 100-119 (aliked-t16, K 1000, usac_accurate): inlier ratio 0.93-0.97, camera z >= 0.98,
    triplet rotation error median 0.013 deg, max 0.035 deg (plain RANSAC: median 0.18, max 0.44)."""
    evaluation = vo.evaluate(kitti_features, vo.KITTI_00_CAMERA_MATRIX)
    assert len(evaluation.valid_pairs) == 7, [row.pose.reason for row in evaluation.pairs]
    for row in evaluation.pairs:
        assert row.pose.inlier_ratio > 0.8 and row.pose.inliers > 500
        assert row.pose.camera_translation[2] > 0.95  # the car drives forward
        assert row.pose.in_front > 0.6 * row.pose.inliers
        assert 1.0 < vo.rotation_angle_deg(row.pose.rotation) < 6.0  # the car turns: a few degrees a frame
    errors = [row.rotation_error_deg for row in evaluation.triplets]
    assert len(errors) == 6 and np.median(errors) < 0.1 and max(errors) < 0.25, errors
    summary = vo.describe_summary(evaluation)
    assert "7/7 pairs valid" in summary and "in 7/7 pairs" in summary


def test_kitti_with_shuffled_descriptors_fails_every_pair(kitti_features):
    """The check a broken matcher would fail: descriptors shuffled within each frame give no pose."""
    rng = np.random.default_rng(0)
    shuffled = [Features(f.keypoints, f.scores, f.descriptors[rng.permutation(len(f))], f.image_height,
                         f.image_width) for f in kitti_features[:4]]
    evaluation = vo.evaluate(shuffled, vo.KITTI_00_CAMERA_MATRIX)
    assert not evaluation.valid_pairs and not evaluation.triplets
    assert all(row.pose.failure in ("inliers", "cheirality") for row in evaluation.pairs)


def test_kitti_odometry_moves_forward_one_unit_a_frame(kitti_features):
    odometry = vo.VisualOdometry(vo.KITTI_00_CAMERA_MATRIX)
    odometry.process(kitti_features[0], 11.0)
    for index, features in enumerate(kitti_features[1:], 1):
        assert odometry.process(features, 11.0 + 0.1 * index).valid
    poses = odometry.trajectory.poses
    for before, after in zip(poses, poses[1:]):  # each step ahead of the camera it starts from
        assert (before[:3, :3].T @ (after[:3, 3] - before[:3, 3]))[2] > 0.95
    assert math.isclose(odometry.trajectory.path_length(), 7.0)
    assert 15 < vo.rotation_angle_deg(poses[-1][:3, :3]) < 30  # frames 100-107 are in a turn: about 3 deg a frame


def test_kitti_frames_out_of_order_are_implausible(kitti_features):
    """In order nothing is flagged (over frames 100-119, K 500: consecutive directions have cosine >= 0.995, rotation
    rates at most 1.2 times the median); shuffled under increasing stamps, the direction reverses (cosine -0.9 to
    -1.0) in about half the steps."""
    def run(order):
        odometry = vo.VisualOdometry(vo.KITTI_00_CAMERA_MATRIX)
        results = [odometry.process(kitti_features[i], 11.0 + 0.1 * t) for t, i in enumerate(order)]
        return odometry, results

    odometry, _ = run(range(8))
    assert odometry.valid_steps == 7 and odometry.implausible_steps == 0
    odometry, results = run([0, 4, 1, 5, 2, 6, 3, 7])
    assert odometry.valid_steps == 7 and odometry.implausible_steps >= 4, [r.implausible for r in results]
    assert sum("reverses" in result.implausible for result in results) >= 4


@pytest.mark.slow
def test_kitti_fp16_features_give_the_same_motion(kitti_features):
    """fp16 on the CPU is slow (about 4 s a frame): three frames. Measured over 19 pairs: rotation difference median
    0.007 deg, max 0.037; translation direction median 0.15 deg, max 1.05 (the spread of the estimator itself when
    only the order of the matches changes: 0.007 / 0.19 deg)."""
    from aliked_ros.engines import create_extractor
    from aliked_ros.imaging import read_image

    extractor = create_extractor("torch", model="aliked-t16", top_k=1000, device="cpu", precision="fp16")
    half = [extractor.extract(read_image(path)) for path in dataset_frames("kitti")[:3]]
    rows = vo.compare_evaluations(vo.evaluate(kitti_features[:3], vo.KITTI_00_CAMERA_MATRIX),
                                  vo.evaluate(half, vo.KITTI_00_CAMERA_MATRIX))
    assert len(rows) == 2
    assert all(row.rotation_difference_deg < 0.1 and row.translation_difference_deg < 2.0 for row in rows), rows


# --- aliked-ros vo -------------------------------------------------------------------------------------------------


def run_cli(*args) -> int:
    return main([str(arg) for arg in args])


@pytest.fixture(scope="module")
def kitti_sequence(tmp_path_factory) -> Path:
    """The first KITTI frames as a sequence folder with image_0/ and calib.txt (no times.txt: 10 Hz)."""
    paths = dataset_frames("kitti")
    if len(paths) < CLI_FRAMES:
        pytest.skip("the KITTI frames (../shared/data/kitti) are not beside the checkout")
    root = tmp_path_factory.mktemp("kitti") / "00"
    (root / "image_0").mkdir(parents=True)
    for path in paths[:CLI_FRAMES]:
        shutil.copy(path, root / "image_0" / path.name)
    (root / "calib.txt").write_text(KITTI_P0 + "\n")
    return root


@pytest.fixture(scope="module")
def kitti_bags(kitti_sequence, tmp_path_factory) -> dict[str, Path]:
    """An image bag (with CameraInfo) from images-to-bag and its Keypoints bag from process-bag."""
    directory = tmp_path_factory.mktemp("bags")
    images, keypoints = directory / "images", directory / "keypoints"
    assert run_cli("images-to-bag", kitti_sequence, "--output", images) == 0
    assert run_cli("process-bag", images, "--output", keypoints, *NETWORK, "--precision", "fp32") == 0
    return {"images": images, "keypoints": keypoints}


@pytest.fixture(scope="module")
def image_bag_run(kitti_bags, tmp_path_factory) -> dict:
    """`aliked-ros vo` over the image bag, once: its exit code, output, trajectory and KITTI poses."""
    directory = tmp_path_factory.mktemp("vo")
    output, poses = directory / "trajectory.txt", directory / "poses.txt"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli("vo", kitti_bags["images"], "--output", output, "--kitti-output", poses, *NETWORK,
                       "--evaluate")
    return {"code": code, "out": out.getvalue(), "err": err.getvalue(), "trajectory": output, "poses": poses}


def test_vo_on_an_image_bag_uses_its_camera_info(image_bag_run):
    assert image_bag_run["code"] == 0, image_bag_run["err"]
    out, err = image_bag_run["out"], image_bag_run["err"]
    assert "intrinsics from CameraInfo on /kitti/camera_gray_left/camera_info" in err
    assert len(re.findall(r"^frame \d+ .* inliers \(\d+%\)", out, re.MULTILINE)) == CLI_FRAMES - 1
    assert "not updated" not in out
    assert "| 0-1-2 |" in out and f"{CLI_FRAMES - 1}/{CLI_FRAMES - 1} pairs valid" in out
    trajectory = vo.read_tum(image_bag_run["trajectory"])
    assert len(trajectory) == CLI_FRAMES and np.allclose(trajectory.stamps, 11.0 + 0.1 * np.arange(CLI_FRAMES))
    poses = trajectory.poses
    assert all((a[:3, :3].T @ (b[:3, 3] - a[:3, 3]))[2] > 0.95 for a, b in zip(poses, poses[1:]))
    assert np.loadtxt(image_bag_run["poses"]).shape == (CLI_FRAMES, 12)


def test_vo_on_a_keypoints_bag_gives_the_same_trajectory(kitti_bags, image_bag_run, tmp_path, capsys):
    from_keypoints = tmp_path / "from_keypoints.txt"
    assert run_cli("vo", kitti_bags["keypoints"], "--output", from_keypoints) == 2  # no CameraInfo in it
    assert "No CameraInfo for /keypoints" in capsys.readouterr().err
    assert run_cli("vo", kitti_bags["keypoints"], "--output", from_keypoints, "--intrinsics", KITTI_INTRINSICS,
                   "--ratio", "0.95") == 0
    assert "Keypoints messages of /keypoints" in capsys.readouterr().err
    assert run_cli("vo", kitti_bags["keypoints"], "--output", from_keypoints, "--intrinsics", KITTI_INTRINSICS) == 2
    assert "exists; choose another --output or add --overwrite" in capsys.readouterr().err
    assert run_cli("vo", kitti_bags["keypoints"], "--output", from_keypoints, "--intrinsics", KITTI_INTRINSICS,
                   "--overwrite") == 0
    first, second = vo.read_tum(image_bag_run["trajectory"]), vo.read_tum(from_keypoints)
    assert first.stamps == second.stamps
    assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(first.poses, second.poses, strict=True))


def test_vo_on_a_folder_of_images(kitti_sequence, tmp_path, capsys):
    output = tmp_path / "trajectory.txt"
    assert run_cli("vo", kitti_sequence, "--output", output, *NETWORK, "--max-frames", "3", "--speed", "8.5") == 0
    err = capsys.readouterr().err
    assert "kitti-P0 of the sequence" in err and "the first 3 used" in err
    trajectory = vo.read_tum(output)
    assert len(trajectory) == 3 and math.isclose(trajectory.path_length(), 2 * 0.85, rel_tol=1e-6)


def rewrite_keypoints_bag(source: Path, destination: Path, order: list[int], stamps: list[int] | None = None):
    """``source``'s Keypoints messages in ``order``; each header stamp is the one of the message at that place in
    ``source`` (time goes on while the content jumps), or ``stamps`` (ns) where given."""
    import dataclasses

    from rosbags.rosbag2 import StoragePlugin, Writer

    from aliked_ros import bags
    from aliked_ros.messages import KEYPOINTS_MSGTYPE

    with bags.open_bag(source) as reader:
        messages = [message for _, message in bags.read_messages(reader, "/keypoints")]
    stamps = stamps or [bags.stamp_to_ns(message.header.stamp) for message in messages]
    writer = Writer(destination, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    connection = writer.add_connection("/keypoints", KEYPOINTS_MSGTYPE, typestore=bags.typestore())
    for place, (index, stamp) in enumerate(zip(order, stamps, strict=True)):
        message = messages[index]
        time = dataclasses.replace(message.header.stamp, sec=stamp // 10**9, nanosec=stamp % 10**9)
        message = dataclasses.replace(message, header=dataclasses.replace(message.header, stamp=time))
        writer.write(connection, 10**9 + place, bags.typestore().serialize_cdr(message, KEYPOINTS_MSGTYPE))
    writer.close()
    return destination


def test_vo_warns_about_frames_out_of_order(kitti_bags, tmp_path, capsys):
    """Defect: shuffled frames gave "5 of 5 steps estimated" with the direction flipping and no warning."""
    def run(bag):
        output = tmp_path / f"{bag.name}.txt"
        assert run_cli("vo", bag, "--output", output, "--intrinsics", KITTI_INTRINSICS) == 0
        captured = capsys.readouterr()
        return captured.out, captured.err

    out, err = run(kitti_bags["keypoints"])  # in order: no warning
    assert "warning" not in err and "implausible" not in out, err
    assert re.search(r"6 frames, 5 of 5 steps estimated; path length", out)

    out, err = run(rewrite_keypoints_bag(kitti_bags["keypoints"], tmp_path / "shuffled", [0, 3, 1, 4, 2, 5]))
    flagged = re.findall(r"warning: implausible step from frame (\d) \(.*\) to frame (\d) .*: the direction of "
                         r"motion reverses .*Likely causes: frames out of order", err)
    assert len(flagged) >= 3, err
    count = int(re.search(r"5 of 5 steps estimated, (\d) of them implausible", out).group(1))
    assert count == len(flagged)

    stamps = [11_000_000_000 + 100_000_000 * place for place in (0, 1, 2, 3, 1, 4)]  # the fifth goes back
    out, err = run(rewrite_keypoints_bag(kitti_bags["keypoints"], tmp_path / "back", [0, 1, 2, 3, 4, 5], stamps))
    assert "warning: frame 4 (11.100000 s) skipped: its stamp 11.100000 s is not after the previous frame's " \
           "(11.300000 s): frames out of order" in err
    assert "5 frames, 4 of 4 steps estimated, 1 frame skipped (stamps not after the previous frame's)" in out


def test_vo_on_a_bag_without_frames_says_so(tmp_path, capsys):
    """A bag with a Keypoints connection and no message (was: "no sensor_msgs/Image topic"), and one with nothing."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from aliked_ros import bags
    from aliked_ros.messages import KEYPOINTS_MSGTYPE

    empty, bare = tmp_path / "empty", tmp_path / "bare"
    for path, topics in ((empty, {"/keypoints": KEYPOINTS_MSGTYPE, "/camera_info": bags.CAMERA_INFO_MSGTYPE}),
                         (bare, {})):
        writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        writer.open()
        for topic, msgtype in topics.items():
            writer.add_connection(topic, msgtype, typestore=bags.typestore())
        writer.close()
    output = tmp_path / "trajectory.txt"
    for args, message in (
            ((empty,), "The bag holds no Keypoints and no image messages (its topics: /camera_info (CameraInfo, "
                       "0 messages), /keypoints (Keypoints, 0 messages))"),
            ((empty, "--intrinsics", KITTI_INTRINSICS), "holds no Keypoints and no image messages"),
            ((bare,), "The bag holds no Keypoints and no image messages (its topics: none)"),
            ((empty, "--topic", "/keypoints"), "The topic /keypoints of the bag holds no message")):
        assert run_cli("vo", *args, "--output", output) == 2
        error = capsys.readouterr().err
        assert message in error and "sensor_msgs/Image" not in error, error
    assert not output.exists()


def test_vo_bad_input(kitti_sequence, kitti_bags, tmp_path, capsys):
    output = tmp_path / "trajectory.txt"
    cases = [
        ((tmp_path / "missing", "--output", output), "does not exist"),
        ((kitti_sequence, "--output", output, "--intrinsics", "1,2,3"), "fx,fy,cx,cy"),
        ((kitti_sequence, "--output", output, "--intrinsics", KITTI_INTRINSICS, "--calib",
          kitti_sequence / "calib.txt"), "not both"),
        ((kitti_sequence, "--output", tmp_path / "no" / "trajectory.txt"), "does not exist"),
        ((kitti_sequence, "--output", output, "--distortion", "0.1,0,0,0"), "goes with --intrinsics"),
        ((kitti_sequence, "--output", output, "--intrinsics", KITTI_INTRINSICS, "--distortion", "0.1"), "4, 5 or 8"),
        ((kitti_sequence, "--output", output, "--intrinsics", "500,500,2000,100", *NETWORK, "--max-frames", "2"),
         "outside the 1241x376 frames"),
        ((kitti_bags["keypoints"], "--output", output, "--intrinsics", KITTI_INTRINSICS, "--compare-fp16"),
         "--compare-fp16"),
        ((kitti_bags["keypoints"], "--output", output, "--intrinsics", KITTI_INTRINSICS, "--min-inlier-ratio", "2"),
         "min_inlier_ratio"),
    ]
    for args, message in cases:
        assert run_cli("vo", *args) == 2, args
        error = capsys.readouterr().err
        assert message in error and "Traceback" not in error, (args, error)
    assert not output.exists()


def test_vo_lightglue_refuses_64_dimensional_descriptors(kitti_bags, tmp_path, capsys):
    pytest.importorskip("kornia")
    from aliked_ros.matching import resolve_lightglue_weights

    try:
        resolve_lightglue_weights(allow_download=False)
    except AlikedError:
        pytest.skip("LightGlue's ALIKED weights are not at hand")
    assert run_cli("vo", kitti_bags["keypoints"], "--output", tmp_path / "t.txt", "--intrinsics", KITTI_INTRINSICS,
                   "--matcher", "lightglue", "--matcher-device", "cpu") == 2
    assert "128-dimensional" in capsys.readouterr().err
