"""vo_node: frame-to-frame visual odometry from aliked_ros/msg/Keypoints, an example consumer of the message.

Wiring only: matching and pose estimation are ``aliked_ros.vo`` (the same code as ``aliked-ros vo``). Subscribes
``keypoints`` and ``camera_info``; publishes ``odometry`` (nav_msgs/Odometry) and ``path`` (nav_msgs/Path) of the
chained camera poses, up to scale (one unit per step unless ``speed`` gives metres per second), and its matches,
inliers and failures on /diagnostics. Matching 1000-2000 keypoints and RANSAC take tens of milliseconds, so frames
are handled in the subscription callback, in order.
"""

from __future__ import annotations

import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo

from aliked_ros import vo
from aliked_ros.errors import AlikedError
from aliked_ros.matching import create_matcher
from aliked_ros.messages import features_from_message
from aliked_ros.msg import Keypoints
from aliked_ros.ros import spinning
from aliked_ros.ros.diagnostics import wall_clock_updater


def _pose_message(pose, target) -> None:
    """Fill a geometry_msgs/Pose from a 4×4 camera-to-world matrix."""
    target.position.x, target.position.y, target.position.z = (float(v) for v in pose[:3, 3])
    qx, qy, qz, qw = vo.rotation_to_quaternion(pose[:3, :3])
    target.orientation.x, target.orientation.y, target.orientation.z, target.orientation.w = (
        float(qx), float(qy), float(qz), float(qw))


class VisualOdometryNode(Node):
    def __init__(self, **node_options):
        super().__init__("vo_node", **node_options)
        declare = self.declare_parameter
        declare("odom_frame", "odom", ParameterDescriptor(description="frame of the odometry and the path "
                                                                       "(the first camera pose)", read_only=True))
        declare("matcher", "mnn", ParameterDescriptor(description="mnn or lightglue", read_only=True,
                                                      additional_constraints="one of: mnn, lightglue"))
        declare("ratio", 0.0, ParameterDescriptor(description="ratio test for mnn; 0 = off", read_only=True,
                                                  floating_point_range=[FloatingPointRange(from_value=0.0,
                                                                                           to_value=1.0)]))
        declare("ransac_threshold_px", 1.0, ParameterDescriptor(
            description="epipolar distance of an inlier, pixels", read_only=True,
            floating_point_range=[FloatingPointRange(from_value=0.1, to_value=20.0)]))
        declare("speed", 0.0, ParameterDescriptor(description="metres per second for the step length; 0 = unit "
                                                               "steps (up to scale)", read_only=True))
        declare("max_path_length", 10000, ParameterDescriptor(
            description="poses kept in the published path", read_only=True,
            integer_range=[IntegerRange(from_value=2, to_value=1000000, step=0)]))
        declare("diagnostics_period", 1.0, ParameterDescriptor(description="seconds between /diagnostics",
                                                               read_only=True))
        value = lambda name: self.get_parameter(name).value  # noqa: E731
        try:
            ratio = value("ratio") or None
            self.matcher = create_matcher(value("matcher"), **({"ratio": ratio} if value("matcher") == "mnn" else {}))
            self.options = vo.VOOptions(ransac_threshold_px=value("ransac_threshold_px"))
        except AlikedError as error:
            raise SystemExit(f"vo_node: {error}") from None
        self.odom_frame = value("odom_frame")
        self.speed = value("speed")
        self.max_path_length = value("max_path_length")
        self.odometry: vo.VisualOdometry | None = None
        self.camera: vo.Camera | None = None
        self.last: vo.FrameResult | None = None
        self._warned: set[str] = set()

        self.odometry_publisher = self.create_publisher(Odometry, "odometry", 10)
        self.path_publisher = self.create_publisher(Path, "path", QoSProfile(depth=1,
                                                                            reliability=ReliabilityPolicy.RELIABLE))
        self.path = Path()
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_profile_sensor_data)
        self.create_subscription(Keypoints, "keypoints", self._on_keypoints, 10)
        self.updater = wall_clock_updater(self, value("diagnostics_period"))
        self.updater.setHardwareID(f"aliked_ros vo_node ({value('matcher')})")
        self.updater.add("visual odometry", self._diagnose)

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            self.get_logger().warn(text)

    def _on_camera_info(self, info: CameraInfo) -> None:
        try:
            camera = vo.camera_from_camera_info(info, "CameraInfo on camera_info")
        except AlikedError as error:
            self._warn_once(str(error))
            return
        if self.odometry is None:
            self.camera = camera
            self.odometry = vo.VisualOdometry(camera.matrix, self.matcher, self.options, camera.distortion)
            self.get_logger().info(f"Intrinsics from {camera.source}: fx {camera.matrix[0, 0]:g}, "
                                   f"cx {camera.matrix[0, 2]:g}, cy {camera.matrix[1, 2]:g}")

    def _on_keypoints(self, message: Keypoints) -> None:
        if self.odometry is None:
            self._warn_once("No CameraInfo yet on camera_info: keypoints are skipped until one arrives")
            return
        stamp = message.header.stamp.sec + message.header.stamp.nanosec * 1e-9
        try:
            features = features_from_message(message)
            self.camera.check(features)
            previous = self.odometry.reference_stamp
            scale = self.speed * (stamp - previous) if self.speed > 0 and previous is not None else None
            result = self.odometry.process(features, stamp, scale)
        except AlikedError as error:
            self._warn_once(f"Keypoints skipped: {error}")
            return
        self.last = result
        if result.relative is not None and not result.valid:
            self.get_logger().debug(f"frame {result.index}: {result.relative.reason}")
        odometry = Odometry()
        odometry.header.stamp = message.header.stamp
        odometry.header.frame_id = self.odom_frame
        odometry.child_frame_id = message.header.frame_id
        _pose_message(result.pose, odometry.pose.pose)
        self.odometry_publisher.publish(odometry)
        pose = PoseStamped()
        pose.header = odometry.header
        pose.pose = odometry.pose.pose
        self.path.header = odometry.header
        self.path.poses.append(pose)
        del self.path.poses[:-self.max_path_length]
        self.path_publisher.publish(self.path)

    def _diagnose(self, status):
        if self.odometry is None:
            status.summary(DiagnosticStatus.WARN, "waiting for CameraInfo")
            return status
        frames = len(self.odometry.trajectory)
        status.add("frames", str(frames))
        status.add("valid_steps", str(self.odometry.valid_steps))
        relative = self.last.relative if self.last is not None else None
        if relative is not None:
            status.add("matches", str(relative.match_count))
            status.add("inliers", str(relative.inliers))
            status.add("inlier_ratio", f"{relative.inlier_ratio:.3f}")
        if relative is not None and not relative.valid:
            status.summary(DiagnosticStatus.WARN, f"last frame not estimated: {relative.reason}")
        else:
            status.summary(DiagnosticStatus.OK, f"{self.odometry.valid_steps} steps estimated over {frames} frames")
        return status


def main(args=None) -> None:
    spinning.init(args)  # Ctrl-C, SIGTERM, SIGHUP: KeyboardInterrupt here, never a context shut down mid-callback
    node = None
    try:
        node = VisualOdometryNode()
        spinning.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        with spinning.signals_held_off():
            if node is not None:
                node.destroy_node()
            rclpy.try_shutdown()


if __name__ == "__main__":
    main()
