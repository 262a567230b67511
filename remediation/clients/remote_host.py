"""Commands on a target host over SSH (paramiko), host keys pinned by a known_hosts file.

Trust comes only from the known_hosts file the inventory names: system host keys are
never loaded and an unknown key is never added. Commands are argument lists joined
with `shlex.join`, so no parameter is ever interpreted by the remote shell.
"""

from __future__ import annotations

import codecs
import select
import shlex
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Protocol, Self, runtime_checkable

import paramiko
from pydantic import BaseModel, ConfigDict

from remediation.errors import (
    AuthError,
    BadInputError,
    ClientError,
    CommandFailedError,
    HostKeyError,
    PermanentError,
    RetryableError,
)

__all__ = ["CommandResult", "LineRedaction", "OutputRedactor", "ParamikoHost", "RemoteHost", "build_command"]

#: After the exit status, how long to wait for the channel's EOF.
_EOF_GRACE_S = 2.0
_TAIL = 2000
#: The channel's receive window. paramiko's 2 MiB means a window adjust (a send from the reading
#: thread, and a GIL hand-over) every 200 KiB read. The window is also what may sit unread in the
#: channel's buffer while the reader is busy redacting: bounded memory, not a free knob. (A larger
#: maximum packet would not help: sshd sends a session's output in packets of at most 32 KiB.)
_WINDOW = 4 * 1024 * 1024
#: One read takes whatever the channel holds, up to this: a large log moves in few, large calls.
#: (Reading the whole window at once saves paramiko some copying but costs ~20 MB of transient
#: strings downstream: decoded, joined, redacted, encoded.)
_READ = 1024 * 1024
#: Output with no newline for this long (a binary file, a log written without newlines) is handed on
#: in pieces: waiting for the end of the line held all of it in memory (a 200 MiB line: 1.5 GB of
#: RSS) and re-copied it at every read. The evidence file's redaction stream cuts such a line at
#: the same length.
_LONG_LINE = 4 * 1024 * 1024
#: AES-GCM first: one AEAD pass authenticates as it decrypts (no HMAC over every byte), in C via
#: `cryptography`. paramiko's own order and set follow as fallbacks; nothing weaker is added.
_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
#: When this side asks for a new key: after 64 GiB (2**32 blocks of 16 bytes, RFC 4344's bound for
#: 128-bit ciphers, and OpenSSH's own default) or 2**31 packets. paramiko asks after 512 MiB, and
#: a command whose output ends while that key exchange is under way deadlocks paramiko's reading
#: thread for 30 s, then fails "Key-exchange timed out waiting for key negotiation" with the tail
#: of the output lost: its thread answers the channel's close with a send that waits for the key
#: exchange, which only that thread can finish (paramiko issue #822). A 512 MiB log stalled or
#: failed so in most tries. sshd still rekeys when it wants to; a rekey it starts does not deadlock.
_REKEY_BYTES = 2**36
_REKEY_PACKETS = 2**31


class CommandResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    command: str
    exit_code: int
    stdout: str
    stderr: str
    #: True when stdout or stderr exceeded the cap and only the tail was kept.
    truncated: bool = False
    duration_s: float

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def check(self) -> CommandResult:
        """Return self if the command exited 0, else raise CommandFailedError (a PermanentError)."""
        if self.exit_code != 0:
            # A host built with a redactor stored its output redacted already; the task boundary scrubs again.
            tail = self.stderr[-_TAIL:].strip() or self.stdout[-_TAIL:].strip() or "(no output)"
            how = "was killed by a signal" if self.exit_code < 0 else f"exited {self.exit_code}"
            raise CommandFailedError(f"`{self.command}` {how}: {tail}", self.exit_code)
        return self


@runtime_checkable
class RemoteHost(Protocol):
    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        timeout: float | None = None,
        on_output: Callable[[str], None] | None = None,
    ) -> CommandResult: ...

    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


def build_command(argv: Sequence[str], cwd: str | None = None) -> str:
    """The exact remote command line: every argument quoted, never a caller-built string."""
    # A bare str is a Sequence[str] too; joining its characters would run something else entirely.
    if isinstance(argv, str | bytes) or not argv:
        raise BadInputError("a command is a non-empty list of arguments, not a string")
    for arg in argv:
        if not isinstance(arg, str) or "\x00" in arg:
            raise BadInputError(f"command argument {arg!r} is not a plain string")
    command = shlex.join(argv)
    if cwd is not None:
        if not cwd or "\x00" in cwd:
            raise BadInputError(f"cwd {cwd!r} is not a directory path")
        command = f"cd {shlex.quote(cwd)} && {command}"
    return command


class _RejectUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy, with a message an on-call engineer can act on."""

    def __init__(self, known_hosts: str) -> None:
        self._known_hosts = known_hosts

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> NoReturn:
        raise HostKeyError(
            f"ssh {hostname}: host key ({key.get_name()} {key.fingerprint}) is not in known_hosts file "
            f"{self._known_hosts}; refusing to connect. Add the host's key there after checking it out of band."
        )


class _Transport(paramiko.Transport):
    """paramiko's Transport with a larger window, AES-GCM preferred, this side's rekeying at the
    RFC 4344 bound rather than paramiko's 512 MiB (see `_WINDOW`, `_CIPHERS`, `_REKEY_BYTES`), and
    Nagle's algorithm off on its TCP socket (see `__init__`).

    Host keys, key exchange and authentication are paramiko's own, unchanged."""

    _preferred_ciphers = _CIPHERS + tuple(
        c for c in paramiko.Transport._preferred_ciphers if c not in _CIPHERS  # type: ignore[attr-defined]
    )

    def __init__(self, sock: Any, **kwargs: Any) -> None:
        kwargs.setdefault("default_window_size", _WINDOW)
        if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
            # paramiko sets no socket options. With Nagle's algorithm on, a channel open sent while
            # the previous channel's close is still unacknowledged waits for the peer's delayed ACK:
            # 40 ms of every command after the first on a shared connection (42 ms of a 50 ms `true`
            # on loopback, 0.4 ms without). paramiko sends each SSH packet whole, so there is
            # nothing for Nagle to coalesce.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().__init__(sock, **kwargs)
        self.packetizer.REKEY_BYTES = _REKEY_BYTES
        self.packetizer.REKEY_PACKETS = _REKEY_PACKETS


class LineRedaction(Protocol):
    """One output stream's redaction (`RedactionStream`): complete lines in, redacted text out; or any
    piece of text, kept until it can be redacted with what follows (`feed`)."""

    def feed_lines(self, text: str) -> str: ...
    def feed(self, chunk: str) -> str: ...
    def finish(self) -> str: ...


class OutputRedactor(Protocol):
    """What the host needs of a redactor (`remediation.evidence.redact.Redactor`)."""

    def stream(self) -> LineRedaction: ...
    def text(self, text: str) -> str: ...


class _Capture:
    """Keeps the tail of one stream within a byte cap and hands complete lines to a callback.

    `on_line` gets each line (without its newline); `on_lines` gets, per packet received, all the
    complete lines in it as one string (newlines kept) — far fewer calls for a large log. With a
    `redact` stream, what is kept and handed out is redacted, the command's whole output through
    one stream: a key printed over many lines goes whole, not line by line.
    """

    def __init__(self, cap: int, on_line: Callable[[str], None] | None,
                 on_lines: Callable[[str], None] | None = None, redact: LineRedaction | None = None) -> None:
        self._buf = bytearray()
        self._cap = cap
        self.truncated = False
        self._on_line = on_line
        self._on_lines = on_lines
        self._redact = redact
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        #: Redacted text after its last newline (a removed key block can end output mid-line).
        self._partial = ""

    def feed(self, data: bytes) -> None:
        if self._redact is None:
            self._keep(data)
            if self._on_line is None and self._on_lines is None:
                return
        text = self._decoder.decode(data)
        if self._pending:
            text = self._pending + text
        cut = text.rfind("\n") + 1
        if cut == len(text):  # the common case for a large read: no copy
            self._pending = ""
            self._out(text)
        elif cut:
            self._pending = text[cut:]
            self._out(text[:cut])
        elif len(text) >= _LONG_LINE:
            self._pending = ""
            self._out(text, whole_lines=False)
        else:
            self._pending = text

    def finish(self) -> str:
        if self._redact is not None or self._on_line is not None or self._on_lines is not None:
            rest = self._pending + self._decoder.decode(b"", final=True)
            self._pending = ""
            if self._redact is not None:
                clean = (self._redact.feed_lines(rest) if rest else "") + self._redact.finish()
                self._keep(clean.encode())
                rest, self._partial = self._partial + clean, ""
            if rest:
                self._hand_out(rest if rest.endswith("\n") else rest + "\n")
        return self._buf.decode("utf-8", errors="replace")

    def _out(self, text: str, *, whole_lines: bool = True) -> None:
        """Hand on `text`: complete lines, or (not `whole_lines`) a piece of a line too long to wait for."""
        if self._redact is not None:
            # A piece of a line goes through the stream's own buffer, which redacts it with what follows.
            clean = self._redact.feed_lines(text) if whole_lines else self._redact.feed(text)
            self._keep(clean.encode())
            joined = self._partial + clean
            cut = joined.rfind("\n") + 1 or (len(joined) if len(joined) >= _LONG_LINE else 0)
            text, self._partial = joined[:cut], joined[cut:]
        if text:
            self._hand_out(text)

    def _keep(self, data: bytes) -> None:
        if len(data) >= self._cap:  # a large read: only its tail can stay
            self.truncated = self.truncated or len(data) > self._cap or bool(self._buf)
            self._buf = bytearray(data[len(data) - self._cap :])
            return
        self._buf += data
        if len(self._buf) > self._cap:
            del self._buf[: len(self._buf) - self._cap]
            self.truncated = True

    def _hand_out(self, lines: str) -> None:
        """`lines` ends with a newline, unless it is a piece of a line longer than `_LONG_LINE`."""
        if self._on_lines is not None:
            try:
                self._on_lines(lines)
            except Exception:
                self._on_lines = None
        if self._on_line is not None:
            for line in lines.removesuffix("\n").split("\n"):
                self._emit(line)

    def _emit(self, line: str) -> None:
        if self._on_line is None:
            return
        try:
            self._on_line(line.rstrip("\r"))
        except Exception:
            # A broken log sink must not abandon a half-finished rebuild; keep capturing silently.
            self._on_line = None


class ParamikoHost:
    """`RemoteHost` over paramiko. Connects on first use (or on `with`); `close()` disconnects."""

    def __init__(
        self,
        address: str,
        port: int,
        user: str,
        key_path: str | Path,
        known_hosts_path: str | Path,
        *,
        connect_timeout: float = 10.0,
        command_timeout: float = 600.0,
        output_cap_bytes: int = 1024 * 1024,
        redactor: OutputRedactor | None = None,
    ) -> None:
        self.address = address
        self.port = port
        self.user = user
        self._key_path = str(key_path)
        self._known_hosts = str(known_hosts_path)
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._cap = output_cap_bytes
        self._redactor = redactor
        self._client: paramiko.SSHClient | None = None

    @property
    def where(self) -> str:
        return f"{self.user}@{self.address}:{self.port}"

    def connect(self) -> None:
        if self._client is not None and self._transport_active():
            return
        self.close()
        client = paramiko.SSHClient()
        # Only the inventory's file; load_system_host_keys() is deliberately never called.
        try:
            client.load_host_keys(self._known_hosts)
        except (OSError, paramiko.SSHException) as exc:
            raise HostKeyError(
                f"ssh {self.where}: cannot read known_hosts file {self._known_hosts}: {exc}"
            ) from None
        client.set_missing_host_key_policy(_RejectUnknownHost(self._known_hosts))
        try:
            client.connect(
                self.address, port=self.port, username=self.user, key_filename=self._key_path,
                timeout=self._connect_timeout, banner_timeout=self._connect_timeout,
                auth_timeout=self._connect_timeout, allow_agent=False, look_for_keys=False,
                transport_factory=_Transport,
            )
        except BaseException as exc:
            client.close()
            if isinstance(exc, Exception):
                raise self._map_connect_error(exc) from None
            raise
        self._client = client

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        timeout: float | None = None,
        on_output: Callable[[str], None] | None = None,
        on_lines: Callable[[str], None] | None = None,
    ) -> CommandResult:
        """Run one command; a non-zero exit is returned (see `CommandResult.check`), not raised.

        `on_output` gets each line of stdout and stderr as it arrives (interleaved, without the
        newline), e.g. to log a rebuild live; `on_lines` gets the complete lines of each packet
        as one string, newlines kept (for streaming a large log to disk); stored output keeps
        the last `output_cap_bytes` of each stream. With a redactor, all of that (and the command
        line as shown in the result and in errors) is redacted, one stream per output stream.
        A timeout or a dropped connection raises RetryableError.
        """
        sent = build_command(argv, cwd)
        command = self._redactor.text(sent) if self._redactor is not None else sent
        limit = self._command_timeout if timeout is None else timeout
        self.connect()
        assert self._client is not None
        transport = self._client.get_transport()
        if transport is None:
            raise RetryableError(f"ssh {self.where}: connection lost before `{command}`")
        started = time.monotonic()
        try:
            channel = transport.open_session(timeout=self._connect_timeout)
            channel.exec_command(sent)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            raise RetryableError(f"ssh {self.where}: could not start `{command}`: {exc}") from None
        out, err = (_Capture(self._cap, on_output, on_lines, self._redactor.stream() if self._redactor else None)
                    for _ in range(2))
        try:
            self._pump(channel, out, err, command, started + limit, limit)
            exit_code = channel.recv_exit_status()
        finally:
            channel.close()
        if exit_code == -1 and not self._transport_active():
            # The channel closed without an exit status because the connection went away.
            self.close()
            raise RetryableError(f"ssh {self.where}: connection lost while running `{command}`")
        return CommandResult(
            command=command, exit_code=exit_code, stdout=out.finish(), stderr=err.finish(),
            truncated=out.truncated or err.truncated, duration_s=round(time.monotonic() - started, 3),
        )

    def _pump(
        self, channel: paramiko.Channel, out: _Capture, err: _Capture, command: str, deadline: float,
        limit: float,
    ) -> None:
        exited_at: float | None = None
        while True:
            got = False
            while channel.recv_ready():
                out.feed(channel.recv(_READ))
                got = True
            while channel.recv_stderr_ready():
                err.feed(channel.recv_stderr(_READ))
                got = True
            if channel.exit_status_ready():
                # The exit status can overtake the last data packets: output is complete only at EOF.
                # A command that leaves a daemon holding its stdout never sends EOF; give it a grace.
                exited_at = exited_at or time.monotonic()
                # EOF first, then the buffers: the transport queues data before the EOF behind it,
                # so buffers found empty after EOF are the end. Looked at the other way round, the
                # rest of the output and the EOF could arrive in between, and be left unread.
                ended = (channel.eof_received or channel.closed
                         or time.monotonic() - exited_at > _EOF_GRACE_S)
                if ended and not channel.recv_ready() and not channel.recv_stderr_ready():
                    return
            if time.monotonic() >= deadline:
                # Closing the channel hangs up on the command; it may still finish on the host.
                raise RetryableError(
                    f"ssh {self.where}: `{command}` timed out after {limit:g}s (it may still be running)"
                )
            if not self._transport_active():
                self.close()
                raise RetryableError(f"ssh {self.where}: connection lost while running `{command}`")
            if not got:
                # The channel's pipe wakes us for stdout, stderr and close alike.
                select.select([channel], [], [], min(0.2, max(0.0, deadline - time.monotonic())))

    def _transport_active(self) -> bool:
        transport = self._client.get_transport() if self._client is not None else None
        return transport is not None and transport.is_active()

    def _map_connect_error(self, exc: Exception) -> ClientError:
        if isinstance(exc, ClientError):
            return exc
        what = f"ssh {self.where}"
        if isinstance(exc, paramiko.BadHostKeyException):
            return HostKeyError(
                f"{what}: host key does not match known_hosts file {self._known_hosts} "
                f"(server offered {exc.key.get_name()} {exc.key.fingerprint}, expected "
                f"{exc.expected_key.fingerprint}); refusing to connect: possible man-in-the-middle "
                "or a rebuilt host"
            )
        if isinstance(exc, paramiko.PasswordRequiredException):
            return AuthError(f"{what}: private key {self._key_path} is encrypted and no passphrase is configured")
        if isinstance(exc, paramiko.AuthenticationException):
            return AuthError(f"{what}: authentication failed with key {self._key_path}: {exc}")
        if isinstance(exc, FileNotFoundError):
            return PermanentError(f"{what}: private key file {self._key_path} does not exist")
        if isinstance(exc, socket.timeout | TimeoutError):
            return RetryableError(f"{what}: connect timed out after {self._connect_timeout:g}s")
        if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError | OSError | EOFError):
            return RetryableError(f"{what}: cannot connect: {exc}")
        if isinstance(exc, paramiko.SSHException):
            # Banner/negotiation trouble: often a restarting sshd or an overloaded host.
            return RetryableError(f"{what}: SSH negotiation failed: {exc}")
        return PermanentError(f"{what}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ParamikoHost({self.where})"
