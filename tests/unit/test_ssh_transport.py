"""The SSH transport's own settings: what it changes from paramiko's, and only on its own connections."""

from __future__ import annotations

import socket

import paramiko

from remediation.clients.remote_host import _Transport


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
