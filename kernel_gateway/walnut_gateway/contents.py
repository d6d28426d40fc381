"""The Jupyter Contents API of the session's workspace: jupyter_server's own handlers with the
kernel gateway's token, CORS and JSON-error mixins, over a LargeFileManager whose every path
goes through workspace.resolve (realpath inside the workspace).

`files/` (jupyter_server's static file route) is deliberately not mounted: tornado's static
handler follows symlinks without our check; downloads go through walnut/fs/download.
Checkpoints live in `.ipynb_checkpoints` next to the file, checked like every other path.
"""

from __future__ import annotations

import contextvars
import errno
import os

import jupyter_server.services.contents.handlers as contents_handlers
from jupyter_server.services.contents.filecheckpoints import AsyncFileCheckpoints
from jupyter_server.services.contents.largefilemanager import AsyncLargeFileManager
from kernel_gateway.mixins import CORSMixin, JSONErrorsMixin, TokenAuthorizationMixin
from traitlets import default

from .workspace import PathRefused, inside, resolve

# set while a directory listing is built: an entry that leads outside is left out of the
# listing instead of failing it (jupyter_server skips entries that raise OSError)
_LISTING: contextvars.ContextVar[bool] = contextvars.ContextVar("walnut_listing", default=False)


class _CheckedPaths:
    root_dir: str

    def _get_os_path(self, path: str) -> str:
        return resolve(os.path.realpath(self.root_dir), path.strip("/"), allow_root=True)


class WorkspaceCheckpoints(_CheckedPaths, AsyncFileCheckpoints):
    def checkpoint_path(self, checkpoint_id: str, path: str) -> str:
        cp_path = super().checkpoint_path(checkpoint_id, path)
        # a `.ipynb_checkpoints` symlink planted by the kernel must not take the copy outside
        if not inside(os.path.realpath(self.root_dir), os.path.realpath(cp_path)):
            raise PathRefused(path, "its checkpoint folder leads outside the workspace")
        return cp_path


class WorkspaceContentsManager(_CheckedPaths, AsyncLargeFileManager):
    @default("checkpoints_class")
    def _checkpoints_class_default(self):
        return WorkspaceCheckpoints

    @default("delete_to_trash")
    def _delete_to_trash_default(self) -> bool:
        return False  # the trash is under $HOME, the workspace: a delete would free nothing

    async def get(self, path, content=True, type=None, format=None, require_hash=False):
        try:
            return await super().get(path, content=content, type=type, format=format,
                                     require_hash=require_hash)
        except PathRefused:
            if _LISTING.get():
                raise OSError(errno.ELOOP, "leads outside the workspace") from None
            raise

    async def _dir_model(self, path, content=True):
        token = _LISTING.set(content)
        try:
            return await super()._dir_model(path, content=content)
        finally:
            _LISTING.reset(token)


def handlers() -> list[tuple[str, type]]:
    """jupyter_server's contents handlers, authenticated like every gateway route."""
    out = []
    for path, cls in contents_handlers.default_handlers:
        if cls in (contents_handlers.TrustNotebooksHandler,
                   contents_handlers.NotebooksRedirectHandler):
            continue  # notebook trust is the renter's Jupyter's business
        bases = (TokenAuthorizationMixin, CORSMixin, JSONErrorsMixin, cls)
        out.append((path, type(cls.__name__, bases, {})))
    return out
