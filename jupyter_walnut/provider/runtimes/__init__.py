"""Where session gateways run. `Runtime` is the seam: Docker and process ship here; a
Kubernetes runtime would implement the same five methods and nothing else changes."""

from .base import Runtime, RuntimeError_, RuntimeHandle, SessionSpec

__all__ = ["Runtime", "RuntimeError_", "RuntimeHandle", "SessionSpec"]
