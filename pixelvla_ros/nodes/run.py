"""The body of every node's `ros2 run` entry point: init, build the node, spin until Ctrl-C or shutdown."""

from __future__ import annotations

import gc
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node


def run_node(
    make_node: Callable[[], Node],
    name: str,
    threads: int,
    startup_errors: tuple[type[BaseException], ...],
    args: list[str] | None = None,
) -> int:
    """Exit code 0 after a clean stop; 2 when the node cannot start (one of `startup_errors`, e.g. a bad
    parameter or checkpoint: logged with its reason, no traceback). `threads` > 1: a multi-threaded executor,
    for nodes whose callbacks may block (action goals, services that talk to a controller)."""
    rclpy.init(args=args)
    try:
        node = make_node()
    except startup_errors as e:
        get_logger(name).fatal(f"cannot start: {type(e).__name__}: {e}")
        rclpy.try_shutdown()
        return 2
    # What exists now (the model, torch, the ROS entities) lives as long as the node: frozen out of the
    # collector, whose full collections otherwise scan it all and stopped the policy node for 180-300 ms
    # (every Python thread waits for them): the end-to-end latency's tail (bench.e2e_latency).
    gc.collect()
    gc.freeze()
    executor = MultiThreadedExecutor(num_threads=threads) if threads > 1 else SingleThreadedExecutor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
