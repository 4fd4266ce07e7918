"""Command line: ``python -m pixelvla_ros.ur_emulator --host 127.0.0.1 --version 5.11.1``."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import signal
import threading

from pixelvla_ros.ur_emulator.emulator import Emulator, EmulatorConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ur_emulator",
        description="Loopback UR5e controller emulator for ur_rtde 1.6.5 "
        "(RTDE 30004, dashboard 29999, script ports 30001-30003).",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (loopback only unless --allow-non-loopback)"
    )
    p.add_argument(
        "--version", default="5.11.1", help="controller version reported (major > 3: 500 Hz, else 125 Hz)"
    )
    p.add_argument("--serial", default="20185500042", help="serial number (digits only)")
    p.add_argument(
        "--powered-off", action="store_true", help="start powered off (dashboard power on/brake release)"
    )
    p.add_argument(
        "--q0", type=float, nargs=6, default=None, metavar="Q", help="initial joint positions (rad)"
    )
    p.add_argument(
        "--pstop-unlock-delay",
        type=float,
        default=0.0,
        help="s before 'unlock protective stop' works (5 on a real robot)",
    )
    p.add_argument(
        "--tcp-speed-limit",
        type=float,
        default=EmulatorConfig.tcp_speed_limit,
        help="m/s; a servo target whose tracking would exceed it raises a protective stop",
    )
    p.add_argument(
        "--joint-speed-limit",
        type=float,
        default=EmulatorConfig.joint_speed_limit,
        help="rad/s; a servo target whose tracking would exceed it raises a protective stop",
    )
    p.add_argument(
        "--no-test-hooks",
        action="store_true",
        help="answer 'emulator ...' dashboard commands like a real robot (could not understand)",
    )
    p.add_argument(
        "--realtime-priority",
        type=int,
        default=80,
        help="SCHED_FIFO priority of the controller tick thread, 1-99 (0: normal scheduling; a refusal by "
        "the OS is logged and the emulator runs at normal priority)",
    )
    p.add_argument("--rtde-port", type=int, default=30004)
    p.add_argument("--dashboard-port", type=int, default=29999)
    p.add_argument("--script-ports", default="30001,30002,30003")
    p.add_argument("--allow-non-loopback", action="store_true", help="permit binding a non-loopback address")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s ur_emulator %(levelname)s %(message)s"
    )
    try:
        loopback = ipaddress.ip_address(args.host).is_loopback
    except ValueError:
        loopback = args.host == "localhost"
    if not loopback and not args.allow_non_loopback:
        logging.error("refusing to bind %s: not a loopback address (use --allow-non-loopback)", args.host)
        return 2
    if not args.serial.isdigit():
        logging.error("--serial must be digits only (ur_rtde checks)")
        return 2
    cfg = EmulatorConfig(
        host=args.host,
        version=args.version,
        serial=args.serial,
        powered=not args.powered_off,
        q0=args.q0,
        pstop_unlock_delay=args.pstop_unlock_delay,
        tcp_speed_limit=args.tcp_speed_limit,
        joint_speed_limit=args.joint_speed_limit,
        test_hooks=not args.no_test_hooks,
        rtde_port=args.rtde_port,
        dashboard_port=args.dashboard_port,
        script_ports=tuple(int(p) for p in args.script_ports.split(",") if p),
        realtime_priority=args.realtime_priority,
    )
    try:
        emu = Emulator(cfg).start()
    except (OSError, ValueError) as e:
        logging.error("cannot start the emulator: %s", e)
        return 1
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    emu.stop()
    return 0
