"""MkDocs hooks: the README is the site's home page, and links into the
source tree read as plain text on the site.

The README is written for GitHub, where it sits at the repository's root and
links to `docs/plugins.md`; on the site it becomes `index.md`, so its links
are rewritten relative to the docs. A link from any page to a file of the
repository outside the docs (a module, a plugin's README) works on GitHub
but has no page on the site: there it keeps its text and loses the link.
Every other relative link is left alone, for MkDocs' strict link checks.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
FENCE = re.compile(r"^(```.*?^```)", re.M | re.S)


def localise(markdown: str, written_in: Path, page_dir: Path) -> str:
    """``markdown`` written in the folder ``written_in``, with its relative
    links made to work from ``page_dir`` on the site (fenced code untouched)."""

    def relink(match: re.Match[str]) -> str:
        target = match["target"]
        if ":" in target:  # https:, mailto:
            return match[0]
        path = (written_in / target).resolve()
        if path.is_relative_to(DOCS):
            return f"[{match['text']}]({Path(os.path.relpath(path, page_dir)).as_posix()}{match['anchor'] or ''})"
        if path.is_relative_to(ROOT) and path.exists():
            return match["text"]
        return match[0]

    parts = FENCE.split(markdown)
    parts[::2] = [LINK.sub(relink, prose) for prose in parts[::2]]
    return "".join(parts)


def on_files(files: Files, config: Any) -> Files:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "index.md", content=localise(readme, ROOT, DOCS)))
    return files


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    page_dir = (DOCS / page.file.src_uri).parent
    return localise(markdown, page_dir, page_dir)
