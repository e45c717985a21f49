"""The docs' screenshots live in one folder, docs/images (issue 20: they were split over docs/img and docs/images),
and every image a Markdown file links to exists there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IMAGES = ROOT / "docs" / "images"
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "benchmarks").rglob("*.md"))]


def test_every_linked_image_exists_in_docs_images() -> None:
    links = {(md.relative_to(ROOT).as_posix(), link) for md in markdown_files() for link in
             IMAGE_LINK.findall(md.read_text(encoding="utf-8")) if not link.startswith(("http:", "https:"))}
    assert links, "no image link found: the pattern is wrong"
    wrong = [(md, link) for md, link in links
             if (ROOT / md).parent.joinpath(link).resolve().parent != IMAGES or
             not (ROOT / md).parent.joinpath(link).exists()]
    assert wrong == []


def test_no_screenshot_outside_docs_images() -> None:
    pictures = {path.relative_to(ROOT).as_posix() for path in (ROOT / "docs").rglob("*")
                if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")}
    assert pictures and all(name.startswith("docs/images/") for name in pictures), sorted(pictures)
