"""aliked_node interrupted while a frame is in the engine: SIGINT lands mid-frame, the worker is stopped and joined
before the node and its context go away, nothing is published on a dead context, and the node exits 0 without a
traceback (it once died with "RCLError: Failed to publish: publisher's context is invalid"). Skips where rclpy (a
sourced ROS 2 workspace with aliked_ros built) is missing; needs no data."""

import os
import signal
import sys
import time
import unittest

import numpy as np
import pytest

# launch_test loads this file without putting its folder on sys.path, as pytest does: the shared helper is there.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

rclpy = pytest.importorskip("rclpy", reason="needs rclpy: source a ROS 2 workspace where aliked_ros is built")
launch_testing = pytest.importorskip("launch_testing", reason="needs launch_testing (ROS 2)")

import launch  # noqa: E402
import launch_testing.markers  # noqa: E402
from launch_ros.actions import Node  # noqa: E402
from ros_client import ClientNodeTestCase  # noqa: E402  (test/ros/, put on the path above)

SMALL, LARGE = (240, 320), (720, 960)
BUSY_SECONDS = 1.5  # the interrupted frame is scaled up from LARGE to keep the engine busy about this long


def frame(size) -> np.ndarray:
    rng = np.random.default_rng(size[0])
    blocks = rng.integers(0, 256, (size[0] // 8, size[1] // 8, 3))
    return np.ascontiguousarray(np.kron(blocks, np.ones((8, 8, 1))).astype(np.uint8))


@pytest.mark.launch_test
@launch_testing.markers.keep_alive  # the node is meant to exit before the test ends
def generate_test_description():
    aliked = Node(package="aliked_ros", executable="aliked_node", name="aliked_node", output="screen",
                  parameters=[{"model": "aliked-t16", "engine": "torch", "device": "cpu", "precision": "fp32",
                               "top_k": 300, "image_height": 0, "image_width": 0, "qos_reliability": "reliable"}])
    return launch.LaunchDescription([aliked, launch_testing.actions.ReadyToTest()]), {"aliked": aliked}


class TestInterruptWhileProcessing(ClientNodeTestCase):
    CLIENT_NAME = "shutdown_test_client"

    def test_sigint_while_a_frame_is_in_the_engine(self, proc_info, aliked):
        from aliked_ros.msg import Keypoints
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        received = []
        self.node.create_subscription(Keypoints, "/keypoints", received.append, 10)
        publisher = self.node.create_publisher(Image, "/image", QoSProfile(depth=1,
                                                                            reliability=ReliabilityPolicy.RELIABLE))

        def publish(pixels, stamp_sec):
            height, width = pixels.shape[:2]
            image = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                          data=pixels.tobytes())
            image.header.stamp.sec = stamp_sec
            publisher.publish(image)

        def arrived(stamp_sec):
            return any(message.header.stamp.sec == stamp_sec for message in received)

        small, large = frame(SMALL), frame(LARGE)
        deadline, stamp = time.monotonic() + 240, 100
        while not received and time.monotonic() < deadline:  # the engine loads on the worker: until it answers
            publish(small, stamp)
            stamp += 1
            self.spin_until(lambda: bool(received), 1.0)
        self.assertTrue(received, "no Keypoints message within 240 s")

        def seconds_for(pixels, stamp_sec):
            start = time.monotonic()
            publish(pixels, stamp_sec)
            self.assertTrue(self.spin_until(lambda: arrived(stamp_sec), 60.0), "no Keypoints for a large frame")
            return time.monotonic() - start

        # How long a large frame takes (the second one: the first may still warm up); a frame scaled to keep the engine
        # busy about BUSY_SECONDS (a slow machine keeps LARGE), timed too; then that frame once more, interrupted
        # 40 % of the way in: well after it reached the worker, well before its keypoints are published.
        seconds_for(large, 1000)
        took = seconds_for(large, 1001)
        scale = min(3.0, max(1.0, (BUSY_SECONDS / took) ** 0.5))
        busy = frame((int(LARGE[0] * scale) // 8 * 8, int(LARGE[1] * scale) // 8 * 8))
        took = seconds_for(busy, 1002)
        publish(busy, 2000)
        self.spin_until(lambda: False, 0.4 * took)  # in the engine now
        print(f"a {busy.shape[1]}x{busy.shape[0]} frame takes {took:.2f} s: SIGINT {0.4 * took:.2f} s into the last")
        os.kill(proc_info[aliked].pid, signal.SIGINT)
        proc_info.assertWaitForShutdown(process=aliked, timeout=30)
        self.spin_until(lambda: False, 1.0)
        self.assertFalse(arrived(2000), "published after the interrupt")


    def test_a_parameter_of_the_wrong_type_stops_the_node_with_one_line(self, proc_info, aliked):
        """A bool given as a word that is not one: exit code 1 and the reason, no traceback (rclpy's exception, as
        it was, printed one)."""
        import subprocess

        result = subprocess.run(
            [sys.executable, "-m", "aliked_ros.ros.node", "--ros-args", "-r", "__node:=wrong_type_probe",
             "-p", "background_compile:=maybe"], capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 1, result.stderr[-2000:])
        self.assertNotIn("Traceback", result.stderr)
        self.assertIn("aliked_node: Trying to set parameter 'background_compile' to 'maybe' of type 'STRING', "
                      "expecting type 'BOOL'", result.stderr)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code_0_and_no_traceback(self, proc_info, proc_output, aliked):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0], process=aliked)
        for output in proc_output:
            text = output.text.decode(errors="replace")
            self.assertNotIn("Traceback", text)
            self.assertNotIn("context is invalid", text)
