"""The provider's route table: the API handlers of app.py and the batch-job routes of
jobs.py, which builds on app.py's base handler (so the table that names both lives here,
not in app.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tornado import web

from ..common.keepalive import Keepalive
from ..common.protocol import API, MAX_MESSAGE_SIZE
from .app import (
    SESSION_ID,
    AwayHandler,
    GatewayProxyHandler,
    GatewayWebsocketHandler,
    HealthHandler,
    MetricsHandler,
    NotFoundHandler,
    OpenAPIHandler,
    SessionHandler,
    SessionsHandler,
    StatusHandler,
    TopUpHandler,
    VouchersHandler,
    log_request,
)
from .gateway_stream import routes as stream_routes
from .jobs import routes as job_routes
from .port_proxy import PORT, PortProxyHandler
from .results_http import routes as results_routes

if TYPE_CHECKING:
    from .node import ProviderNode


def make_app(node: ProviderNode) -> web.Application:
    return web.Application(
        [
            (rf"{API}/health", HealthHandler),
            (rf"{API}/status", StatusHandler),
            (rf"{API}/openapi.yaml", OpenAPIHandler),
            (rf"{API}/sessions", SessionsHandler),
            (rf"{API}/sessions/{SESSION_ID}", SessionHandler),
            (rf"{API}/sessions/{SESSION_ID}/vouchers", VouchersHandler),
            (rf"{API}/sessions/{SESSION_ID}/topup", TopUpHandler),
            (rf"{API}/sessions/{SESSION_ID}/away", AwayHandler),
            (rf"{API}/sessions/{SESSION_ID}/gateway/"
             r"(api/kernels/[^/]+/channels|terminals/websocket/\w+)", GatewayWebsocketHandler),
            *stream_routes(SESSION_ID, API),  # workspace uploads and downloads, streamed
            (rf"{API}/sessions/{SESSION_ID}/gateway/(.*)", GatewayProxyHandler),
            (rf"{API}/sessions/{SESSION_ID}/proxy/{PORT}/(.*)", PortProxyHandler),
            (r"/metrics", MetricsHandler),
            *job_routes(),
            *results_routes(),
        ],
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        walnut_node=node,
        websocket_max_message_size=MAX_MESSAGE_SIZE,
        **Keepalive.from_env().server_settings(),  # a renter gone silent is found dead
    )
