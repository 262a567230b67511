"""The SSH transport's own settings: what it changes from paramiko's, and only on its own connections;
and the command reader's end: a command's whole output is read, however its last packets arrive."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

import paramiko

from remediation.clients.remote_host import ParamikoHost, _Capture, _Transport


def test_this_side_asks_for_a_new_key_at_the_rfc_4344_bound_not_at_512_mib() -> None:
    # paramiko's own rekey at 512 MiB deadlocks when a command's output ends during it (see
    # `_REKEY_BYTES`; the live case is in tests/integration/test_remote_host_client.py).
    ours, theirs = socket.socketpair()
    transport = _Transport(ours)
    try:
        assert transport.packetizer.REKEY_BYTES == 2**36
        assert transport.packetizer.REKEY_PACKETS == 2**31
        # Set on this transport's packetizer, not on paramiko's class: other SSH users in the process keep theirs.
        assert paramiko.packet.Packetizer.REKEY_BYTES == 2**29
        assert paramiko.Transport(theirs).packetizer.REKEY_BYTES == 2**29
    finally:
        transport.close()
        ours.close()
        theirs.close()


def test_the_transport_sends_each_packet_at_once_on_its_own_tcp_connections_only() -> None:
    # Nagle's algorithm held a channel open behind the previous close's delayed ACK: 40 ms per command
    # on a shared connection (the live figure is in tests/integration/test_remote_host_client.py).
    with socket.create_server(("127.0.0.1", 0)) as server:
        ours = socket.create_connection(server.getsockname())
        theirs = socket.create_connection(server.getsockname())
        try:
            assert ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
            transport, plain = _Transport(ours), paramiko.Transport(theirs)
            assert ours.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert theirs.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # paramiko's own: unchanged
            transport.close()
            plain.close()
        finally:
            ours.close()
            theirs.close()
    # A socket that is not TCP (a proxy command's, a test's pair) is left as it is: setting the option
    # on it would raise.
    one, other = socket.socketpair()
    try:
        _Transport(one).close()
    finally:
        one.close()
        other.close()


class _FastCommandChannel:
    """A channel whose command ends while it is read: the rest of its output, its EOF and its exit
    status all arrive just after the reader found the buffer empty (a `tail` of a 310-line access
    log did this in CI: the reader kept its first packet's lines and `block-source` saw "nothing to
    block")."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self._buffer, self._rest = bytearray(first), rest
        self.eof_received = self.closed = self._ended = False

    def recv_ready(self) -> bool:
        return bool(self._buffer)

    def recv(self, n: int) -> bytes:
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def recv_stderr_ready(self) -> bool:
        return False

    def recv_stderr(self, n: int) -> bytes:
        return b""

    def exit_status_ready(self) -> bool:
        if not self._ended:  # the transport thread queues the rest, then EOF, then the exit status
            self._buffer += self._rest
            self.eof_received = self._ended = True
        return True


def test_output_arriving_with_the_eof_is_read_to_its_end() -> None:
    first = b"".join(b"127.0.0.1 line %d\n" % i for i in range(58))
    rest = b"".join(b"127.0.0.2 line %d\n" % i for i in range(5000))
    out, err = _Capture(1 << 24, None, None), _Capture(1 << 24, None, None)
    reader = SimpleNamespace(where="test", _transport_active=lambda: True, close=lambda: None)
    ParamikoHost._pump(reader, _FastCommandChannel(first, rest), out, err,  # type: ignore[arg-type]
                       "tail -n 50000 access.log", time.monotonic() + 5, 5)
    assert out.finish().encode() == first + rest
