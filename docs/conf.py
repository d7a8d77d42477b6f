"""Sphinx configuration for the trio_ws documentation.

Build with ``scripts/build_docs.sh`` (warnings are errors).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

project = "trio_ws"
author = "trio_ws contributors"
copyright = "trio_ws contributors"

try:
    from importlib.metadata import version as _version

    release = _version("trio_ws")
except Exception:  # not installed: read it from pyproject.toml
    import tomllib

    release = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
}

html_theme = "furo"
html_title = f"trio_ws {release}"
html_static_path: list[str] = []
