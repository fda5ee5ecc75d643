"""aliked_node: camera images in, aliked_ros/msg/Keypoints out, latency on /diagnostics.

Threads: the subscription callback only stores the newest image (an older one still waiting is counted as dropped);
one worker thread loads the engine, runs it and publishes, so nothing blocks the executor and latency never piles
up. Shutdown (``aliked_ros.ros.spinning``): on Ctrl-C, SIGTERM or SIGHUP the worker is stopped and joined before the
node is destroyed and the context shut down, and it never publishes once the node is stopping. Parameters are
declared from ``aliked_ros.parameters`` with their defaults from config/aliked.yaml.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticStatus
from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.time import Time
from sensor_msgs.msg import CompressedImage, Image

from aliked_ros import parameters
from aliked_ros.engines.background import builds_running, exit_without_waiting_for_builds
from aliked_ros.errors import AlikedError
from aliked_ros.latency import LatencyMonitor, health
from aliked_ros.log_forwarding import forward_package_logs, write_by_level
from aliked_ros.msg import Keypoints
from aliked_ros.processing import (FrameProcessor, extractor_from_parameters, needs_first_image, needs_image_size,
                                   serving_size)
from aliked_ros.ros import spinning
from aliked_ros.ros.diagnostics import wall_clock_updater
from aliked_ros.visualize import draw_keypoints


def _descriptor(spec: parameters.ParameterSpec) -> ParameterDescriptor:
    descriptor = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.type is int and spec.minimum is not None:
        descriptor.integer_range = [IntegerRange(from_value=int(spec.minimum), to_value=int(spec.maximum), step=0)]
    if spec.type is float and spec.minimum is not None:
        descriptor.floating_point_range = [FloatingPointRange(from_value=float(spec.minimum),
                                                              to_value=float(spec.maximum), step=0.0)]
    return descriptor


class AlikedNode(Node):
    def __init__(self, **node_options):
        super().__init__("aliked_node", **node_options)
        defaults = parameters.defaults()
        for spec in parameters.SPECS:
            try:
                self.declare_parameter(spec.name, defaults[spec.name], _descriptor(spec))
            except InvalidParameterTypeException as error:  # given with the wrong type (-p, a params file)
                raise SystemExit(f"aliked_node: {str(error).rsplit(':', 1)[0]}") from None
        try:
            self.values = parameters.resolve({spec.name: self.get_parameter(spec.name).value for spec in parameters.SPECS})
        except AlikedError as error:
            raise SystemExit(f"aliked_node: {error}") from None
        self.add_on_set_parameters_callback(self._on_set_parameters)
        ros_logger = self.get_logger()
        self._stop_log_forwarding = forward_package_logs(
            write_by_level(ros_logger.error, ros_logger.warning, ros_logger.info))

        self._condition = threading.Condition()
        self._pending: tuple[object, float] | None = None
        self._stopping = False
        self._publish_lock = threading.Lock()  # held by each publish of the worker and by stop(): none after it
        self._reported_errors: set[str] = set()
        self._engine_error: str | None = None
        self._last_debug_time = 0.0
        self.monitor = LatencyMonitor(self.values["latency_window"])
        self.processor: FrameProcessor | None = None

        self.keypoints_publisher = self.create_publisher(
            Keypoints, "keypoints", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
        self.debug_publisher = self.create_publisher(Image, "~/debug_image", 1)
        compressed = self.values["input_transport"] == "compressed"
        image_qos = QoSProfile(depth=self.values["qos_depth"], reliability=(
            ReliabilityPolicy.BEST_EFFORT if self.values["qos_reliability"] == "best_effort"
            else ReliabilityPolicy.RELIABLE), durability=qos_profile_sensor_data.durability)
        self.subscription = self.create_subscription(
            CompressedImage if compressed else Image, "image", self._on_image, image_qos)

        self.updater = wall_clock_updater(self, self.values["diagnostics_period"])
        self.updater.setHardwareID("aliked_ros (engine loading)")
        self.updater.add("latency", self._diagnose)

        self.worker = threading.Thread(target=self._work, name="aliked_worker", daemon=True)
        self.worker.start()  # last: a node whose constructor fails has no worker

    # --- callbacks on the executor: short, never blocking ---------------------------------------------------------

    def _on_image(self, message) -> None:
        with self._condition:
            self.monitor.received()
            if self._pending is not None:
                self.monitor.dropped()
            self._pending = (message, time.perf_counter())
            self._condition.notify()

    def _on_set_parameters(self, changes) -> SetParametersResult:
        updates = {}
        for change in changes:
            spec = parameters.SPECS_BY_NAME.get(change.name)
            if spec is None:
                continue  # use_sim_time and other parameters of rclpy itself
            if spec.read_only:
                return SetParametersResult(successful=False,
                                           reason=f"{change.name} needs a new engine: restart the node with it set")
            try:
                updates[change.name] = spec.validate(change.value)
            except AlikedError as error:
                return SetParametersResult(successful=False, reason=str(error))
        with self._condition:
            self.values.update(updates)
            if self.processor is not None and "score_threshold" in updates:
                self.processor.score_threshold = updates["score_threshold"]
        return SetParametersResult(successful=True)

    def _diagnose(self, status):
        with self._condition:
            summary = self.monitor.summary()
            budget, max_drops = self.values["latency_budget_ms"], self.values["max_drop_ratio"]
            engine_error, ready = self._engine_error, self.processor is not None
        for key, value in vars(summary).items():
            status.add(key, "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value)))
        compiling = ready and self.processor.extractor.compiling
        status.add("compiling_in_background", str(compiling).lower())  # every report: a key a monitor can rely on
        if ready:
            for key, value in (self.processor.extractor.device_memory() or {}).items():
                status.add(key, f"{value:.1f}")
        level, message = health(summary, budget_ms=budget, max_drop_ratio=max_drops, ready=ready,
                                engine_error=engine_error, compiling=compiling)
        status.summary(getattr(DiagnosticStatus, level), message)
        return status

    # --- the worker thread ----------------------------------------------------------------------------------------

    def _report_once(self, text: str) -> None:
        if text not in self._reported_errors:
            self._reported_errors.add(text)
            self.get_logger().error(text)

    def _load_engine(self, image_size: tuple[int, int] | None = None, first_image=None) -> bool:
        try:
            extractor = extractor_from_parameters(self.values, log=self.get_logger().info, image_size=image_size,
                                                  first_image=first_image)
            height, width = serving_size(extractor, self.values, image_size)
            if height and width:
                extractor.warmup(height, width)
        except AlikedError as error:
            self._engine_error = str(error)
            if not self._stopping:
                self.get_logger().error(f"The engine could not be loaded: {error}")
            return False
        if self._stopping:  # stopped while loading (a long TensorRT build): nothing left to serve
            extractor.close()
            return False
        with self._condition:
            old, self.processor = self.processor, FrameProcessor(extractor, Keypoints, self.values["score_threshold"])
            self._engine_error = None
        if old is not None:
            old.extractor.close()
        self.updater.setHardwareID(extractor.describe())
        size = f"{width}x{height}" if height and width else "any size"
        self.get_logger().info(f"Ready: {extractor.describe()}, input {size}")
        return True

    def _next_image(self):
        """The newest image, waiting for one; None once the node stops."""
        with self._condition:
            while self._pending is None and not self._stopping:
                self._condition.wait(timeout=0.5)
            if self._stopping:
                return None
            pending, self._pending = self._pending, None
            return pending

    def _work(self) -> None:
        first = None
        if needs_first_image(self.values):
            self.get_logger().info("Waiting for the first image to build the engine for its size and layout "
                                   "(set image_height, image_width and input_format to build it at start-up)")
            first = self._next_image()
            if first is None or not self._load_engine(self._raw_size(first[0]), first[0]):
                return
        elif not self._load_engine():
            return
        while True:
            pending = first or self._next_image()
            first = None
            if pending is None:
                return
            self._process(*pending)

    @staticmethod
    def _raw_size(message) -> tuple[int, int] | None:
        if hasattr(message, "format"):  # compressed: the size is known only once decoded
            from aliked_ros.image_messages import message_to_image

            return message_to_image(message).shape[:2]
        return int(message.height), int(message.width)

    def _process(self, message, received: float) -> None:
        expected = self.processor.extractor.image_size
        if expected is not None and not hasattr(message, "format") and (message.height, message.width) != expected:
            if needs_image_size({**self.values, "image_height": 0, "image_width": 0}):
                self.get_logger().warn(f"The image size changed to {message.width}x{message.height}: "
                                       "building the engine for it")
                if not self._load_engine((int(message.height), int(message.width))):
                    return
            else:
                self._report_once(f"Images are {message.width}x{message.height} but the engine takes "
                                  f"{expected[1]}x{expected[0]}: build one for this size, or leave engine_path and "
                                  "onnx_path empty so the node builds it")
                return
        try:
            result = self.processor.process(message)
        except AlikedError as error:  # the image's fault: report once, keep going
            self._report_once(f"Image skipped: {error}")
            return
        except Exception as error:  # the engine's fault
            self._engine_error = f"{type(error).__name__}: {error}"
            self._report_once(f"The engine failed on an image: {self._engine_error}")
            return
        now = self._publish(self.keypoints_publisher, result.message)
        if now is None:
            return
        stamp = Time.from_msg(message.header.stamp, clock_type=now.clock_type)
        end_to_end = (now - stamp).nanoseconds * 1e-9 if stamp.nanoseconds > 0 else None
        with self._condition:
            self.monitor.published(time.perf_counter() - received, end_to_end)
            self._engine_error = None
        self._publish_debug_image(message, result)

    def _publish_debug_image(self, message, result) -> None:
        if not self.values["publish_debug_image"]:
            return
        now = time.monotonic()
        if now - self._last_debug_time < 1.0 / self.values["debug_image_rate"]:
            return
        self._last_debug_time = now
        pixels, channel_order = result.image, result.channel_order
        if pixels is None:  # decoded on the engine's device (nvJPEG): decoded again here, at the debug image's rate
            from aliked_ros.image_messages import message_to_pixels

            pixels, channel_order = message_to_pixels(message)
        picture = draw_keypoints(pixels, result.features, channel_order=channel_order)
        height, width = picture.shape[:2]
        self._publish(self.debug_publisher, Image(
            header=message.header, height=height, width=width, encoding="bgr8", is_bigendian=0, step=width * 3,
            data=np.ascontiguousarray(picture).tobytes()))

    def _publish(self, publisher, message) -> Time | None:
        """Publish from the worker unless the node is stopping (or its context is gone); the node clock's time of
        the publish, or None where nothing was published. stop() waits for a publish in progress."""
        with self._publish_lock:
            if self._stopping or not self.context.ok():
                return None
            publisher.publish(message)
            return self.get_clock().now()

    def stop(self, timeout: float = 4.0) -> None:
        """Stop the worker and wait for it (at most ``timeout`` s: a frame in the engine, or an engine still loading);
        call before destroy_node() and rclpy's shutdown. Nothing is published once this has begun."""
        with self._publish_lock, self._condition:
            self._stopping = True
            self._condition.notify_all()
        self.worker.join(timeout=timeout)
        if self.worker.is_alive():  # still loading or in the engine: it closes what it has when it gets out
            self.get_logger().warning(f"The worker did not stop within {timeout:g} s; exiting without it")
            return
        if self.processor is not None:
            self.processor.extractor.close()
        self._stop_log_forwarding()


def main(args=None) -> None:
    spinning.init(args)  # Ctrl-C, SIGTERM, SIGHUP: KeyboardInterrupt here, not a context shut down under the worker
    node = None
    try:
        node = AlikedNode()
        spinning.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        with spinning.signals_held_off():  # the worker first, then the node, then the context
            if node is not None:
                node.stop()
                if builds_running():
                    node.get_logger().info("Exiting without waiting for the background compilation under way")
                node.destroy_node()
            rclpy.try_shutdown()
    # Cleanly stopped (an error would go on to its traceback): a torch.compile still running in the background is
    # not waited for (see exit_without_waiting_for_builds).
    exit_without_waiting_for_builds()


if __name__ == "__main__":
    main()
