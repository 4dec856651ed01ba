"""``tradebot ctl``'s side of the control mailbox (plain blocking socket)."""

from __future__ import annotations

import socket
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec

from core.control_protocol import PROTOCOL_VERSION, ControlReply, ControlRequest, decode_reply, encode


class BotNotRunning(RuntimeError):
    """Nothing is answering on the control socket."""


def send_command(
    socket_path: Path,
    command: str,
    args: dict[str, Any] | None = None,
    *,
    ttl_ms: int = 10_000,
    timeout_s: float = 15.0,
    token: str | None = None,
    sent_at_ms: int | None = None,
) -> ControlReply:
    """Send one command and wait for its reply."""
    socket_path = Path(socket_path)
    request = _request(socket_path, command, args, token=token, ttl_ms=ttl_ms, sent_at_ms=sent_at_ms)
    return send_raw(socket_path, encode(request) + b"\n", timeout_s=timeout_s)


def send_raw(socket_path: Path, payload: bytes, *, timeout_s: float = 15.0) -> ControlReply:
    """Send raw bytes as a request (also used by tests for malformed input)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(socket_path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise BotNotRunning(f"no running bot is answering on {socket_path}") from None
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        raise TimeoutError(f"no reply within {timeout_s:.0f} s") from None
    finally:
        sock.close()
    return _reply(b"".join(chunks))


def _request(socket_path: Path, command: str, args: dict[str, Any] | None, *, token: str | None, ttl_ms: int, sent_at_ms: int | None) -> ControlRequest:
    """A signed request; the token is read from the file beside the socket unless given."""
    token_path = socket_path.with_suffix(".token")
    if token is None:
        try:
            token = token_path.read_text().strip()
        except FileNotFoundError:
            raise BotNotRunning(f"no running bot: {token_path} does not exist (start it with `tradebot run`)") from None
        except PermissionError:
            raise PermissionError(f"cannot read {token_path}: only the user running the bot may send commands") from None
    return ControlRequest(
        v=PROTOCOL_VERSION,
        id=uuid.uuid4().hex[:16],
        token=token,
        command=command,
        args=args or {},
        sent_at_ms=time.time_ns() // 1_000_000 if sent_at_ms is None else sent_at_ms,
        ttl_ms=ttl_ms,
    )


def _reply(data: bytes) -> ControlReply:
    if not data:
        raise ConnectionError("the bot closed the connection without a reply")
    try:
        return decode_reply(data)
    except msgspec.DecodeError as exc:
        raise ConnectionError(f"unreadable reply from the bot: {exc}") from None


async def send_command_async(socket_path: Path, command: str, args: dict[str, Any] | None = None, *, ttl_ms: int = 10_000, timeout_s: float = 15.0) -> ControlReply:
    """:func:`send_command` for a caller on an event loop (the dashboard's actions): the same request, token
    and socket as ``tradebot ctl``, so the bot applies the same checks and records."""
    import asyncio

    socket_path = Path(socket_path)
    request = _request(socket_path, command, args, token=None, ttl_ms=ttl_ms, sent_at_ms=None)
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(socket_path)), timeout_s)
    except (FileNotFoundError, ConnectionRefusedError):
        raise BotNotRunning(f"nothing is answering on {socket_path}") from None
    try:
        writer.write(encode(request) + b"\n")
        await writer.drain()
        writer.write_eof()
        data = await asyncio.wait_for(reader.read(), timeout_s)
    except TimeoutError:
        raise TimeoutError(f"no reply within {timeout_s:.0f} s") from None
    finally:
        writer.close()
    return _reply(data)
