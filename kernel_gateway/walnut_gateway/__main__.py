"""Start the session's kernel gateway; configured by environment variables.

WALNUT_GATEWAY_TOKEN    the token every request must carry (required)
WALNUT_GATEWAY_IP       listen address (default 127.0.0.1; 0.0.0.0 inside a container)
WALNUT_GATEWAY_PORT     listen port (default 8888)
WALNUT_MAX_KERNELS      kernels this session may run at once (default 4)
WALNUT_SESSION_CGROUP   1 when the gateway's memory cgroup is the session's own (a container),
                        so an OOM kill there is reported as the reason a kernel restarted

Before anything else the gateway moves into the session's own writable environment
($HOME/.walnut/env, see env.py) and re-executes itself there, so its kernels install into it.
"""

from __future__ import annotations

import os
import sys

from walnut_gateway import env as session_env


def main() -> None:
    if not os.environ.get("WALNUT_GATEWAY_TOKEN"):
        sys.exit("walnut-gateway: WALNUT_GATEWAY_TOKEN is required")
    # before the gateway's imports: re-executes this process, once, inside the session env
    session_env.enter()
    from walnut_gateway.app import WalnutGatewayApp

    token = os.environ.pop("WALNUT_GATEWAY_TOKEN")
    argv = [
        f"--KernelGatewayApp.ip={os.environ.get('WALNUT_GATEWAY_IP', '127.0.0.1')}",
        f"--KernelGatewayApp.port={int(os.environ.get('WALNUT_GATEWAY_PORT', '8888'))}",
        "--KernelGatewayApp.port_retries=0",
        f"--KernelGatewayApp.max_kernels={int(os.environ.get('WALNUT_MAX_KERNELS', '4'))}",
        "--JupyterWebsocketPersonality.list_kernels=True",
        "--KernelGatewayApp.kernel_manager_class="
        "walnut_gateway.kernels.WalnutMappingKernelManager",
        "--KernelGatewayApp.kernel_websocket_connection_class="
        "walnut_gateway.connection.NoDelayWebsocketConnection",
        "--ZMQChannelsWebsocketConnection.limit_rate=False",
        "--MappingKernelManager.cull_idle_timeout=0",
    ]
    # kernels get only whitelisted variables of the gateway's environment
    app_env = ["HOME", "LANG", "LC_ALL", "WALNUT_SESSION_ID", "CUDA_VISIBLE_DEVICES",
               "NVIDIA_VISIBLE_DEVICES", "LD_LIBRARY_PATH", "JUPYTER_RUNTIME_DIR",
               "PYTHONUNBUFFERED", "TMPDIR", "MPLCONFIGDIR", "OMP_NUM_THREADS",
               "WALNUT_PRICE_MIST_PER_SECOND", "WALNUT_SHAPE", "WALNUT_NODE",
               *session_env.KERNEL_VARS]
    app = WalnutGatewayApp.instance()
    # the token goes in as a trait, never on the command line where `ps` would show it
    app.auth_token = token
    app.env_process_whitelist = [k for k in app_env if k in os.environ]
    app.initialize(argv)
    app.start()


if __name__ == "__main__":
    main()
