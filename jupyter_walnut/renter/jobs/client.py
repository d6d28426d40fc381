"""The renter's calls to a provider's job API (signed like every management call)."""

from __future__ import annotations

from typing import BinaryIO

from ...common.protocol import API
from ...common.signed_requests import sign_request
from ..provider_client import ProviderClient


def _base(session_id: str) -> str:
    return f"{API}/sessions/{session_id}/jobs"


async def submit(client: ProviderClient, session_id: str, body: dict) -> dict:
    return await client._call("POST", _base(session_id), body)


async def get(client: ProviderClient, session_id: str, job_id: str) -> dict:
    return await client._call("GET", f"{_base(session_id)}/{job_id}")


async def cancel(client: ProviderClient, session_id: str, job_id: str) -> dict:
    return await client._call("DELETE", f"{_base(session_id)}/{job_id}")


async def results(client: ProviderClient, session_id: str, job_id: str, sink: BinaryIO,
                  limit: int) -> int:
    """Write the results archive (.tar.gz) the provider serves into `sink`, through the
    client's pinned TLS, refusing more than `limit` bytes; returns the bytes written."""
    path = f"{_base(session_id)}/{job_id}/results"
    headers = sign_request(client.key, "GET", client._path_prefix + path, b"",
                           audience=await client.audience())
    return await client.download(path, headers, sink, limit)
