"""replay.launch.py for real: a bag written by `aliked-ros images-to-bag` from the TUM frames, played with --clock
once aliked_node is ready, Keypoints out with the bag's stamps, vo_node listening to the bag's camera_info, and a
clean shutdown. Skips where rclpy (a sourced ROS 2 workspace with aliked_ros built) or the TUM frames are missing."""

import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

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
from rcl_interfaces.srv import GetParameters  # noqa: E402

FRAMES = 12
TUM_IMAGE_TOPIC = "/camera/rgb/image_color"
PARAMS = """/**:
  ros__parameters:
    model: aliked-t16
    engine: torch
    device: cpu
    precision: fp32
    top_k: 300
"""


def tum_paths() -> list:
    from aliked_ros.sample_data import dataset_frames

    return dataset_frames("tum")[:FRAMES]


def bag_stamps(bag: Path) -> set:
    """(sec, nanosec) of every image header in the bag, as rosbags reads it."""
    from aliked_ros import bags

    with bags.open_bag(bag) as reader:
        return {(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in bags.read_messages(reader, TUM_IMAGE_TOPIC)}


HAVE_FRAMES = len(tum_paths()) >= FRAMES
NO_FRAMES = "needs the TUM frames in ../shared/data/tum"


BAG = None  # made by generate_test_description


def make_bag() -> Path:
    """The frames as a bag, through the command a user runs (in its own process, with its own signal handlers)."""
    folder = Path(tempfile.mkdtemp()) / "frames"
    folder.mkdir()
    for path in tum_paths():
        (folder / path.name).symlink_to(path)
    bag = folder.parent / "tum_bag"
    subprocess.run([sys.executable, "-c", "import sys; from aliked_ros.cli import main; sys.exit(main())",
                    "images-to-bag", str(folder), "--output", str(bag), "--format", "tum", "--camera", "tum-fr1"],
                   check=True)
    return bag


@pytest.mark.launch_test
def generate_test_description():
    if not HAVE_FRAMES:  # nothing to replay: start nothing, keep the launch open while the tests skip
        return launch.LaunchDescription([launch.actions.TimerAction(period=60.0, actions=[]),
                                         launch_testing.actions.ReadyToTest()])
    global BAG
    BAG = make_bag()
    params_file = os.path.join(tempfile.mkdtemp(), "params.yaml")
    with open(params_file, "w") as file:
        file.write(PARAMS)
    replay = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([FindPackageShare("aliked_ros"), "launch",
                                                            "replay.launch.py"])),
        launch_arguments={"bag": str(BAG), "dataset": "tum", "vo": "true", "rate": "0.5",
                          "params_file": params_file}.items(),
    )
    return launch.LaunchDescription([replay, launch_testing.actions.ReadyToTest()])


class TestReplay(ClientNodeTestCase):
    CLIENT_NAME = "replay_test_client"

    def test_keypoints_with_the_bags_stamps(self):
        if not HAVE_FRAMES:
            self.skipTest(NO_FRAMES)
        from aliked_ros.msg import Keypoints

        received = []
        self.node.create_subscription(Keypoints, "/keypoints", received.append, 100)
        # The engine loads first, then the bag plays (0.5x: about 2.4 s of frames); the node keeps the newest image.
        self.assertTrue(self.spin_until(lambda: bool(received), 240.0), "no Keypoints message within 240 s")
        self.spin_until(lambda: False, 8.0)  # the rest of the bag
        stamps, in_bag = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in received}, bag_stamps(BAG)
        self.assertEqual(len(in_bag), FRAMES)
        self.assertTrue(stamps <= in_bag, f"stamps not in the bag: {sorted(stamps - in_bag)}")
        first = received[0]
        self.assertEqual((first.height, first.width, first.model), (480, 640, "aliked-t16"))
        self.assertEqual(first.header.frame_id, "openni_rgb_optical_frame")
        self.assertGreater(len(first.scores), 0)

        # aliked_node runs on the bag's clock; vo_node listens to the bag's camera_info.
        client = self.node.create_client(GetParameters, "/aliked_node/get_parameters")
        self.assertTrue(client.wait_for_service(timeout_sec=10))
        future = client.call_async(GetParameters.Request(names=["use_sim_time", "image_height"]))
        self.assertTrue(self.spin_until(future.done, 10.0))
        use_sim_time, image_height = future.result().values
        self.assertTrue(use_sim_time.bool_value)
        self.assertEqual(image_height.integer_value, 480)  # config/tum.yaml
        self.assertIn("vo_node", self.node.get_node_names())
        listeners = {info.node_name for info in self.node.get_subscriptions_info_by_topic("/camera/rgb/camera_info")}
        self.assertIn("vo_node", listeners)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code_and_no_traceback(self, proc_info, proc_output):
        if not HAVE_FRAMES:
            self.skipTest(NO_FRAMES)
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
        for output in proc_output:
            self.assertNotIn("Traceback", output.text.decode(errors="replace"))
