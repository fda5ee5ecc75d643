"""The node for real: aliked.launch.py started by launch_testing, images published, Keypoints and diagnostics
received, parameters changed at run time. Skips where rclpy (a sourced ROS 2 workspace with aliked_ros built) is
missing; runs with `colcon test` or with pytest in a sourced workspace."""

import os
import sys
import tempfile
import time
import unittest

import numpy as np
import pytest

# launch_test loads this file without putting its folder on sys.path, as pytest does: the shared helper is there.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

rclpy = pytest.importorskip("rclpy", reason="needs rclpy: source a ROS 2 workspace where aliked_ros is built")
launch_testing = pytest.importorskip("launch_testing", reason="needs launch_testing (ROS 2)")

import launch  # noqa: E402
from ros_client import ClientNodeTestCase  # noqa: E402  (test/ros/, put on the path above)
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_ros.substitutions import FindPackageShare  # noqa: E402
from launch.substitutions import PathJoinSubstitution  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rcl_interfaces.srv import SetParameters  # noqa: E402

TOP_K = 300
PARAMS = """/**:
  ros__parameters:
    model: aliked-t16
    engine: torch
    device: cpu
    precision: fp32
    top_k: %d
    image_height: 240
    image_width: 320
    diagnostics_period: 0.5
    publish_debug_image: true
    debug_image_rate: 10.0
""" % TOP_K


def test_frame() -> np.ndarray:
    from aliked_ros.imaging import read_image
    from aliked_ros.sample_data import dataset_frames

    paths = dataset_frames("tum")
    if paths:
        return np.ascontiguousarray(read_image(paths[0])[:240, :320])
    rng = np.random.default_rng(0)
    return np.ascontiguousarray(
        np.kron(rng.integers(0, 256, (30, 40, 3)), np.ones((8, 8, 1))).astype(np.uint8))


@pytest.mark.launch_test
def generate_test_description():
    params_file = os.path.join(tempfile.mkdtemp(), "params.yaml")
    with open(params_file, "w") as file:
        file.write(PARAMS)
    launch_file = PathJoinSubstitution([FindPackageShare("aliked_ros"), "launch", "aliked.launch.py"])
    aliked = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(launch_file),
        launch_arguments={"params_file": params_file, "image_topic": "/camera/image", "namespace": "vo"}.items(),
    )
    return launch.LaunchDescription([aliked, launch_testing.actions.ReadyToTest()])


class TestAlikedNode(ClientNodeTestCase):
    CLIENT_NAME = "aliked_test_client"

    def test_keypoints_diagnostics_and_parameters(self):
        from aliked_ros.msg import Keypoints
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        received, diagnostics, debug_images = [], [], []
        self.node.create_subscription(Keypoints, "/vo/keypoints", received.append, 10)
        self.node.create_subscription(Image, "/vo/aliked_node/debug_image", debug_images.append, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", diagnostics.append, 10)
        publisher = self.node.create_publisher(Image, "/camera/image", qos_profile_sensor_data)
        frame = test_frame()
        height, width = frame.shape[:2]

        def publish(stamp_sec: int):
            image = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                          data=frame.tobytes())
            image.header.stamp.sec = stamp_sec
            image.header.frame_id = "camera"
            publisher.publish(image)

        # The engine loads and warms up on its own thread: publish until keypoints come back.
        deadline = time.monotonic() + 240
        stamp = 100
        while not received and time.monotonic() < deadline:
            publish(stamp)
            stamp += 1
            self.spin_until(lambda: bool(received), 1.0)
        self.assertTrue(received, "no Keypoints message within 240 s")
        message = received[-1]
        self.assertEqual(message.header.frame_id, "camera")
        self.assertGreaterEqual(message.header.stamp.sec, 100)
        self.assertEqual((message.height, message.width, message.model, message.descriptor_size),
                         (height, width, "aliked-t16", 64))
        count = len(message.scores)
        self.assertTrue(0 < count <= TOP_K)
        self.assertEqual(len(message.keypoints), 2 * count)
        descriptors = np.asarray(message.descriptors, dtype=np.float32).reshape(count, 64)
        self.assertTrue(np.allclose(np.linalg.norm(descriptors, axis=1), 1, atol=1e-4))

        self.assertTrue(self.spin_until(
            lambda: any("aliked" in status.name for array in diagnostics for status in array.status), 10.0))
        self.assertTrue(self.spin_until(lambda: bool(debug_images), 10.0), "no ~/debug_image")
        self.assertEqual((debug_images[-1].height, debug_images[-1].width, debug_images[-1].encoding),
                         (height, width, "bgr8"))
        status = [s for array in diagnostics for s in array.status if "aliked" in s.name][-1]
        self.assertIn("processing_p50_ms", {value.key for value in status.values})
        self.assertIn("compiling_in_background", {value.key for value in status.values})

        # score_threshold changes at run time; top_k needs a new engine and is refused with a reason.
        client = self.node.create_client(SetParameters, "/vo/aliked_node/set_parameters")
        self.assertTrue(client.wait_for_service(timeout_sec=10))
        threshold = round(float(np.median(message.scores)), 3)  # about half of the keypoints stay
        request = SetParameters.Request(parameters=[
            Parameter("score_threshold", value=threshold).to_parameter_msg(),
            Parameter("top_k", value=10).to_parameter_msg(),
        ])
        future = client.call_async(request)
        self.assertTrue(self.spin_until(future.done, 10.0))
        results = future.result().results
        self.assertTrue(results[0].successful)
        self.assertFalse(results[1].successful)
        received.clear()
        publish(500)
        self.assertTrue(self.spin_until(lambda: any(m.header.stamp.sec == 500 for m in received), 30.0))
        thresholded = [m for m in received if m.header.stamp.sec == 500][0]
        self.assertTrue(all(score > threshold for score in thresholded.scores))
        self.assertLess(len(thresholded.scores), count)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code_and_no_traceback(self, proc_info, proc_output):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"))
