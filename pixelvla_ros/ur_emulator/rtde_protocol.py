"""RTDE protocol v2: framing, UR's field name -> type table, recipes (the controller side).

Wire facts (see /work/shared/notes/ur-rtde-protocol.md §1): every package is ``uint16 size`` (big-endian,
including the 3 header bytes) + ``uint8 type`` + payload; all numbers big-endian.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Package types (ASCII codes).
RTDE_REQUEST_PROTOCOL_VERSION = 86  # 'V'
RTDE_GET_URCONTROL_VERSION = 118  # 'v'
RTDE_TEXT_MESSAGE = 77  # 'M'
RTDE_DATA_PACKAGE = 85  # 'U'
RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS = 79  # 'O'
RTDE_CONTROL_PACKAGE_SETUP_INPUTS = 73  # 'I'
RTDE_CONTROL_PACKAGE_START = 83  # 'S'
RTDE_CONTROL_PACKAGE_PAUSE = 80  # 'P'

HEADER = struct.Struct(">HB")
HEADER_SIZE = HEADER.size
# Largest package the emulator accepts from a client. The size field is a uint16 (<= 65535); a recipe
# with every known output name is ~10 KB, so anything larger is a broken or hostile client.
MAX_PACKAGE_SIZE = 16384

# RTDE type name -> (struct format without byte order, number of scalars).
TYPE_FORMATS: dict[str, tuple[str, int]] = {
    "BOOL": ("?", 1),
    "UINT8": ("B", 1),
    "UINT32": ("I", 1),
    "UINT64": ("Q", 1),
    "INT32": ("i", 1),
    "DOUBLE": ("d", 1),
    "VECTOR3D": ("ddd", 3),
    "VECTOR6D": ("dddddd", 6),
    "VECTOR6INT32": ("iiiiii", 6),
    "VECTOR6UINT32": ("IIIIII", 6),
}


def _build_tables() -> tuple[dict[str, str], dict[str, str]]:
    """(input fields, output fields): UR's name -> type table (RTDE guide; urcl's fake_rtde_server)."""
    inputs: dict[str, str] = {
        "speed_slider_mask": "UINT32",
        "speed_slider_fraction": "DOUBLE",
        "standard_digital_output_mask": "UINT8",
        "standard_digital_output": "UINT8",
        "configurable_digital_output_mask": "UINT8",
        "configurable_digital_output": "UINT8",
        "tool_digital_output_mask": "UINT8",
        "tool_digital_output": "UINT8",
        "standard_analog_output_mask": "UINT8",
        "standard_analog_output_type": "UINT8",
        "standard_analog_output_0": "DOUBLE",
        "standard_analog_output_1": "DOUBLE",
        "external_force_torque": "VECTOR6D",
        "input_bit_registers0_to_31": "UINT32",
        "input_bit_registers32_to_63": "UINT32",
    }
    for i in range(64, 128):
        inputs[f"input_bit_register_{i}"] = "BOOL"
    for i in range(48):
        inputs[f"input_int_register_{i}"] = "INT32"
    for i in range(48):
        inputs[f"input_double_register_{i}"] = "DOUBLE"

    outputs: dict[str, str] = {}
    v6 = "VECTOR6D"
    for name in (
        "target_q target_qd target_qdd target_current target_moment actual_q actual_qd actual_current "
        "actual_current_window actual_current_as_torque joint_control_output actual_TCP_pose "
        "actual_TCP_speed "
        "actual_TCP_force target_TCP_pose target_TCP_speed tcp_offset actual_TCP_acceleration "
        "target_TCP_acceleration joint_temperatures actual_joint_voltage ft_raw_wrench "
        "wrench_calc_from_currents "
        "payload_inertia target_base_acceleration target_base_wrench"
    ).split():
        outputs[name] = v6
    for name in (
        "timestamp actual_execution_time target_execution_time speed_scaling target_speed_fraction "
        "actual_momentum actual_main_voltage actual_robot_voltage actual_robot_current "
        "standard_analog_input0 "
        "standard_analog_input1 standard_analog_output0 standard_analog_output1 io_current "
        "actual_robot_energy_consumed actual_robot_braking_energy_dissipated euromap67_24V_voltage "
        "euromap67_24V_current tool_analog_input0 tool_analog_input1 tool_output_current tool_temperature "
        "tcp_force_scalar joint_position_deviation_ratio collision_detection_ratio payload"
    ).split():
        outputs[name] = "DOUBLE"
    for name in (
        "actual_tool_accelerometer",
        "elbow_position",
        "elbow_velocity",
        "payload_cog",
        "target_gravity",
    ):
        outputs[name] = "VECTOR3D"
    for name in (
        "actual_digital_input_bits actual_configurable_digital_input_bits actual_digital_output_bits "
        "actual_configurable_digital_output_bits control_step"
    ).split():
        outputs[name] = "UINT64"
    for name in (
        "robot_mode",
        "safety_mode",
        "safety_status",
        "encoder0_raw",
        "encoder1_raw",
        "tool_output_voltage",
        "time_scale_source",
    ):
        outputs[name] = "INT32"
    for name in (
        "runtime_state robot_status_bits safety_status_bits analog_io_types output_bit_registers0_to_31 "
        "output_bit_registers32_to_63 euromap67_input_bits euromap67_output_bits tool_mode "
        "tool_analog_input_types script_control_line"
    ).split():
        outputs[name] = "UINT32"
    for name in ("tool_output_mode", "tool_digital_output0_mode", "tool_digital_output1_mode"):
        outputs[name] = "UINT8"
    outputs["joint_mode"] = "VECTOR6INT32"
    for i in range(64, 128):
        outputs[f"output_bit_register_{i}"] = "BOOL"
    for i in range(48):
        outputs[f"output_int_register_{i}"] = "INT32"
    for i in range(48):
        outputs[f"output_double_register_{i}"] = "DOUBLE"
    # Input registers and IO inputs can also be read back as outputs (the controller reports their values).
    for name, typ in inputs.items():
        outputs.setdefault(name, typ)
    return inputs, outputs


INPUT_FIELDS, OUTPUT_FIELDS = _build_tables()


def pack_package(ptype: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(HEADER_SIZE + len(payload), ptype) + payload


def parse_names(payload: bytes) -> list[str]:
    """Comma-separated ASCII names; ur_rtde appends a trailing comma after every name, so drop empties."""
    text = payload.decode("ascii", errors="replace")
    return [n.strip() for n in text.split(",") if n.strip()]


class ProtocolError(Exception):
    """A client broke the framing; the connection has to be closed."""


@dataclass
class FrameReader:
    """Incremental splitter of a byte stream into (type, payload) packages."""

    max_size: int = MAX_PACKAGE_SIZE
    buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self.buf += data
        out: list[tuple[int, bytes]] = []
        while len(self.buf) >= HEADER_SIZE:
            size, ptype = HEADER.unpack_from(self.buf, 0)
            if size < HEADER_SIZE:
                raise ProtocolError(f"package size {size} is smaller than the 3-byte header")
            if size > self.max_size:
                raise ProtocolError(f"package size {size} exceeds the limit of {self.max_size} bytes")
            if len(self.buf) < size:
                break
            out.append((ptype, bytes(self.buf[HEADER_SIZE:size])))
            del self.buf[:size]
        return out


@dataclass
class Recipe:
    """A negotiated recipe: names, types and the compiled big-endian struct of the data package body."""

    recipe_id: int
    names: list[str]
    types: list[str]
    struct: struct.Struct
    counts: list[int]

    @classmethod
    def build(cls, recipe_id: int, names: list[str], types: list[str]) -> Recipe:
        fmt = ">" + "".join(TYPE_FORMATS[t][0] for t in types)
        return cls(
            recipe_id, list(names), list(types), struct.Struct(fmt), [TYPE_FORMATS[t][1] for t in types]
        )

    def unpack(self, body: bytes) -> dict[str, object]:
        """Body without the recipe id -> {name: scalar or tuple}; struct.error on a size mismatch."""
        flat = self.struct.unpack(body)
        out: dict[str, object] = {}
        i = 0
        for name, n in zip(self.names, self.counts, strict=True):
            out[name] = flat[i] if n == 1 else flat[i : i + n]
            i += n
        return out


def parse_version(text: str) -> tuple[int, int, int, int]:
    """'5.11.1' or '5.11.1.108318' -> (major, minor, bugfix, build); build defaults to a plausible number."""
    parts = [int(p) for p in text.strip().split(".") if p != ""]
    if not 1 <= len(parts) <= 4:
        raise ValueError(f"controller version must look like 5.11.1[.108318], got {text!r}")
    defaults = [5, 11, 1, 108318]
    parts = parts + defaults[len(parts) :]
    return parts[0], parts[1], parts[2], parts[3]
