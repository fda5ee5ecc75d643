"""/diagnostics on the wall clock under use_sim_time: once a bag's /clock has stopped (the bag ended, or is paused),
both nodes still report their health every diagnostics_period of wall time. A timer on the node's clock stops with
the /clock, and a replay's last frames were never reported. Skips where rclpy (a sourced ROS 2 workspace with
aliked_ros built) is missing."""

import os
import sys
import unittest

import pytest

# launch_test loads this file without putting its folder on sys.path, as pytest does: the shared helper is there.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

rclpy = pytest.importorskip("rclpy", reason="needs rclpy: source a ROS 2 workspace where aliked_ros is built")
launch_testing = pytest.importorskip("launch_testing", reason="needs launch_testing (ROS 2)")

import launch  # noqa: E402
from launch_ros.actions import Node  # noqa: E402
from ros_client import ClientNodeTestCase  # noqa: E402  (test/ros/, put on the path above)

SIM_TIME = {"use_sim_time": True, "diagnostics_period": 0.5}


@pytest.mark.launch_test
def generate_test_description():
    aliked = Node(package="aliked_ros", executable="aliked_node", name="aliked_node", output="screen",
                  parameters=[{**SIM_TIME, "engine": "torch", "device": "cpu", "model": "aliked-t16"}])
    odometry = Node(package="aliked_ros", executable="vo_node", name="vo_node", output="screen",
                    parameters=[SIM_TIME])
    return launch.LaunchDescription([aliked, odometry, launch_testing.actions.ReadyToTest()])


class TestDiagnosticsAfterTheClockStops(ClientNodeTestCase):
    CLIENT_NAME = "sim_time_diagnostics_client"

    def test_both_nodes_report_while_the_clock_stands_still(self):
        from diagnostic_msgs.msg import DiagnosticArray
        from rosgraph_msgs.msg import Clock

        reports = []
        self.node.create_subscription(DiagnosticArray, "/diagnostics",
                                      lambda array: reports.extend(status.name for status in array.status), 10)
        clock = self.node.create_publisher(Clock, "/clock", 10)
        self.assertTrue(self.spin_until(lambda: clock.get_subscription_count() >= 2, 60.0), "nodes not up")
        stopped = Clock()
        stopped.clock.sec = 1000  # one /clock message, then none: a bag that has ended
        for _ in range(5):
            clock.publish(stopped)
            self.spin_until(lambda: False, 0.2)
        reports.clear()
        self.spin_until(lambda: False, 4.0)  # 8 periods of 0.5 s of wall time, with the node's clock at 1000 s
        for node in ("aliked_node", "vo_node"):
            count = sum(name.startswith(node) for name in reports)
            self.assertGreaterEqual(count, 4, f"{node}: {count} reports in 4 s of wall time with /clock stopped")


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code_and_no_traceback(self, proc_info, proc_output):
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"))
