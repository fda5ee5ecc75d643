"""The nodes' /diagnostics on the wall clock: diagnostic_updater's timer runs on the node's clock, which under
``use_sim_time`` is a bag's /clock, so its reports would wait for the first /clock and stop with the bag's last, while
the node goes on working (a replay's last frames were never reported). A node's health is measured in wall time."""

from __future__ import annotations

from diagnostic_updater import Updater
from rclpy.clock import Clock, ClockType


def wall_clock_updater(node, period: float) -> Updater:
    """A diagnostic_updater.Updater for ``node`` publishing every ``period`` seconds of steady (wall) time."""
    updater = Updater(node, period=period)
    node.destroy_timer(updater.timer)
    updater.timer = node.create_timer(period, updater.update, clock=Clock(clock_type=ClockType.STEADY_TIME))
    return updater
