"""What both launch tests share: a test client node of their own, spun until a condition holds. Imported by the
launch tests, which need rclpy and skip without it."""

from __future__ import annotations

import time
import unittest


class ClientNodeTestCase(unittest.TestCase):
    """A test case with ``self.node``, an rclpy node named ``CLIENT_NAME``, for the whole class."""

    CLIENT_NAME = "test_client"

    @classmethod
    def setUpClass(cls):
        import rclpy

        rclpy.init()
        cls.node = rclpy.create_node(cls.CLIENT_NAME)

    @classmethod
    def tearDownClass(cls):
        import rclpy

        cls.node.destroy_node()
        rclpy.shutdown()

    def spin_until(self, condition, timeout: float) -> bool:
        """Spin the client until ``condition()`` is true (True) or ``timeout`` seconds have passed (False)."""
        import rclpy

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rclpy.spin_once(self.node, timeout_sec=0.1)
            if condition():
                return True
        return False
