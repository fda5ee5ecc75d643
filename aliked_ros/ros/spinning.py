"""How both nodes start, spin and stop, so that Ctrl-C never leaves a thread publishing on a dead context.

rclpy's own signal handlers shut the context down from rclpy's signal thread the moment SIGINT or SIGTERM arrives,
while the node may still be processing a frame; its publish then fails ("publisher's context is invalid"). Here
rclpy installs none: SIGINT reaches Python as KeyboardInterrupt, SIGTERM and SIGHUP as Terminated (also a
KeyboardInterrupt), in the main thread, between two short spins. The node then stops its own work (the worker
joined) before it is destroyed and the context shut down, with further signals held off (a terminal's Ctrl-C reaches
both ``ros2 launch`` and the node, and launch sends its own SIGINT, then SIGTERM). Same on Humble and Jazzy.
"""

from __future__ import annotations

import contextlib
import signal

import rclpy
import rclpy.logging
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from aliked_ros.memory import keep_freed_memory
from aliked_ros.signals import handle_termination

_STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def init(args=None) -> None:
    """rclpy.init without rclpy's signal handlers; SIGTERM and SIGHUP act like Ctrl-C. The process keeps the memory
    it frees for the next frame (aliked_ros.memory)."""
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    handle_termination(("SIGTERM", "SIGHUP"))
    if not keep_freed_memory():
        rclpy.logging.get_logger("aliked_ros").debug(
            "The C library is not glibc: freed memory is handed back to it as it decides")


def spin(node, period: float = 0.1) -> None:
    """Spin ``node`` until its context shuts down or a signal raises KeyboardInterrupt.

    rcl_wait does not return for a signal that only Python handles, so each wait lasts at most ``period`` seconds:
    that is how soon Ctrl-C acts when no message or timer wakes the node.
    """
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    while node.context.ok():
        executor.spin_once(timeout_sec=period)


@contextlib.contextmanager
def signals_held_off():
    """SIGINT, SIGTERM and SIGHUP are ignored inside the block (the clean stop, bounded by the worker's join)."""
    previous = {}
    for signum in _STOP_SIGNALS:
        try:
            previous[signum] = signal.signal(signum, signal.SIG_IGN)
        except ValueError:  # not the main thread
            break
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if handler is not None:
                signal.signal(signum, handler)
