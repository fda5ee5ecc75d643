"""The `aliked-ros` subcommands (ROS-free): each module has ``add_parser(subparsers)`` and ``run(args) -> int``."""
