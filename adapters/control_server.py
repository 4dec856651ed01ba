"""The control mailbox's transport: a Unix socket served on the I/O loop.

Only the local user can send: the socket lives in a 0700 directory with mode
0600, the peer's uid is checked (SO_PEERCRED), and the request must carry the
token from a 0600 file written at start. A request that is malformed,
unauthorised, expired or names an unknown command is answered with a clear
error here, recorded as ``control.rejected``, and never reaches an actor.
Valid commands go to the supervisor as ``ExecuteCommand``; its
``CommandReplied`` comes back through a reply port, matched by request id.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import secrets
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from loguru import logger

from adapters.event_store import EventStore
from adapters.io_loop import IOLoop
from core.control_protocol import (
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
    ControlReply,
    ControlRequest,
    decode_request,
    encode,
    validate_command,
)
from core.events import Event, Severity
from core.messages import CommandReplied, ExecuteCommand

_UNIX_PATH_MAX = 107


class _ReplyPort:
    """Looks like an ActorRef to the supervisor; resolves an asyncio future."""

    def __init__(self, loop: asyncio.AbstractEventLoop, future: asyncio.Future[CommandReplied]) -> None:
        self._loop, self._future = loop, future

    def tell(self, message: CommandReplied) -> None:
        self._loop.call_soon_threadsafe(self._resolve, message)

    def _resolve(self, message: CommandReplied) -> None:
        if not self._future.done():
            self._future.set_result(message)


class ControlServer:
    def __init__(
        self,
        socket_path: Path,
        io: IOLoop,
        store: EventStore,
        supervisor: Callable[[], Any],
        *,
        max_ttl_ms: Callable[[], int],
        wall_ms: Callable[[], int],
        reply_timeout_s: float = 10.0,
    ) -> None:
        self.socket_path = Path(socket_path)
        self.token_path = self.socket_path.with_suffix(".token")
        self._io = io
        self._store = store
        self._supervisor = supervisor
        self._max_ttl_ms = max_ttl_ms
        self._wall_ms = wall_ms
        self._reply_timeout_s = reply_timeout_s
        self._server: asyncio.AbstractServer | None = None
        self._token = ""
        self._owns_files = False  # only a server that bound the socket may remove it

    def start(self) -> None:
        if len(str(self.socket_path)) > _UNIX_PATH_MAX:
            raise ValueError(f"control socket path is too long for a Unix socket ({len(str(self.socket_path))} > {_UNIX_PATH_MAX}): {self.socket_path}")
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.socket_path.parent, 0o700)
        self._remove_stale_socket()
        self._token = secrets.token_hex(32)
        self._io.run(self._start(), 5)
        self._owns_files = True
        # The token appears only once the socket answers: a client that can
        # read it can talk to us.
        tmp = self.token_path.with_suffix(".token.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self._token)
        os.replace(tmp, self.token_path)

    async def _start(self) -> None:
        old_umask = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.socket_path), limit=MAX_REQUEST_BYTES)
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)

    def _remove_stale_socket(self) -> None:
        if not self.socket_path.exists():
            return
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.socket_path))
        except OSError:
            self.socket_path.unlink(missing_ok=True)  # left behind by a killed bot
            return
        finally:
            probe.close()
        raise RuntimeError(f"another tradebot is answering on {self.socket_path}")

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._io.run(self._stop(), 5)
            except Exception as exc:
                logger.warning("control server did not stop cleanly: {}", exc)
            self._server = None
        if self._owns_files:
            self.socket_path.unlink(missing_ok=True)
            self.token_path.unlink(missing_ok=True)
            self._owns_files = False

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    # -------------------------------------------------------------- serving
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_id = ""
        try:
            reply = await self._serve_one(reader, writer)
            request_id = reply.id
        except Exception as exc:
            logger.opt(exception=exc).error("control: error serving a request")
            reply = ControlReply(id=request_id, ok=False, error=f"internal error: {type(exc).__name__}")
        try:
            writer.write(encode(reply) + b"\n")
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> ControlReply:
        peer_uid = _peer_uid(writer)
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
        except (asyncio.LimitOverrunError, ValueError):
            await _discard_rest(reader)  # so the client can finish sending and read our answer
            return self._reject("", f"malformed request: larger than {MAX_REQUEST_BYTES} bytes", None)
        except TimeoutError:
            return self._reject("", "malformed request: no request line within 5 s", None)
        if peer_uid is not None and peer_uid != os.getuid():
            return self._reject("", f"unauthorised: uid {peer_uid} is not the bot's user", None)
        try:
            req = decode_request(line)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return self._reject("", f"malformed request: {exc}", None)
        if not hmac.compare_digest(req.token.encode(), self._token.encode()):
            return self._reject(req.id, "unauthorised: bad token (is this the token of the running bot?)", req)
        if req.v != PROTOCOL_VERSION:
            return self._reject(req.id, f"unsupported protocol version {req.v}; this bot speaks {PROTOCOL_VERSION}", req)
        now = self._wall_ms()
        deadline = req.sent_at_ms + max(0, min(req.ttl_ms, self._max_ttl_ms()))
        if now > deadline:
            return self._reject(req.id, f"expired: sent {now - req.sent_at_ms} ms ago, valid for {deadline - req.sent_at_ms} ms; not executed", req)
        args, error = validate_command(req.command, req.args)
        if error:
            return self._reject(req.id, error, req)
        supervisor = self._supervisor()
        if supervisor is None or not supervisor.is_alive():
            return self._reject(req.id, "the bot is starting up or shutting down; try again", req)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[CommandReplied] = loop.create_future()
        supervisor.tell(ExecuteCommand(command=req.command, args=args or {}, request_id=req.id, deadline_wall_ms=deadline, reply_to=_ReplyPort(loop, future)))
        try:
            answer = await asyncio.wait_for(future, self._reply_timeout_s)
        except TimeoutError:
            return ControlReply(id=req.id, ok=False, error=f"no reply from the supervisor within {self._reply_timeout_s:.0f} s")
        return ControlReply(id=req.id, ok=answer.ok, result=answer.result, error=answer.error)

    def _reject(self, request_id: str, error: str, req: ControlRequest | None) -> ControlReply:
        data: dict[str, Any] = {"error": error}
        if req is not None:
            data.update(command=req.command, args=req.args)
        try:
            self._store.append(Event(type="control.rejected", ts_ms=self._wall_ms(), actor="control", severity=Severity.WARNING, correlation_id=request_id or None, data=data))
        except Exception as exc:
            logger.warning("control: could not record rejection: {}", exc)
        logger.bind(actor="control").warning("rejected control request {}: {}", request_id or "-", error)
        return ControlReply(id=request_id, ok=False, error=error)


async def _discard_rest(reader: asyncio.StreamReader, limit_bytes: int = 16 * 1024 * 1024, timeout_s: float = 5.0) -> None:
    """Read and drop what is left of an oversized request (bounded in bytes and time)."""
    total = 0
    try:
        while total < limit_bytes:
            chunk = await asyncio.wait_for(reader.read(65536), timeout_s)
            if not chunk:
                return
            total += len(chunk)
    except (TimeoutError, ConnectionError):
        return


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid
