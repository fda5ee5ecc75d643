"""The ROS 2 layer: the rclpy node. Wiring only; the logic lives in the ROS-free modules it calls."""
