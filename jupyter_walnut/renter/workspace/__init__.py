"""A session's workspace from the renter's side (issue #16): files and folders in and out
(client.py), a local folder's sync plan (sync.py), names checked (paths.py)."""

from .client import (
    MAX_TRANSFER_BYTES,
    Progress,
    TransferError,
    TransferResult,
    WorkspaceClient,
)
from .paths import PathRefused

__all__ = ["MAX_TRANSFER_BYTES", "PathRefused", "Progress", "TransferError",
           "TransferResult", "WorkspaceClient"]
