"""robot.launch.py's nodes against the UR controller emulator, the rehearsal of README "UR driver": ur_driver
(real ur_rtde client), prompt_node and policy_node with their config files, the simulator as the camera only.
A task started over the RunTask action makes the emulated arm move; nothing else is faked."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from pixelvla_ros.action import RunTask
from rclpy.action import ActionClient
from rclpy.executors import MultiThreadedExecutor

from pixelvla_ros.demo import start_nodes, stop_nodes
from pixelvla_ros.model import build_model, save_checkpoint
from pixelvla_ros.model.testing import make_preprocessor, micro_config
from pixelvla_ros.ur_emulator import EmulatorProcess, free_loopback_host


def wait(condition: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.mark.parametrize("actuation", [True, False], ids=["actuated", "dry_run"])
def test_robot_launch_nodes_drive_the_emulated_arm(tmp_path, ros_domain: int, actuation: bool) -> None:
    torch.manual_seed(0)
    cfg = micro_config(proprio_dim=4)
    checkpoint = save_checkpoint(
        build_model(cfg, device="cpu", load_pretrained=False), make_preprocessor(cfg), tmp_path / "ckpt"
    )
    with EmulatorProcess(host=free_loopback_host(), version="5.11.1") as emu:
        stack = [
            ("sim_driver", ["-r", "/pixelvla/action_chunk:=/sim/action_chunk"]  # the camera only
             + ["-r", "/pixelvla/tcp_pose:=/sim/tcp_pose", "-r", "/joint_states:=/sim/joint_states"]),
            ("ur_driver", ["-p", f"robot_ip:={emu.host}", "-p", f"enable_actuation:={str(actuation).lower()}"]
             # Python emulator + driver on 2 loaded cores: a state 0.35 s late was seen as the stack started
             + ["-p", "watchdog_min_frequency:=2.0", "-p", "max_state_age:=1.0"]),
            ("prompt_node", []),
            ("policy_node", ["-p", f"checkpoint:={checkpoint}"]),
        ]  # fmt: skip
        procs = start_nodes(stack, tmp_path)
        rclpy.init()
        node = rclpy.create_node("robot_stack_user")
        status: dict[str, str] = {}
        node.create_subscription(
            DiagnosticArray,
            "/diagnostics",
            lambda m: status.update({s.name: s.message for s in m.status}),
            10,
        )
        client = ActionClient(node, RunTask, "/pixelvla/run_task")
        executor = MultiThreadedExecutor(num_threads=2)
        executor.add_node(node)
        threading.Thread(target=executor.spin, daemon=True).start()
        try:
            tcp0 = np.array(emu.state()["tcp_pose"])
            assert client.wait_for_server(timeout_sec=120), "policy_node did not come up"
            assert wait(lambda: status.get("pixelvla_ros: ur_driver", "").startswith("RUNNING"), 60), status
            goal = client.send_goal_async(RunTask.Goal(instruction="pick up the cube", timeout_s=6.0))
            assert wait(goal.done, 10) and goal.result().accepted
            result = goal.result().get_result_async()
            assert wait(result.done, 30)
            published = result.result().result.chunks_published
            moved = float(np.linalg.norm(np.array(emu.state()["tcp_pose"])[:3] - tcp0[:3]))
        finally:
            stop_nodes(procs)
            executor.shutdown(timeout_sec=2.0)
            node.destroy_node()
            rclpy.try_shutdown()
        logs = {name: (tmp_path / f"{name}.log").read_text() for name, _ in stack}
        assert published > 5, json.dumps(logs)[-3000:]
        if actuation:
            assert moved > 1e-3, logs["ur_driver"][-3000:]  # the policy's chunks moved the emulated arm
        else:
            assert moved < 1e-4 and not emu.commands(kind="command", name="servoL")  # dry run: no motion
            assert "dry run" in logs["ur_driver"]
