"""Static files: the handler behind :meth:`Router.add_static` (a chat page and its assets).

A request for ``<prefix>/<name>`` is answered with the file ``<directory>/<name>``.
A name with a ``.`` or ``..`` segment, a symbolic link on the way (unless
``follow_symlinks``) or a file that does not exist is 404; a directory is 403
without ``show_index``. Files are read in a worker thread so a
large one does not stall the other connections.
"""

from __future__ import annotations

import html
import mimetypes
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from ._response import HTTPForbidden, HTTPNotFound, Response, StreamResponse

if TYPE_CHECKING:
    from ._app import Handler
    from ._request import Request

__all__ = ["static_handler"]


def static_handler(
    prefix: str, directory: str | PathLike[str], *, show_index: bool, follow_symlinks: bool
) -> Handler:
    """The handler serving ``directory`` at ``prefix`` (its route captures ``filename``).

    Raises ``ValueError`` when ``directory`` is not an existing directory.
    """
    root = Path(directory).resolve()
    if not root.is_dir():
        raise ValueError(f"no such directory: {directory!s}")

    def locate(name: str) -> Path:
        parts = [part for part in name.split("/") if part]
        if "\0" in name or any(part in (".", "..") for part in parts):
            raise HTTPNotFound()
        unresolved = root.joinpath(*parts)
        if not follow_symlinks:
            # Every component below root must be a real file or directory.
            here = root
            for part in parts:
                here = here / part
                if here.is_symlink():
                    raise HTTPNotFound()
        try:
            path = unresolved.resolve(strict=True)
        except (OSError, RuntimeError):
            raise HTTPNotFound() from None
        if not follow_symlinks and not path.is_relative_to(root):
            raise HTTPNotFound()
        return path

    def read(name: str) -> tuple[bytes, str, str | None]:
        path = locate(name)
        if path.is_dir():
            if not show_index:
                raise HTTPForbidden()
            return _index(prefix, name, path), "text/html", "utf-8"
        ctype, _encoding = mimetypes.guess_type(path.name)
        charset = "utf-8" if ctype is not None and ctype.startswith("text/") else None
        return path.read_bytes(), ctype or "application/octet-stream", charset

    async def handle(request: Request) -> StreamResponse:
        name = request.match_info.get("filename", "")
        body, ctype, charset = await trio.to_thread.run_sync(read, name)
        response = Response(body=body, content_type=ctype, charset=charset)
        return response

    return handle


def _index(prefix: str, name: str, path: Path) -> bytes:
    base = prefix.rstrip("/") + "/" + name.strip("/")
    entries = []
    for child in sorted(path.iterdir()):
        link = base.rstrip("/") + "/" + child.name + ("/" if child.is_dir() else "")
        entries.append(f'<li><a href="{html.escape(link)}">{html.escape(child.name)}</a></li>')
    title = html.escape(f"Index of {base}")
    page = f"<html><head><title>{title}</title></head><body><h1>{title}</h1><ul>"
    return (page + "".join(entries) + "</ul></body></html>").encode()
