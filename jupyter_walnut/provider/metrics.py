"""Prometheus figures for a provider node, in a registry of its own."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ProviderMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions = Gauge("walnut_sessions", "Sessions by status", ["status"], registry=r)
        self.sessions_started = Counter("walnut_sessions_started_total",
                                        "Sessions that reached running", registry=r)
        self.sessions_failed = Counter("walnut_sessions_failed_total",
                                       "Sessions that failed to start or died", registry=r)
        self.gpu_utilization = Gauge("walnut_gpu_utilization_percent", "GPU utilisation",
                                     ["gpu"], registry=r)
        self.gpu_memory_used = Gauge("walnut_gpu_memory_used_megabytes", "GPU memory in use",
                                     ["gpu"], registry=r)
        self.cpu_utilization = Gauge("walnut_cpu_utilization_percent", "Host CPU utilisation",
                                     registry=r)
        self.proxy_bytes = Counter("walnut_proxy_bytes_total", "Bytes through the gateway proxy",
                                   ["direction"], registry=r)
        self.proxy_messages = Counter("walnut_proxy_ws_messages_total",
                                      "Kernel websocket messages proxied", ["direction"],
                                      registry=r)
        self.http_errors = Counter("walnut_http_errors_total", "API answers >= 400",
                                   ["status"], registry=r)
        self.request_seconds = Histogram("walnut_api_request_seconds", "API request time",
                                         ["method"], registry=r)
        # label lookups cost a lock and a dict per message: resolve the hot ones once
        self.bytes_to_renter = self.proxy_bytes.labels("to_renter")
        self.bytes_to_gateway = self.proxy_bytes.labels("to_gateway")
        self.msgs_to_renter = self.proxy_messages.labels("to_renter")
        self.msgs_to_gateway = self.proxy_messages.labels("to_gateway")
        self.metered_mist = Gauge("walnut_metered_mist", "Cost metered for active sessions",
                                  registry=r)
        # issue #9: from the durable session records (right again after a restart)
        self.earnings_claimed = Gauge("walnut_earnings_claimed_mist",
                                      "MIST claimed from settled sessions' channels", registry=r)
        self.earnings_pending = Gauge("walnut_earnings_pending_mist",
                                      "MIST signed by renters, not claimed yet", registry=r)
        self.earnings_lost = Gauge("walnut_earnings_lost_mist", "MIST signed by renters whose "
                                   "channel closed before the claim", registry=r)
        self.sessions_served = Gauge("walnut_sessions_served",
                                     "Sessions that reached running, all time", registry=r)
        self.failed_starts = Gauge("walnut_sessions_failed_start",
                                   "Sessions that failed before running, all time", registry=r)
