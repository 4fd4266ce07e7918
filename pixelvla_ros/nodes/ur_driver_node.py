"""`ros2 run pixelvla_ros ur_driver`: a Universal Robots arm through ur_rtde, a thin shell around the ROS-free
control loop of pixelvla_ros.drivers.ur_controller, which runs in a supervised child process
(pixelvla_ros.drivers.ur_process): a crash or hang of the ur_rtde client is RECONNECTING, never a dead node.

DRY RUN BY DEFAULT (enable_actuation: false): only RTDE's receive interface is opened, so the arm never moves;
everything else runs and is reported. Set enable_actuation:=true to command the arm.

In:  /pixelvla/action_chunk (pixelvla_ros/ActionChunk, admitted by the rule every driver shares:
     header.frame_id = base_frame, image stamp neither ahead of the clock nor older than max_command_age,
     finite steps within the limits; a refused chunk is logged and counted, never executed).
Out: /pixelvla/tcp_pose (geometry_msgs/PoseStamped, measured, base_frame), /joint_states (the six UR joints
     and a `gripper` joint whose position is the commanded closure in [0, 1]), /pixelvla/gripper_command
     (std_msgs/Float64, the rate-limited command for a separate gripper driver), /diagnostics (~2 Hz).
Service: ~/rearm (std_srvs/Trigger): leave FAULT once its cause is cleared on the robot.
Parameters: PARAMETERS below, defaults mirrored in config/ur_driver.yaml.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64
from std_srvs.srv import Trigger

from pixelvla_ros import ur5e
from pixelvla_ros.chunk_timeline import commit_override
from pixelvla_ros.drivers.ur_controller import DriverState, UrDriverConfig, UrDriverStatus
from pixelvla_ros.drivers.ur_process import UrControllerProcess
from pixelvla_ros.msg import ActionChunk
from pixelvla_ros.nodes.conversions import (
    MessageError,
    chunk_from_msg,
    joint_state_msg,
    pose_msg,
    sec_to_stamp,
)
from pixelvla_ros.nodes.params import declare
from pixelvla_ros.nodes.run import run_node
from pixelvla_ros.safety import SafetyLimits


@dataclass(frozen=True)
class Param:
    name: str
    default: Any
    description: str
    floating: tuple[float, float] | None = None
    integer: tuple[int, int] | None = None


_CORE = UrDriverConfig()  # the core's defaults are the node's defaults
_LIMITS = SafetyLimits()
PARAMETERS = (
    Param("robot_ip", _CORE.robot_ip, "address of the UR controller (RTDE 30004)"),
    Param(
        "rtde_frequency",
        int(_CORE.frequency),
        "RTDE and control-loop rate, Hz: 500 on e-Series, 125 on CB3",
        integer=(1, 500),
    ),
    Param(
        "enable_actuation",
        _CORE.enable_actuation,
        "false: dry run, RTDEControlInterface is never created and the arm never moves",
    ),
    Param(
        "base_frame",
        _CORE.base_frame,
        "frame of the action chunks and of tcp_pose: the UR controller's base frame",
    ),
    Param(
        "max_stamp_lead",
        _CORE.max_stamp_lead,
        "refuse chunks whose image stamp leads this node's clock by more, s",
        floating=(0.0, 1.0),
    ),
    Param(
        "max_command_age",
        _CORE.max_command_age,
        "refuse chunks from older images, and halt once the newest chunk's image is older, s",
        floating=(0.01, 2.0),
    ),
    Param(
        "max_state_age",
        _CORE.max_state_age,
        "FAULT when the robot state arrives later than usual by more (RTDE packets delayed or lost), s",
        floating=(0.002, 1.0),
    ),
    Param(
        "servo.lookahead_time",
        _CORE.lookahead_time,
        "servoL lookahead time, s: smoother but later when larger",
        floating=(0.03, 0.2),
    ),
    Param("servo.gain", _CORE.gain, "servoL proportional gain", floating=(100.0, 2000.0)),
    Param(
        "servo.speed",
        _CORE.servo_speed,
        "servoL speed argument, m/s (ur_rtde 1.6.5's control script ignores it)",
        floating=(0.001, 3.0),
    ),
    Param(
        "servo.acceleration",
        _CORE.servo_acceleration,
        "servoL acceleration argument, m/s^2 (ur_rtde 1.6.5's control script ignores it)",
        floating=(0.001, 40.0),
    ),
    Param(
        "watchdog_min_frequency",
        _CORE.watchdog_min_frequency,
        "Hz: the controller stops the control script when the driver feeds its watchdog less often",
        floating=(0.1, 500.0),
    ),
    Param(
        "reconnect.backoff_min",
        _CORE.reconnect_backoff_min,
        "s to wait after the first failed (re)connection; doubled after each failure",
        floating=(0.001, 60.0),
    ),
    Param(
        "reconnect.backoff_max",
        _CORE.reconnect_backoff_max,
        "s, the longest wait between (re)connection attempts",
        floating=(0.001, 600.0),
    ),
    Param(
        "realtime_priority",
        _CORE.realtime_priority,
        "SCHED_FIFO priority of the servo loop thread, 1-99 (needs CAP_SYS_NICE; 0: normal scheduling)",
        integer=(0, 99),
    ),
    Param(
        "commit_steps",
        -1,  # None in the core
        "steps a started chunk keeps control before the newest takes over (0: newest wins); "
        "-1: the chunk's own, how the checkpoint was evaluated",
        integer=(-1, 64),
    ),
    Param(
        "state_publish_rate",
        50.0,
        "Hz of tcp_pose, joint_states and gripper_command (the control loop runs at rtde_frequency)",
        floating=(1.0, 500.0),
    ),
    Param("safety.workspace_min", list(_LIMITS.workspace_min), "TCP box lower corner x, y, z, m, base frame"),
    Param("safety.workspace_max", list(_LIMITS.workspace_max), "TCP box upper corner x, y, z, m, base frame"),
    Param(
        "safety.max_translation_per_step",
        _LIMITS.max_translation_per_step,
        "m per chunk step; a chunk with a longer step is refused",
        floating=(0.001, 0.5),
    ),
    Param(
        "safety.max_rotation_per_step",
        _LIMITS.max_rotation_per_step,
        "rad per chunk step; a chunk with a larger step is refused",
        floating=(0.001, 3.14),
    ),
    Param("safety.max_linear_speed", _LIMITS.max_linear_speed, "TCP speed limit, m/s", floating=(0.001, 1.5)),
    Param(
        "safety.max_linear_acceleration",
        _LIMITS.max_linear_acceleration,
        "TCP acceleration limit, m/s^2",
        floating=(0.01, 20.0),
    ),
    Param(
        "safety.max_angular_speed",
        _LIMITS.max_angular_speed,
        "TCP angular speed limit, rad/s",
        floating=(0.001, 6.0),
    ),
    Param(
        "safety.max_angular_acceleration",
        _LIMITS.max_angular_acceleration,
        "TCP angular acceleration limit, rad/s^2",
        floating=(0.01, 100.0),
    ),
    Param(
        "safety.max_gripper_rate",
        _LIMITS.max_gripper_rate,
        "gripper command rate limit, closure per s",
        floating=(0.01, 100.0),
    ),
    Param(
        "safety.stale_cycles",
        _LIMITS.stale_cycles,
        "halt after this many control cycles without a chunk covering now",
        integer=(1, 100),
    ),
)

LEVELS = {
    DriverState.RUNNING: DiagnosticStatus.OK,
    DriverState.FAULT: DiagnosticStatus.ERROR,
    DriverState.CONNECTING: DiagnosticStatus.WARN,
    DriverState.RECONNECTING: DiagnosticStatus.WARN,
    DriverState.STOPPED: DiagnosticStatus.WARN,
}


class UrDriverNode(Node):
    def __init__(self) -> None:
        super().__init__("ur_driver")
        self.driver: UrControllerProcess | None = None  # a failed start (bad parameters) has none to stop
        p = {
            spec.name: declare(
                self, spec.name, spec.default, spec.description, floating=spec.floating, integer=spec.integer
            )
            for spec in PARAMETERS
        }
        limits = SafetyLimits(
            workspace_min=tuple(p["safety.workspace_min"]),
            workspace_max=tuple(p["safety.workspace_max"]),
            max_translation_per_step=p["safety.max_translation_per_step"],
            max_rotation_per_step=p["safety.max_rotation_per_step"],
            max_linear_speed=p["safety.max_linear_speed"],
            max_linear_acceleration=p["safety.max_linear_acceleration"],
            max_angular_speed=p["safety.max_angular_speed"],
            max_angular_acceleration=p["safety.max_angular_acceleration"],
            max_gripper_rate=p["safety.max_gripper_rate"],
            stale_cycles=p["safety.stale_cycles"],
        )
        config = UrDriverConfig(
            robot_ip=p["robot_ip"],
            frequency=float(p["rtde_frequency"]),
            enable_actuation=p["enable_actuation"],
            lookahead_time=p["servo.lookahead_time"],
            gain=p["servo.gain"],
            servo_speed=p["servo.speed"],
            servo_acceleration=p["servo.acceleration"],
            watchdog_min_frequency=p["watchdog_min_frequency"],
            reconnect_backoff_min=p["reconnect.backoff_min"],
            reconnect_backoff_max=p["reconnect.backoff_max"],
            realtime_priority=p["realtime_priority"],
            commit_steps=None if p["commit_steps"] < 0 else p["commit_steps"],
            base_frame=p["base_frame"],
            max_stamp_lead=p["max_stamp_lead"],
            max_command_age=p["max_command_age"],
            max_state_age=p["max_state_age"],
            limits=limits,
        )
        self.base_frame = p["base_frame"]
        self.malformed = 0  # chunks refused here (unreadable message); the core counts the rest
        self.last_refusal = ""
        self.pub_pose = self.create_publisher(PoseStamped, "/pixelvla/tcp_pose", 10)
        self.pub_joints = self.create_publisher(JointState, "/joint_states", 10)
        self.pub_gripper = self.create_publisher(Float64, "/pixelvla/gripper_command", 10)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(ActionChunk, "/pixelvla/action_chunk", self.on_chunk, 10)
        # Its own group: a re-arm (script upload) must not hold up the state and diagnostics timers.
        self.create_service(
            Trigger, "~/rearm", self.on_rearm, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.create_timer(1.0 / p["state_publish_rate"], self.publish_state)
        self.create_timer(0.5, self.publish_diagnostics)
        if not config.enable_actuation:
            self.get_logger().warn(
                "dry run: no motion will be commanded (enable_actuation is false: RTDE receive only)"
            )
        self.driver = UrControllerProcess(config, clock=self.now_sec).start()
        self.get_logger().info(
            f"UR driver for {config.robot_ip} at {config.frequency:g} Hz, actuation "
            f"{'ENABLED' if config.enable_actuation else 'disabled (dry run)'}"
        )

    def now_sec(self) -> float:
        """ROS time in seconds: the clock of the chunks' image stamps."""
        return self.get_clock().now().nanoseconds * 1e-9

    def on_chunk(self, msg: ActionChunk) -> None:
        try:
            chunk = chunk_from_msg(msg)
            note = commit_override(self.driver.config.commit_steps, chunk)
            if note:
                self.get_logger().warn(note, once=True)
            self.driver.submit(chunk)
        except (
            ValueError
        ) as e:  # MessageError, or refused by the core (ChunkRefused, UnsafeChunkError: counted)
            self.malformed += isinstance(e, MessageError)
            self.last_refusal = str(e)
            self.get_logger().error(
                f"action chunk refused, no motion from it: {e}", throttle_duration_sec=1.0
            )

    def on_rearm(self, _request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        response.success, response.message = self.driver.rearm()
        # One call site per severity: rclpy refuses a logging call site whose severity changes between calls.
        if response.success:
            self.get_logger().info(f"re-arm succeeded: {response.message}")
        else:
            self.get_logger().error(f"re-arm refused: {response.message}")
        return response

    def publish_state(self) -> None:
        s = self.driver.status()
        if s.measured_pose is None:
            return
        stamp = sec_to_stamp(s.measured_time)
        p = s.measured_pose  # UR pose [x, y, z, rx, ry, rz] (rotation vector)
        T_base_tcp = ur5e.make_pose(ur5e.rotvec_to_matrix(p[3:6]), p[:3])
        self.pub_pose.publish(pose_msg(T_base_tcp, stamp, self.base_frame))
        self.pub_joints.publish(joint_state_msg(s.measured_q, s.gripper_command, stamp))
        self.pub_gripper.publish(Float64(data=float(s.gripper_command)))

    def publish_diagnostics(self) -> None:
        s = self.driver.status()
        status = DiagnosticStatus(
            name="pixelvla_ros: ur_driver",
            hardware_id=self.driver.config.robot_ip,
            level=LEVELS[s.state],
            message=f"{s.state.value}: {s.reason}"
            + ("" if s.actuation else " (dry run: no motion commanded)"),
        )
        status.values = [KeyValue(key=k, value=v) for k, v in self.diagnostic_values(s)]
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diag.publish(msg)

    def diagnostic_values(self, s: UrDriverStatus) -> list[tuple[str, str]]:
        return [
            ("state", s.state.value),
            ("reason", s.reason),
            ("connected", str(s.connected)),
            ("dry_run", str(not s.actuation)),
            ("halted", str(s.halted)),
            ("filter", "; ".join(s.filter_reasons)),
            ("cycles", str(s.cycles)),
            ("cycle_period_last_ms", f"{s.last_period * 1e3:.3f}"),
            ("cycle_period_p99_ms", f"{s.p99_period * 1e3:.3f}"),
            ("state_age_ms", f"{s.state_age * 1e3:.1f}"),
            ("rtde_process_pid", str(self.driver.pid)),
            ("rtde_process_restarts", str(self.driver.restarts)),
            ("gripper_command", f"{s.gripper_command:.3f}"),
            ("chunks_accepted", str(s.chunks_accepted)),
            ("chunks_refused", str(s.chunks_refused + self.malformed)),
            ("last_refusal", self.last_refusal),
        ]

    def destroy_node(self) -> None:
        if self.driver is not None:
            self.driver.stop()
        super().destroy_node()


def main(args: list[str] | None = None) -> int:
    # The core logs its state changes (FAULT, RECONNECTING, ...) through Python logging.
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    # ValueError: an inconsistent parameter set (e.g. backoff_min > backoff_max)
    return run_node(UrDriverNode, "ur_driver", 2, (ValueError,), args)
