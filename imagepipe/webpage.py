"""The demo page's files as HTTP responses: content type, caching and security headers.

The files live with the upload function (``functions/upload/chalicelib/web/``, which Chalice
packages); the function serves them at ``/`` beside the API, so page and API share an origin
and only S3 is cross-origin. ``index.html`` gets a ``<base href>`` of the path it was served
under (``/`` locally, ``/api/`` behind API Gateway), so every URL in the page is relative.
"""

from __future__ import annotations

import html
from pathlib import Path

INDEX = "index.html"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
BASE_PLACEHOLDER = "{{BASE}}"
# Scripts and styles only from the page's own files (no inline code to inject into); uploads go
# to the bucket and variants come from it, whatever its host, so those stay open.
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data: http: https:",
    "connect-src 'self' http: https:",
    "object-src 'none'",
    "base-uri 'self'",
    "form-action 'none'",
    "frame-ancestors 'none'",
])
HEADERS = {
    # Small files that change with each deploy: always revalidate.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
}


class AssetNotFound(LookupError):
    pass


class WebPage:
    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self._texts: dict[str, str] = {}

    def names(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir() if p.suffix in CONTENT_TYPES)

    def asset(self, name: str, request_path: str = "/") -> tuple[str, dict[str, str]]:
        """``(body, headers)`` of one file; ``request_path`` is the path the page was asked at."""
        text = self._text(name)
        if name == INDEX:
            text = text.replace(BASE_PLACEHOLDER, html.escape(base_href(request_path), quote=True))
        return text, {**HEADERS, "Content-Type": CONTENT_TYPES[Path(name).suffix]}

    def _text(self, name: str) -> str:
        if name not in self._texts:
            path = self.directory / name
            # Only the page's own files by their plain names: never a path from a request.
            if "/" in name or path.suffix not in CONTENT_TYPES or not path.is_file():
                raise AssetNotFound(name)
            self._texts[name] = path.read_text(encoding="utf-8")
        return self._texts[name]


def base_href(request_path: str) -> str:
    """The folder the page was served from: ``/`` for ``/``, ``/api/`` for ``/api`` or ``/api/``."""
    path = "/" + (request_path or "/").split("?", 1)[0].strip("/")
    return path if path.endswith("/") else path + "/"
