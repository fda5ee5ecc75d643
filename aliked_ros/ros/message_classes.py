"""rclpy's message classes of this package, for code outside ros/ that can use them where a ROS 2 build is there
(the bench times message building in the class the node publishes). Only ros/ imports the generated aliked_ros.msg."""

from __future__ import annotations


def keypoints_class():
    """``aliked_ros.msg.Keypoints`` as the ROS 2 build of this package generated it; ImportError where there is none
    (a plain checkout or pip install has no aliked_ros.msg)."""
    from aliked_ros.msg import Keypoints

    return Keypoints


def serializer():
    """rclpy's CDR serialisation of a message, as a publisher does it."""
    from rclpy.serialization import serialize_message

    return serialize_message
