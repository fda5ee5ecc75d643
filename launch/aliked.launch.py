"""ros2 launch aliked_ros aliked.launch.py [params_file:=...] [image_topic:=...] [namespace:=...] [model:=...]
[engine:=...] [use_sim_time:=true] [log_level:=debug]

model and engine, when given, override the parameters file; everything else comes from it (config/aliked.yaml by
default, whose values are the node's defaults).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def node_with_overrides(context):
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() in ("true", "1")}
    for name in ("model", "engine"):
        value = LaunchConfiguration(name).perform(context)
        if value:
            overrides[name] = value
    return [
        Node(
            package="aliked_ros",
            executable="aliked_node",
            name="aliked_node",
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[("image", LaunchConfiguration("image_topic"))],
            arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("aliked_ros"), "config", "aliked.yaml"]),
            description="ROS 2 parameters file (config/tum.yaml and config/kitti.yaml are installed too)"),
        DeclareLaunchArgument("image_topic", default_value="image",
                              description="camera topic (sensor_msgs/Image, or CompressedImage with "
                                          "input_transport: compressed)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its topics"),
        DeclareLaunchArgument("model", default_value="", description="ALIKED variant; empty = the parameters file's"),
        DeclareLaunchArgument("engine", default_value="",
                              description="tensorrt, onnxruntime, torch or auto; empty = the parameters file's"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("log_level", default_value="info", description="debug, info, warn, error"),
        OpaqueFunction(function=node_with_overrides),
    ])
