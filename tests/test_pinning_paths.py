"""Every renter->provider connection honours the certificate pin: the remote kernel behind
`%%walnut run` (REST and websocket) and the download of job results, like the REST API.

The default stack serves a pinned self-signed certificate, which only a pinned client
accepts. The impostor holds a certificate from a CA that the renter's process trusts
(SSL_CERT_FILE): a client on default CA verification would talk to it, and hand it the
session token. It records every request that reaches it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import threading
from pathlib import Path

import pytest
import tornado.netutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from test_jobs import notebook, renter
from test_magics import run
from test_pull_attacks import BUDGET, close_shell, renter_shell, stack_node
from tornado import httpclient, httpserver, web

from jupyter_walnut.common.remote_kernel import KernelError, RemoteKernel
from jupyter_walnut.common.tls import server_context
from jupyter_walnut.renter.jobs import client as jobs_api
from jupyter_walnut.renter.jobs.manager import JobManager
from jupyter_walnut.renter.provider_client import ProviderAPIError, ProviderClient

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(_name(issuer)).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


class Recorder(web.RequestHandler):
    def initialize(self, log: list[dict]) -> None:
        self.log = log

    def prepare(self) -> None:
        self.log.append({"method": self.request.method, "path": self.request.path,
                         "headers": dict(self.request.headers)})
        self.finish({"id": "impostor-kernel", "status": "running"})  # plausible enough


class Impostor:
    """An HTTPS server on loopback with a certificate from its own CA (ca.pem)."""

    def __init__(self, directory: Path) -> None:
        ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), \
            ec.generate_private_key(ec.SECP256R1())
        ca = _cert("Trusted Test CA", ca_key, "Trusted Test CA", ca_key, ca=True)
        leaf = _cert("127.0.0.1", leaf_key, "Trusted Test CA", ca_key, ca=False)
        directory.mkdir(parents=True, exist_ok=True)
        self.ca_file = directory / "ca.pem"
        self.ca_file.write_bytes(_pem(ca))
        (directory / "cert.pem").write_bytes(_pem(leaf) + _pem(ca))
        (directory / "key.pem").write_bytes(leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.requests: list[dict] = []
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        context = server_context(directory / "cert.pem", directory / "key.pem")

        async def start() -> int:
            app = web.Application([(r"/.*", Recorder, {"log": self.requests})])
            self.server = httpserver.HTTPServer(app, ssl_options=context)
            sockets = tornado.netutil.bind_sockets(0, "127.0.0.1")
            self.server.add_sockets(sockets)
            return sockets[0].getsockname()[1]

        self.url = f"https://127.0.0.1:{self.run(start())}"

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def stop(self) -> None:
        async def close() -> None:
            self.server.stop()

        self.run(close())
        self.loop.call_soon_threadsafe(self.loop.stop)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with stack_node(tmp_path_factory.mktemp("stack")) as node:
        yield node


@pytest.fixture
def shell(stack, tmp_path, monkeypatch):
    ip = renter_shell(stack.pinned_url, stack.ledger, tmp_path / "renter", monkeypatch)
    yield ip
    close_shell(ip)


async def fetch(url: str) -> httpclient.HTTPResponse:
    return await httpclient.AsyncHTTPClient().fetch(url)


@pytest.fixture
def impostor(tmp_path):
    """The impostor, with the renter's process trusting its CA by the default verify paths."""
    server = Impostor(tmp_path / "impostor")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SSL_CERT_FILE", str(server.ca_file))
        tornado.netutil._client_ssl_defaults.cache_clear()  # tornado's default context
        try:
            # the threat is real: a client on default CA verification accepts the impostor
            resp = asyncio.run(fetch(server.url + "/sanity"))
            assert resp.code == 200
            yield server
        finally:
            server.stop()
    tornado.netutil._client_ssl_defaults.cache_clear()


def test_walnut_run_and_a_batch_job_work_with_the_pinned_self_signed_provider(stack, shell,
                                                                               tmp_path):
    shell.user_ns["x"] = 41
    result, cap = run(shell, "%%walnut run --push x --pull y\ny = x + 1\nprint('remote')")
    assert result.success, cap.stderr
    assert shell.user_ns["y"] == 42 and "remote" in cap.stdout

    jm = JobManager(renter(tmp_path / "jobs", stack.ledger, [stack.pinned_url]),
                    poll_interval_s=0.2)
    nb = notebook(tmp_path / "job.ipynb", "open('outputs/r.txt', 'w').write('ok')")
    job = asyncio.run(jm.run(nb, budget_mist=BUDGET))
    assert job["status"] == "succeeded", job["error"]
    assert job["verified"] is True, job["verification"]  # downloaded over the pinned TLS
    assert (Path(job["result_dir"]) / "outputs" / "r.txt").read_text() == "ok"


def test_an_impostor_with_a_ca_signed_certificate_gets_nothing(stack, shell, impostor):
    magics = shell.magics_manager.registry["WalnutMagics"]
    manager = magics.manager
    [session] = manager.store.list(statuses=("running",))
    # the provider's address now leads to the impostor; the renter still pins the provider
    at_impostor = f"{impostor.url}#sha256={stack.fingerprint}"
    client = ProviderClient(at_impostor, manager.key)

    # %%walnut run: the remote kernel's REST calls
    manager.store.update(session.id, provider_url=at_impostor)
    magics._kernels.pop(session.id, None)
    try:
        result, cap = run(shell, "%%walnut run\n6 * 7")
    finally:
        manager.store.update(session.id, provider_url=session.provider_url)
    assert not result.success
    assert not any(session.access_token in json.dumps(r) for r in impostor.requests), \
        "%%walnut run handed the session token to the impostor"

    # the websocket to an existing kernel, as %%walnut run reconnects it
    kernel = RemoteKernel(client.session_gateway(session.id, session.access_token),
                          kernel_id="impostor-kernel", timeout=10)
    with pytest.raises(KernelError) as ws_error:
        asyncio.run(kernel.connect())

    # the job results download, and the management REST API
    with open(impostor.ca_file.with_name("got"), "wb") as sink, \
            pytest.raises(ProviderAPIError) as download_error:
        asyncio.run(jobs_api.results(client, session.id, "j-0123456789abcdef", sink, 1000))
    with pytest.raises(ProviderAPIError) as rest_error:
        asyncio.run(client.get_session(session.id))

    reached = [r for r in impostor.requests if r["path"] != "/sanity"]
    assert not any(session.access_token in json.dumps(r) for r in reached), \
        "the session token went to the impostor"
    assert reached == [], f"renter requests reached the impostor: {reached}"
    for error in (cap.stderr, ws_error.value, download_error.value, rest_error.value):
        assert "not the pinned" in str(error), error
