"""The renter's calls to a provider's job API (signed like every management call)."""

from __future__ import annotations

from tornado import httpclient

from ..provider_client import API, ProviderAPIError, ProviderClient
from ..signed_requests import sign_request


def _base(session_id: str) -> str:
    return f"{API}/sessions/{session_id}/jobs"


async def submit(client: ProviderClient, session_id: str, body: dict) -> dict:
    return await client._call("POST", _base(session_id), body)


async def get(client: ProviderClient, session_id: str, job_id: str) -> dict:
    return await client._call("GET", f"{_base(session_id)}/{job_id}")


async def cancel(client: ProviderClient, session_id: str, job_id: str) -> dict:
    return await client._call("DELETE", f"{_base(session_id)}/{job_id}")


async def results(client: ProviderClient, session_id: str, job_id: str) -> bytes:
    """The results archive (.tar.gz) as the provider serves it."""
    path = f"{_base(session_id)}/{job_id}/results"
    headers = sign_request(client.key, "GET", client._path_prefix + path, b"")
    request = httpclient.HTTPRequest(client.base_url + path, headers=headers,
                                     request_timeout=300, connect_timeout=10)
    try:
        resp = await httpclient.AsyncHTTPClient().fetch(request, raise_error=False)
    except OSError as exc:
        raise ProviderAPIError(0, f"provider unreachable: {exc.strerror or exc}") from exc
    if resp.code == 599:
        raise ProviderAPIError(0, f"provider unreachable: {resp.error}")
    if resp.code >= 400:
        raise ProviderAPIError(resp.code, (resp.body or b"").decode(errors="replace")[:200])
    return resp.body
