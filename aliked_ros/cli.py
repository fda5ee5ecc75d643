"""`aliked-ros`: the command-line tools (no ROS needed)."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from aliked_ros import __version__
from aliked_ros.errors import AlikedError
from aliked_ros.signals import Terminated, handle_termination, restore_handlers
from aliked_ros.tools import (bench, build_engine, compare, demo, export_onnx, extract, images_to_bag, process_bag,
                               startup, vo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aliked-ros", description="ALIKED keypoints and descriptors.")
    parser.add_argument("--version", action="version", version=f"aliked-ros {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for tool in (demo, extract, export_onnx, build_engine, images_to_bag, process_bag, compare, vo, bench, startup):
        tool.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    previous = handle_termination()
    try:
        return args.run(args)
    except AlikedError as error:
        print(f"aliked-ros {args.command}: error: {error}", file=sys.stderr)
        return 2
    except Terminated as terminated:
        print(f"aliked-ros {args.command}: terminated by {signal.Signals(terminated.signum).name}", file=sys.stderr)
        return 128 + terminated.signum  # as a shell reports a process that a signal ended: 143, 129
    except KeyboardInterrupt:
        print(f"aliked-ros {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout went away (`aliked-ros ... | head`): one line on stderr instead of a traceback (a bag
        # being written was closed on the way out, as on any error), and stdout pointed at /dev/null so that
        # Python's flush at exit does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        print(f"aliked-ros {args.command}: standard output was closed (its reader went away); what went to it is "
              "lost", file=sys.stderr)
        return 141  # as a shell reports a process ended by SIGPIPE
    finally:
        restore_handlers(previous)


if __name__ == "__main__":
    sys.exit(main())
