"""A `pytorch` session trains a small model (issue #15).

Through the renter's real Jupyter Server (its /walnut API, then the standard /api/kernels and
kernel websocket), a session of the `pytorch` image on the default stack (Docker + TLS, pinned)
runs one cell that trains a small MLP on synthetic data: the loss falls below a threshold, and
the torch in the session is the version the image's `walnut.packages` label declares.

The GPU variant (`-k gpu`, marked `gpu`) trains on CUDA in a `gpu-1` session; it needs an NVIDIA
GPU and WALNUT_GPU_TESTS=1 and otherwise skips naming the missing GPU. A lent GPU machine has
no Docker engine, so there it runs on the process runtime with the machine's own torch:
`WALNUT_GPU_TESTS=1 WALNUT_TEST_RUNTIME=process pytest -m gpu tests/test_pytorch_session.py`.
"""

from __future__ import annotations

import json

import pytest
from conftest import provider_config
from stack import StackNode, renter_server_config, stack_runtime
from test_gpu import gpu_or_skip

pytestmark = pytest.mark.timeout(900)

IMAGE = "pytorch"
PRICE = 1000
BUDGET = 900 * PRICE
THRESHOLD = 0.02  # the untrained net's MSE is about 0.5; 300 steps bring it near 0.004

TRAIN = """
import json, time
import torch

torch.manual_seed(0)
torch.set_num_threads(1)  # a model this small only waits on more threads
device = "cuda" if torch.cuda.is_available() else "cpu"
x = torch.randn(512, 8, device=device)
y = torch.sin(x @ torch.linspace(-1, 1, 8, device=device).unsqueeze(1))  # a smooth target
net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(),
                          torch.nn.Linear(32, 32), torch.nn.Tanh(),
                          torch.nn.Linear(32, 1)).to(device)
opt = torch.optim.Adam(net.parameters(), lr=3e-3)
losses = []
for step in range(300):
    opt.zero_grad()
    loss = torch.nn.functional.mse_loss(net(x), y)
    loss.backward()
    opt.step()
    losses.append(loss.item())
print(json.dumps({"torch": torch.__version__, "device": device,
                  "first": losses[0], "last": losses[-1]}))
"""


@pytest.fixture
def node(tmp_path, ledger):
    if stack_runtime() == "docker":
        import docker

        from jupyter_walnut.provider.image import ensure_gateway_image

        client = docker.from_env()
        try:  # minutes the first time (torch's CPU wheel), then cached by content hash
            ensure_gateway_image(client, progress=print, flavor=IMAGE)
        finally:
            client.close()
    config = provider_config(
        provider={"name": "torch-node", "runtime": stack_runtime()},
        shapes=[{"name": "cpu-1", "gpus": 0, "cpus": 1, "memory_mb": 4096,
                 "price_per_second_mist": PRICE},
                {"name": "gpu-1", "gpus": 1, "cpus": 2, "memory_mb": 8192,
                 "price_per_second_mist": PRICE}],
        images=[{"name": IMAGE, "reference": f"builtin:{IMAGE}"}],
        packages={"cache": "off"})  # nothing is installed here
    started = StackNode(tmp_path / "provider", ledger, config=config)
    yield started
    started.stop()


@pytest.fixture
def jp_server_config(node, tmp_path, ledger):
    # the launch's hardware check is a throughput floor (tests/test_verify.py has it): on a
    # machine busy with other work it would fail launches this test is not about
    return renter_server_config(tmp_path / "renter", ledger.path, [node.pinned_url],
                                RenterManager={"verify_launches": False})


async def train(jp_fetch, jp_ws_fetch, node, shape: str) -> dict:
    from kernel_ws import KernelWS

    session = json.loads((await jp_fetch("walnut", "sessions", method="POST", body=json.dumps(
        {"provider_url": node.pinned_url, "shape": shape, "image": IMAGE,
         "budget_mist": BUDGET}), request_timeout=300)).body)
    try:
        kernel = json.loads((await jp_fetch("api", "kernels", method="POST", body=json.dumps(
            {"name": session["kernel_name"]}))).body)
        ws = KernelWS(await jp_ws_fetch("api", "kernels", kernel["id"], "channels"))
        result = await ws.execute(TRAIN, timeout=600)
        ws.conn.close()
    finally:
        await jp_fetch("walnut", "sessions", session["id"], method="DELETE")
    assert result.status == "ok", result.error and "\n".join(result.error["traceback"])
    return json.loads(result.stdout.strip().splitlines()[-1])


def declared_torch() -> str | None:
    """The torch version the image declares (its walnut.packages label, from the pins)."""
    from jupyter_walnut.provider.image import image_packages

    return image_packages(IMAGE).get("torch")


async def test_a_pytorch_session_trains_a_small_model(jp_fetch, jp_ws_fetch, node):
    report = await train(jp_fetch, jp_ws_fetch, node, "cpu-1")

    assert report["device"] == "cpu"
    assert report["first"] > 0.1
    assert report["last"] < THRESHOLD, report
    if stack_runtime() == "docker":  # the process runtime runs this machine's own torch
        assert report["torch"] == declared_torch()


@pytest.mark.gpu
async def test_a_pytorch_session_trains_on_the_gpu(jp_fetch, jp_ws_fetch, node):
    gpu_or_skip()

    report = await train(jp_fetch, jp_ws_fetch, node, "gpu-1")

    assert report["device"] == "cuda"
    assert report["last"] < THRESHOLD, report
