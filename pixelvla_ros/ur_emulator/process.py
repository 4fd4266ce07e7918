"""Run the emulator in its own process (so the GIL does not couple it to the client) and drive its hooks.

with EmulatorProcess(host=free_loopback_host(), version="5.11.1") as emu:
    rtde_r = rtde_receive.RTDEReceiveInterface(emu.host)
    emu.protective_stop()
    emu.commands(kind="command")
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import socket
import sys
import threading

from pixelvla_ros.ur_emulator.emulator import Emulator, EmulatorConfig

UR_PORTS = (29999, 30001, 30002, 30003, 30004)


def ports_free(host: str, ports=UR_PORTS) -> bool:
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, p))
        except OSError:
            return False
        finally:
            s.close()
    return True


def free_loopback_host(start: int = 2, stop: int = 250, third: int = 77) -> str:
    """A 127.0.<third>.x address where all UR ports are free (ur_rtde hard-codes the ports, not the host)."""
    import random

    xs = list(range(start, stop))
    random.shuffle(xs)
    for x in xs:
        host = f"127.0.{third}.{x}"
        if ports_free(host):
            return host
    raise RuntimeError("no free loopback address for the UR ports")


def _child(config: EmulatorConfig, conn, log_level: str) -> None:
    logging.basicConfig(
        level=log_level,
        stream=sys.stderr,
        format="%(asctime)s ur_emulator[%(process)d] %(levelname)s %(message)s",
    )
    try:
        emu = Emulator(config).start()
    except Exception as e:  # noqa: BLE001
        conn.send(("error", f"{type(e).__name__}: {e}"))
        return
    conn.send(("ready", None))
    lock = threading.Lock()
    while True:
        try:
            name, kwargs = conn.recv()
        except (EOFError, OSError):
            break
        if name == "__shutdown__":
            emu.stop()
            conn.send(("ok", None))
            break
        try:
            with lock:
                result = emu.hook(name, **kwargs)
            conn.send(("ok", result))
        except Exception as e:  # noqa: BLE001
            conn.send(("error", f"{type(e).__name__}: {e}"))
    emu.stop()


class EmulatorProcess:
    """Context manager: the emulator in a spawned process on ``host``; hooks are methods of this object."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        version: str = "5.11.1",
        log_level: str = "WARNING",
        start_timeout: float = 30.0,
        **config,
    ):
        self.host = host
        self.version = version
        self.config = EmulatorConfig(host=host, version=version, **config)
        self.log_level = log_level
        self.start_timeout = start_timeout
        self.proc = None
        self.conn = None
        self._lock = threading.Lock()

    def start(self) -> EmulatorProcess:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_child,
            args=(self.config, child, self.log_level),
            daemon=True,
            name=f"ur_emulator@{self.host}",
        )
        self.proc.start()
        child.close()
        self.conn = parent
        if not parent.poll(self.start_timeout):
            self.stop()
            raise RuntimeError(f"UR emulator on {self.host} did not start within {self.start_timeout} s")
        status, msg = parent.recv()
        if status != "ready":
            self.stop()
            raise RuntimeError(f"UR emulator on {self.host} failed to start: {msg}")
        return self

    def call(self, _hook: str, _timeout: float = 10.0, **kwargs):
        with self._lock:
            self.conn.send((_hook, kwargs))
            if not self.conn.poll(_timeout):
                raise TimeoutError(f"emulator hook {_hook} did not answer within {_timeout} s")
            status, result = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"emulator hook {_hook} failed: {result}")
        return result

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.is_alive() and self.conn is not None:
                self.conn.send(("__shutdown__", {}))
                self.conn.poll(5.0)
        except (OSError, EOFError, BrokenPipeError):
            pass
        self.proc.join(5.0)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(2.0)
        if self.conn is not None:
            self.conn.close()
        self.proc = None
        self.conn = None

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # Fault-injection / test hooks (see pixelvla_ros.ur_emulator.faults).
    def protective_stop(self, reason: str = "injected by a test"):
        return self.call("protective_stop", reason=reason)

    def emergency_stop(self, reason: str = "injected by a test"):
        return self.call("emergency_stop", reason=reason)

    def release_emergency_stop(self):
        return self.call("release_emergency_stop")

    def trip_watchdog(self):
        return self.call("trip_watchdog")

    def drop_connections(self, kind: str = "all"):
        return self.call("drop_connections", kind=kind)

    def delay_packets(self, delay_s: float, duration_s: float = 3600.0):
        return self.call("delay_packets", delay_s=delay_s, duration_s=duration_s)

    def stall_outputs(self, duration_s: float):
        return self.call("stall_outputs", duration_s=duration_s)

    def restart_controller(self, downtime_s: float = 1.0, keep_pose: bool = True):
        return self.call("restart_controller", downtime_s=downtime_s, keep_pose=keep_pose)

    def set_joint_positions(self, q):
        return self.call("set_joint_positions", q=list(map(float, q)))

    def set_tcp_pose(self, pose):
        return self.call("set_tcp_pose", pose=list(map(float, pose)))

    def set_speed_scaling(self, fraction: float):
        return self.call("set_speed_scaling", fraction=fraction)

    def power_off(self):
        return self.call("power_off")

    def power_on(self):
        return self.call("power_on")

    def commands(self, kind: str | None = None, since: float = 0.0, name: str | None = None):
        return self.call("commands", kind=kind, since=since, name=name)

    def clear_commands(self):
        return self.call("clear_commands")

    def state(self):
        return self.call("state")

    def logs(self, min_level: str = "WARNING"):
        return self.call("logs", min_level=min_level)
