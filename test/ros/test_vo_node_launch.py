"""vo_node for real: KITTI keypoints and CameraInfo in, nav_msgs/Odometry and Path out with forward motion, and
diagnostics. Skips where rclpy (a sourced ROS 2 workspace with aliked_ros built) or the KITTI frames are missing."""

import os
import sys
import unittest

import numpy as np
import pytest

# launch_test loads this file without putting its folder on sys.path, as pytest does: the shared helper is there.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

rclpy = pytest.importorskip("rclpy", reason="needs rclpy: source a ROS 2 workspace where aliked_ros is built")
launch_testing = pytest.importorskip("launch_testing", reason="needs launch_testing (ROS 2)")

import launch  # noqa: E402
from ros_client import ClientNodeTestCase  # noqa: E402  (test/ros/, put on the path above)
from launch_ros.actions import Node  # noqa: E402

KITTI_K = (718.856, 718.856, 607.1928, 185.2157)
FRAMES = 5


def kitti_paths() -> list:
    from aliked_ros.sample_data import dataset_frames

    return dataset_frames("kitti")[:FRAMES]


# Without the frames there is nothing to test: the node is not started at all (a node interrupted while it is still
# loading was this test's only failure), and every test skips.
HAVE_FRAMES = len(kitti_paths()) >= FRAMES
NO_FRAMES = "needs the KITTI frames in ../shared/data/kitti"


@pytest.mark.launch_test
def generate_test_description():
    if HAVE_FRAMES:
        under_test = Node(package="aliked_ros", executable="vo_node", name="vo_node",
                          parameters=[{"diagnostics_period": 0.5}], output="screen")
    else:  # something to keep the launch open while the tests skip (an empty launch ends before they run)
        under_test = launch.actions.TimerAction(period=60.0, actions=[])
    return launch.LaunchDescription([under_test, launch_testing.actions.ReadyToTest()])


class TestVisualOdometryNode(ClientNodeTestCase):
    CLIENT_NAME = "vo_test_client"

    def test_forward_motion_from_kitti_keypoints(self):
        from aliked_ros.engines import create_extractor
        from aliked_ros.imaging import read_image
        from aliked_ros.messages import build_keypoints_message
        from aliked_ros.msg import Keypoints
        from diagnostic_msgs.msg import DiagnosticArray
        from nav_msgs.msg import Odometry, Path
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import CameraInfo
        from std_msgs.msg import Header

        if not HAVE_FRAMES:
            self.skipTest(NO_FRAMES)
        paths = kitti_paths()
        extractor = create_extractor("torch", model="aliked-t16", top_k=1000, device="cpu")
        features = [extractor.extract(read_image(path)) for path in paths]

        odometry, paths_received, diagnostics = [], [], []
        self.node.create_subscription(Odometry, "/odometry", odometry.append, 10)
        self.node.create_subscription(Path, "/path", paths_received.append, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        info_publisher = self.node.create_publisher(CameraInfo, "/camera_info", qos_profile_sensor_data)
        keypoints_publisher = self.node.create_publisher(Keypoints, "/keypoints", 10)
        self.assertTrue(self.spin_until(lambda: keypoints_publisher.get_subscription_count() > 0, 30.0))

        fx, fy, cx, cy = KITTI_K
        info = CameraInfo(height=376, width=1241, distortion_model="plumb_bob")
        info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
        info.d = [0.0] * 5
        for index, frame in enumerate(features):
            info_publisher.publish(info)
            self.spin_until(lambda: False, 0.3)
            header = Header(frame_id="camera")
            header.stamp.sec, header.stamp.nanosec = 10 + index // 10, (index % 10) * 100_000_000
            keypoints_publisher.publish(build_keypoints_message(Keypoints, header, frame, "aliked-t16"))
            self.spin_until(lambda: len(odometry) > index, 10.0)
        self.assertTrue(self.spin_until(lambda: len(odometry) >= FRAMES, 20.0), f"{len(odometry)} odometry messages")

        last = odometry[-1]
        self.assertEqual((last.header.frame_id, last.child_frame_id), ("odom", "camera"))
        position = np.array([last.pose.pose.position.x, last.pose.pose.position.y, last.pose.pose.position.z])
        # KITTI's car drives forward: the camera moves along its own +z, one unit per step (no scale given).
        self.assertGreater(position[2], 0.9 * (FRAMES - 1))
        self.assertLess(abs(position[0]) + abs(position[1]), 0.5 * (FRAMES - 1))
        self.assertTrue(self.spin_until(lambda: paths_received and len(paths_received[-1].poses) == FRAMES, 5.0))
        self.assertTrue(self.spin_until(
            lambda: any(s.name.startswith("vo_node") and any(v.key == "inliers" for v in s.values)
                        for a in diagnostics for s in a.status), 10.0))


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code_and_no_traceback(self, proc_info, proc_output):
        if not HAVE_FRAMES:
            self.skipTest(NO_FRAMES)
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"))
