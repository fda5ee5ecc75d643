"""ros2 launch aliked_ros replay.launch.py bag:=DIR dataset:=tum|kitti [vo:=true] [rate:=1.0] [image_topic:=...]
[params_file:=...] [model:=...] [engine:=...] [debug_image:=true] [log_level:=info]

One-command replay of a dataset bag (``aliked-ros images-to-bag``) through the node: aliked_node with the dataset's
config (config/tum.yaml or config/kitti.yaml, then ``params_file`` if given, then ``model`` and ``engine``),
``use_sim_time`` and the bag's image topic; optionally vo_node on the keypoints and the bag's camera_info; and
``ros2 bag play --clock`` once the node is ready (its engine loaded, or waiting for the first image to learn the
size), so that the first frames are not lost while the engine loads. The image topic is the dataset's (TUM
/camera/rgb/image_color, KITTI /kitti/camera_gray_left/image_raw, or the colour one where the bag holds that),
read from the bag's metadata.yaml where it has one.
"""

from pathlib import Path

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, LogInfo, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit, OnProcessIO
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

DATASETS = {  # image topics in order of preference: images-to-bag's topics for each dataset
    "tum": ("/camera/rgb/image_color",),
    "kitti": ("/kitti/camera_gray_left/image_raw", "/kitti/camera_color_left/image_raw"),
}
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
READY_MARKS = (b"Ready: ", b"Waiting for the first image")  # aliked_node's log lines once it can take images


def bag_topics(bag: Path) -> dict:
    """topic → type from the bag's metadata.yaml; empty where there is none (a lone .mcap file)."""
    metadata = bag / "metadata.yaml"
    if not metadata.is_file():
        return {}
    information = yaml.safe_load(metadata.read_text()).get("rosbag2_bagfile_information", {})
    return {entry["topic_metadata"]["name"]: entry["topic_metadata"]["type"]
            for entry in information.get("topics_with_message_count") or []}


def choose_image_topic(dataset: str, topics: dict, given: str) -> str:
    if given:
        return given
    images = [name for name, kind in topics.items() if kind in IMAGE_TYPES]
    for topic in DATASETS[dataset]:
        if topic in images:
            return topic
    if len(images) == 1:
        return images[0]
    if images:
        raise RuntimeError(f"the bag has the image topics {images}: choose one with image_topic:=")
    return DATASETS[dataset][0]


def camera_info_topic(image_topic: str) -> str:
    """``/camera/rgb/image_color`` → ``/camera/rgb/camera_info`` (as aliked_ros.bags names it)."""
    return image_topic.rstrip("/").rpartition("/")[0] + "/camera_info"


def replay(context):
    value = lambda name: LaunchConfiguration(name).perform(context)  # noqa: E731
    flag = lambda name: value(name).strip().lower() in ("true", "1", "yes")  # noqa: E731
    dataset = value("dataset").strip().lower()
    if dataset not in DATASETS:
        raise RuntimeError(f"dataset:={dataset!r}: use dataset:=tum or dataset:=kitti")
    bag = Path(value("bag")).expanduser()
    if not value("bag") or not bag.exists():
        raise RuntimeError(f"bag:={value('bag')!r}: give the folder that images-to-bag wrote (bag:=DIR)")
    topics = bag_topics(bag) if bag.is_dir() else {}
    image_topic = choose_image_topic(dataset, topics, value("image_topic"))
    info_topic = camera_info_topic(image_topic)

    share = Path(FindPackageShare("aliked_ros").perform(context))
    parameters = [str(share / "config" / f"{dataset}.yaml")]
    if value("params_file"):
        parameters.append(value("params_file"))
    overrides = {"use_sim_time": True, "publish_debug_image": flag("debug_image")}
    for name in ("model", "engine"):
        if value(name):
            overrides[name] = value(name)
    parameters.append(overrides)
    log_level = ["--ros-args", "--log-level", value("log_level")]
    aliked = Node(package="aliked_ros", executable="aliked_node", name="aliked_node", parameters=parameters,
                  remappings=[("image", image_topic)], arguments=log_level, output="screen", emulate_tty=True)
    actions = [aliked]
    if flag("vo"):
        if topics and info_topic not in topics:
            actions.append(LogInfo(msg=f"vo_node: the bag has no {info_topic}; it waits for one"))
        actions.append(Node(package="aliked_ros", executable="vo_node", name="vo_node",
                            parameters=[{"use_sim_time": True}],
                            remappings=[("keypoints", "/keypoints"), ("camera_info", info_topic)],
                            arguments=log_level, output="screen", emulate_tty=True))

    play = ExecuteProcess(cmd=["ros2", "bag", "play", str(bag), "--clock", "--rate", value("rate")],
                          name="bag_play", output="screen")
    started = []

    def play_when_ready(event):
        if started or not any(mark in event.text for mark in READY_MARKS):
            return None
        started.append(True)
        return [LogInfo(msg=f"aliked_node is ready: playing {bag} at rate {value('rate')}"), play]

    actions.append(RegisterEventHandler(OnProcessIO(target_action=aliked, on_stdout=play_when_ready,
                                                    on_stderr=play_when_ready)))
    actions.append(RegisterEventHandler(OnProcessExit(target_action=play, on_exit=[LogInfo(
        msg="The bag has ended; the nodes keep running (Ctrl-C stops them)")])))
    where = [f"Replaying {bag} ({dataset}) on {image_topic} once aliked_node is ready. Where to look:",
             "  keypoints:   ros2 topic echo /keypoints --no-arr",
             "  latency:     ros2 topic echo /diagnostics",
             "  debug image: /aliked_node/debug_image (rqt_image_view)" if flag("debug_image")
             else "  debug image: off (debug_image:=true)"]
    if flag("vo"):
        where.append(f"  odometry:    /odometry and /path (vo_node, camera_info from {info_topic})")
    return [LogInfo(msg="\n".join(where))] + actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("bag", description="the bag folder (aliked-ros images-to-bag --output DIR)"),
        DeclareLaunchArgument("dataset", default_value="tum", description="tum or kitti: the config and the topic"),
        DeclareLaunchArgument("vo", default_value="false", description="also run vo_node on the bag's camera_info"),
        DeclareLaunchArgument("rate", default_value="1.0", description="ros2 bag play's rate"),
        DeclareLaunchArgument("image_topic", default_value="",
                              description="the bag's image topic; empty = the dataset's, as found in the bag"),
        DeclareLaunchArgument("params_file", default_value="",
                              description="a parameters file applied over the dataset's config; empty = none"),
        DeclareLaunchArgument("model", default_value="", description="ALIKED variant; empty = the config's"),
        DeclareLaunchArgument("engine", default_value="",
                              description="tensorrt, onnxruntime, torch or auto; empty = the config's"),
        DeclareLaunchArgument("debug_image", default_value="true", description="publish ~/debug_image"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error"),
        OpaqueFunction(function=replay),
    ])
