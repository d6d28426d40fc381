"""Where session gateways run. `Runtime` is the seam: Docker, process and Slurm ship here
(`provider.runtime` = docker | process | slurm; node.choose_runtime builds one); a
Kubernetes runtime would implement the same five methods and nothing else changes."""

from .base import Runtime, RuntimeError_, RuntimeHandle, SessionSpec

__all__ = ["Runtime", "RuntimeError_", "RuntimeHandle", "SessionSpec"]
