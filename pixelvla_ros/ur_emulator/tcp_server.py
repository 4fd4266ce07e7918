"""A listening socket whose connections are each served on a thread: the dashboard and script ports."""

from __future__ import annotations

import socket
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixelvla_ros.ur_emulator.emulator import Emulator


class ThreadedTcpServer:
    """Accepts on (host, port); subclasses implement `_serve(connection, address)` and call `_forget`."""

    thread_name = "tcp"

    def __init__(self, emu: Emulator, host: str, port: int):
        self.emu, self.host, self.port = emu, host, port
        self.sock: socket.socket | None = None
        self.conns: set[socket.socket] = set()
        self.lock = threading.Lock()

    def start(self) -> None:
        self.sock = self.emu.listen(self.host, self.port)
        threading.Thread(target=self._accept, name=f"{self.thread_name}-accept", daemon=True).start()

    def close(self) -> None:
        self.emu.close_listener(self.sock)
        self.drop_connections()

    def drop_connections(self) -> None:
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            shutdown(c)

    def _accept(self) -> None:
        sock = self.sock
        while True:
            try:
                c, addr = sock.accept()
            except OSError:
                return  # listener closed
            with self.lock:
                self.conns.add(c)
            threading.Thread(
                target=self._serve, args=(c, addr), name=f"{self.thread_name}-conn", daemon=True
            ).start()

    def _serve(self, c: socket.socket, addr) -> None:
        raise NotImplementedError

    def _forget(self, c: socket.socket) -> None:
        """Called by `_serve` when a connection ends."""
        with self.lock:
            self.conns.discard(c)
        shutdown(c)


def shutdown(c: socket.socket) -> None:
    """Shut down and close a socket, ignoring one that is already gone."""
    try:
        c.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        c.close()
    except OSError:
        pass
