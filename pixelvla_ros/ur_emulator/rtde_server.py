"""RTDE server (port 30004): protocol v2 handshake, recipes, input ownership (IN_USE), output streaming.

One reader thread per connection answers V/v/O/I/S/P in any state and applies input data packages to the
robot registers. Output data packages are packed and sent by the emulator's controller-tick thread
(:meth:`RTDEConnection.stream`) with non-blocking sends: a client that does not read loses packages (as on a
real controller) but never stalls the tick or other clients. No text message is ever sent.
"""

from __future__ import annotations

import collections
import logging
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING

from pixelvla_ros.realtime import make_thread_realtime
from pixelvla_ros.ur_emulator import rtde_protocol as rp

if TYPE_CHECKING:
    from pixelvla_ros.ur_emulator.emulator import Emulator

log = logging.getLogger("pixelvla_ros.ur_emulator")

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_D = struct.Struct(">d")
_VERSION = struct.Struct(">IIII")


class RTDEConnection:
    def __init__(self, server: RTDEServer, sock: socket.socket, addr):
        self.server = server
        self.emu = server.emu
        self.sock = sock
        self.addr = addr
        self.cid = next(server.ids)
        self.send_lock = threading.Lock()
        self.output: rp.Recipe | None = None
        self.divider = 1
        self.started = False
        self.inputs: dict[int, rp.Recipe] = {}
        self.pending = b""  # unsent tail of a partially sent output package
        self.delayed: collections.deque = collections.deque()
        self.sent = 0
        self.dropped = 0
        self.closed = False

    def __repr__(self) -> str:
        return f"RTDE#{self.cid}({self.addr[0]}:{self.addr[1]})"

    # -- replies (reader thread) ---------------------------------------------------------------------
    def reply(self, ptype: int, payload: bytes) -> None:
        data = rp.pack_package(ptype, payload)
        with self.send_lock:
            if self.pending:  # finish a partially sent output package first, or the framing breaks
                self.sock.sendall(self.pending)
                self.pending = b""
            self.sock.sendall(data)

    def serve(self) -> None:
        if self.emu.tick_realtime:
            # Just below the tick: a reader preempted by a client's real-time loop while it holds the GIL
            # or the emulator's lock would stall the tick behind it (priority inversion); a controller
            # handles RTDE input in its real-time domain too.
            make_thread_realtime(self.emu.config.realtime_priority - 1)
        reader = rp.FrameReader()
        reason = "closed by the client"
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for ptype, payload in reader.feed(data):
                    self.handle(ptype, payload)
        except rp.ProtocolError as e:
            reason = f"protocol error: {e}"
            log.error("%s: %s; closing the connection", self, e)
        except OSError as e:
            reason = f"socket error: {e}"
        finally:
            if reader.buf:
                log.warning(
                    "%s: connection ended with %d bytes of an incomplete package (truncated frame)",
                    self,
                    len(reader.buf),
                )
            self.server.remove(self, reason)

    def handle(self, ptype: int, payload: bytes) -> None:
        emu = self.emu
        if ptype == rp.RTDE_DATA_PACKAGE:
            self.handle_data(payload)
            return
        emu.record("rtde", conn=self.cid, type=chr(ptype) if 32 <= ptype < 127 else ptype, size=len(payload))
        if ptype == rp.RTDE_REQUEST_PROTOCOL_VERSION:
            if len(payload) != 2:
                log.warning(
                    "%s: malformed REQUEST_PROTOCOL_VERSION (%d payload bytes); rejected", self, len(payload)
                )
                self.reply(ptype, _U8.pack(0))
                return
            (version,) = _U16.unpack(payload)
            ok = version == 2
            if not ok:
                log.warning("%s: protocol version %d requested; only 2 is emulated", self, version)
            self.reply(ptype, _U8.pack(1 if ok else 0))
        elif ptype == rp.RTDE_GET_URCONTROL_VERSION:
            self.reply(ptype, _VERSION.pack(*emu.version))
        elif ptype == rp.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS:
            self.setup_outputs(payload)
        elif ptype == rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS:
            self.setup_inputs(payload)
        elif ptype == rp.RTDE_CONTROL_PACKAGE_START:
            if self.output is None:
                log.info("%s: START without an output recipe (inputs only)", self)
            self.started = True
            self.reply(ptype, _U8.pack(1))
        elif ptype == rp.RTDE_CONTROL_PACKAGE_PAUSE:
            self.started = False
            self.reply(ptype, _U8.pack(1))
        elif ptype == rp.RTDE_TEXT_MESSAGE:
            log.info("%s: text message from the client ignored (%d bytes)", self, len(payload))
        else:
            log.warning("%s: unknown package type %d (%d payload bytes) ignored", self, ptype, len(payload))

    def setup_outputs(self, payload: bytes) -> None:
        if len(payload) < 8:
            log.warning("%s: malformed SETUP_OUTPUTS (%d bytes, no frequency); rejected", self, len(payload))
            self.reply(rp.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS, _U8.pack(0) + b"NOT_FOUND")
            return
        (freq,) = _D.unpack_from(payload, 0)
        names = rp.parse_names(payload[8:])
        types = [rp.OUTPUT_FIELDS.get(n, "NOT_FOUND") for n in names]
        ctrl_hz = self.emu.control_hz
        if not names or "NOT_FOUND" in types:
            missing = [n for n, t in zip(names, types, strict=True) if t == "NOT_FOUND"]
            log.warning("%s: output recipe refused, unknown fields %s", self, missing or "(empty list)")
            self.reply(rp.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS, _U8.pack(0) + ",".join(types).encode())
            return
        if not (freq > 0) or freq > ctrl_hz:
            log.info("%s: output frequency %.3g Hz clamped to the controller rate %g Hz", self, freq, ctrl_hz)
            freq = ctrl_hz
        recipe = rp.Recipe.build(1, names, types)
        with self.send_lock:
            self.output = recipe
            self.divider = max(1, round(ctrl_hz / freq))
        log.info("%s: output recipe of %d fields at %g Hz", self, len(names), ctrl_hz / self.divider)
        self.emu.record("rtde_outputs", conn=self.cid, names=names, frequency=freq)
        self.reply(rp.RTDE_CONTROL_PACKAGE_SETUP_OUTPUTS, _U8.pack(1) + ",".join(types).encode())

    def setup_inputs(self, payload: bytes) -> None:
        names = rp.parse_names(payload)
        types = [rp.INPUT_FIELDS.get(n, "NOT_FOUND") for n in names]
        with self.server.lock:
            owners = self.server.owners
            for k, n in enumerate(names):
                owner = owners.get(n)
                if types[k] != "NOT_FOUND" and owner is not None and owner is not self and not owner.closed:
                    types[k] = "IN_USE"
            ok = bool(names) and "NOT_FOUND" not in types and "IN_USE" not in types
            if ok:
                for n in names:
                    owners[n] = self
        if not ok:
            bad = {n: t for n, t in zip(names, types, strict=True) if t in ("NOT_FOUND", "IN_USE")}
            log.warning("%s: input recipe refused: %s", self, bad or "(empty list)")
            self.reply(rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, _U8.pack(0) + ",".join(types).encode())
            return
        rid = len(self.inputs) + 1
        self.inputs[rid] = rp.Recipe.build(rid, names, types)
        self.emu.record("rtde_inputs", conn=self.cid, recipe=rid, names=names)
        self.reply(rp.RTDE_CONTROL_PACKAGE_SETUP_INPUTS, _U8.pack(rid) + ",".join(types).encode())

    def handle_data(self, payload: bytes) -> None:
        if not payload:
            log.warning("%s: empty DATA_PACKAGE dropped", self)
            return
        rid = payload[0]
        recipe = self.inputs.get(rid)
        if recipe is None:
            log.warning("%s: DATA_PACKAGE for unknown input recipe %d dropped", self, rid)
            return
        try:
            values = recipe.unpack(payload[1:])
        except struct.error:
            log.warning(
                "%s: DATA_PACKAGE for recipe %d has %d bytes, expected %d; dropped",
                self,
                rid,
                len(payload) - 1,
                recipe.struct.size,
            )
            return
        self.emu.apply_inputs(values, self.cid, rid)

    # -- streaming (tick thread) ----------------------------------------------------------------------
    def prepare(self, tick: int, snap, now: float, delay: float) -> bytes:
        """This tick's data package for this client (b"" when none is due), built ahead of the deadline."""
        recipe = self.output
        if not self.started or recipe is None or tick % self.divider:
            return b""
        flat: list = []
        for name, n in zip(recipe.names, recipe.counts, strict=True):
            v = snap(name)
            if n == 1:
                flat.append(v)
            else:
                flat.extend(v)
        try:
            body = recipe.struct.pack(*flat)
        except struct.error as e:
            log.error("%s: cannot pack outputs: %s", self, e)
            return b""
        data = rp.pack_package(rp.RTDE_DATA_PACKAGE, b"\x01" + body)
        if delay > 0 or self.delayed:
            self.delayed.append((now + delay, data))
            data = b""
            while self.delayed and self.delayed[0][0] <= now:
                data += self.delayed.popleft()[1]
        return data

    def send(self, data: bytes) -> None:
        if not data:
            return
        if not self.send_lock.acquire(blocking=False):
            self.dropped += 1
            return
        try:
            if self.pending:
                n = self.sock.send(self.pending, socket.MSG_DONTWAIT)
                self.pending = self.pending[n:]
                if self.pending:
                    self.dropped += 1
                    return
            n = self.sock.send(data, socket.MSG_DONTWAIT)
            if n < len(data):
                self.pending = data[n:]
            self.sent += 1
        except BlockingIOError:
            self.dropped += 1
        except OSError:
            pass
        finally:
            self.send_lock.release()


class RTDEServer:
    def __init__(self, emu: Emulator, host: str, port: int = 30004):
        self.emu, self.host, self.port = emu, host, port
        self.sock: socket.socket | None = None
        self.conns: list[RTDEConnection] = []
        self.owners: dict[str, RTDEConnection] = {}
        self.lock = threading.Lock()
        self.ids = iter(range(1, 1 << 30))

    def start(self) -> None:
        self.sock = self.emu.listen(self.host, self.port)
        threading.Thread(target=self._accept, name="rtde-accept", daemon=True).start()

    def close(self) -> None:
        self.emu.close_listener(self.sock)
        self.drop_connections()

    def _accept(self) -> None:
        sock = self.sock
        while True:
            try:
                c, addr = sock.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Bounded send buffer: a slow reader loses packages instead of queueing seconds of stale data.
            c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
            conn = RTDEConnection(self, c, addr)
            with self.lock:
                self.conns.append(conn)
            log.info("%s connected", conn)
            threading.Thread(target=conn.serve, name=f"rtde-{conn.cid}", daemon=True).start()

    def remove(self, conn: RTDEConnection, reason: str) -> None:
        conn.closed = True
        conn.started = False
        with self.lock:
            if conn in self.conns:
                self.conns.remove(conn)
            for name in [n for n, c in self.owners.items() if c is conn]:
                del self.owners[name]
        try:
            conn.sock.close()
        except OSError:
            pass
        log.info("%s disconnected (%s; %d packages sent, %d dropped)", conn, reason, conn.sent, conn.dropped)

    def connections(self) -> list[RTDEConnection]:
        with self.lock:
            return list(self.conns)

    def drop_connections(self) -> None:
        for conn in self.connections():
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def prepare(self, tick: int, snap, now: float, delay: float) -> list[tuple[RTDEConnection, bytes]]:
        return [(conn, conn.prepare(tick, snap, now, delay)) for conn in self.connections()]

    @staticmethod
    def send(prepared: list[tuple[RTDEConnection, bytes]]) -> None:
        for conn, data in prepared:
            conn.send(data)


def wait_closed(conn: RTDEConnection, timeout: float = 1.0) -> bool:
    t_end = time.monotonic() + timeout
    while not conn.closed and time.monotonic() < t_end:
        time.sleep(0.01)
    return conn.closed
