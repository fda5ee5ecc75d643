"""aliked_ros: ALIKED keypoints, scores and descriptors for ROS 2 and offline tools."""

__version__ = "0.1.0"
