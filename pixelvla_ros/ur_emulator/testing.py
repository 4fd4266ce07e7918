"""Helpers for tests that drive the real ur_rtde client against the emulator.

ur_rtde 1.6.5 holds the GIL inside blocking calls and its handshake reads have no timeout, so a client that
hangs would freeze the test process. :func:`run_in_process` runs a client scenario in a spawned process with a
hard timeout (the process is killed and the test fails). Inside such a scenario, :class:`DashboardHooks`
reaches the emulator's fault-injection hooks over the dashboard port (``emulator <hook> {json}``).

    def scenario(host):                      # module level, so it can be pickled by reference
        import rtde_receive
        r = rtde_receive.RTDEReceiveInterface(host)
        DashboardHooks(host).call("protective_stop")
        return r.isProtectiveStopped()

    with EmulatorProcess(host=free_loopback_host()) as emu:
        assert run_in_process(scenario, emu.host, timeout=30)
"""

from __future__ import annotations

import json
import multiprocessing as mp
import socket
import traceback


class ScenarioFailed(AssertionError):
    pass


def _entry(fn, args, kwargs, conn) -> None:
    try:
        result = fn(*args, **kwargs)
        conn.send(("ok", result))
    except BaseException as e:  # noqa: BLE001 - ship every failure to the parent
        conn.send(("error", f"{type(e).__name__}: {e}\n{traceback.format_exc()}"))


def run_in_process(fn, *args, timeout: float = 60.0, **kwargs):
    """Run ``fn(*args, **kwargs)`` in a spawned process; return its (picklable) result or raise."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_entry, args=(fn, args, kwargs, child), daemon=True)
    proc.start()
    child.close()
    try:
        if not parent.poll(timeout):
            raise ScenarioFailed(
                f"{getattr(fn, '__name__', fn)} did not finish within {timeout} s (hung client?)"
            )
        status, result = parent.recv()
    except EOFError:
        proc.join(2.0)
        raise ScenarioFailed(
            f"{getattr(fn, '__name__', fn)}: client process died (exit code {proc.exitcode})"
        ) from None
    finally:
        proc.join(2.0)
        if proc.is_alive():
            proc.kill()
            proc.join(2.0)
        parent.close()
    if status != "ok":
        raise ScenarioFailed(result)
    return result


class DashboardHooks:
    """The emulator's test hooks over the dashboard port (one TCP connection, line protocol, JSON replies)."""

    def __init__(self, host: str, port: int = 29999, timeout: float = 10.0):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.file = self.sock.makefile("rwb")
        self.file.readline()  # welcome line

    def send(self, line: str) -> str:
        self.file.write((line + "\n").encode())
        self.file.flush()
        return self.file.readline().decode().rstrip("\n")

    def call(self, hook: str, **kwargs):
        reply = json.loads(self.send(f"emulator {hook} {json.dumps(kwargs)}"))
        if not reply.get("ok"):
            raise RuntimeError(f"emulator hook {hook} failed: {reply.get('error')}")
        return reply.get("result")

    def close(self) -> None:
        try:
            self.file.close()
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> DashboardHooks:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
