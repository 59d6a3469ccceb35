"""A real Matrix client (matrix-nio, from the package index) pointed at a lab deployment: through
the lab host's published HTTPS port, Caddy's local CA trusted, every name resolved to loopback
(where the lab's ports are). What it sees is what a user's client would."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import nio
from aiohttp.abc import AbstractResolver


class LoopbackResolver(AbstractResolver):
    """Every name is 127.0.0.1: the lab publishes its ports there."""

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        return [{"hostname": host, "host": "127.0.0.1", "port": port, "family": socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST}]

    async def close(self) -> None:
        return None


def client(matrix_host: str, https_port: int, ca_file: Path, user: str) -> nio.AsyncClient:
    """A client for `user` (a full user ID) at https://matrix_host, reached on the lab's port."""
    context = ssl.create_default_context(cafile=str(ca_file))
    made = nio.AsyncClient(f"https://{matrix_host}:{https_port}", user, ssl=context)
    made.client_session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=LoopbackResolver(), ssl=context))
    return made


async def login(made: nio.AsyncClient, password: str) -> None:
    answer = await made.login(password, device_name="lab-test")
    assert isinstance(answer, nio.LoginResponse), answer


async def messages(made: nio.AsyncClient, room_id: str) -> list[str]:
    """The bodies of a room's text messages, oldest first, as the client reads them back."""
    sync = await made.sync(timeout=0, full_state=True)
    assert isinstance(sync, nio.SyncResponse), sync
    answer = await made.room_messages(room_id, start=sync.next_batch, limit=100)
    assert isinstance(answer, nio.RoomMessagesResponse), answer
    return [event.body for event in reversed(answer.chunk) if isinstance(event, nio.RoomMessageText)]


async def room_notices(made: nio.AsyncClient, room_name: str) -> tuple[str, list[str]]:
    """The room named `room_name` that the logged-in user is in, and its notices (m.notice: what
    the self-test posts), oldest first."""
    sync = await made.sync(timeout=0, full_state=True)
    assert isinstance(sync, nio.SyncResponse), sync
    (room_id,) = [r for r, room in made.rooms.items() if room.name == room_name]
    answer = await made.room_messages(room_id, start=sync.next_batch, limit=50)
    assert isinstance(answer, nio.RoomMessagesResponse), answer
    return room_id, [event.body for event in reversed(answer.chunk) if isinstance(event, nio.RoomMessageNotice)]
