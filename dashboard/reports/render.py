"""Offline rendering for reports: Plotly figures to PNG with Kaleido, HTML to PDF with Chromium.

Both use Debian's Chromium on this machine and never touch the network: Kaleido gets plotly.js from the
installed plotly package and MathJax is switched off (its default would come from a CDN); the PDF is printed
from a local file whose images are inline data.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kaleido
import plotly.graph_objects as go
from kaleido.errors import ChromeNotFoundError

log = logging.getLogger(__name__)

RELOAD_EVERY = 50  # renders per Kaleido tab between page reloads (bounds memory; a reload costs ~0.4 s)
IMAGE_WIDTH = 1000  # CSS pixels: wide enough for two panels side by side at projector font sizes
TABS = 2  # Chromium tabs rendering at once
IMAGE_SCALE = 1.5  # device pixels per CSS pixel: sharp when printed at A4 width, still a modest file


class ReportError(RuntimeError):
    """A report could not be made (no browser, rendering failed); the message says what to do."""


def chromium_path() -> str:
    """The Chromium used for PDFs: $BROWSER_PATH (Kaleido's variable too), else `chromium` on the PATH."""
    for candidate in (os.environ.get("BROWSER_PATH"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):
        if candidate and Path(candidate).exists():
            return candidate
    raise ReportError("Chromium is not installed: `apt-get install -y chromium` (scripts/test.sh does this).")


class _ReusingKaleido(kaleido.Kaleido):
    """Kaleido that reuses its tab between figures instead of reloading plotly.js after every one.

    Kaleido 1.5 reloads the page after each render (~0.4 s each, most of the cost of a small chart);
    plotly.js is purged between figures anyway, so a reload every RELOAD_EVERY renders is enough.
    """

    _uses = 0

    async def _return_kaleido_tab(self, tab) -> None:  # noqa: ANN001 — kaleido's private tab type
        self._uses += 1
        if self._uses % RELOAD_EVERY == 0:
            await tab.reload()
        await self.tabs_ready.put(tab)


def _kaleido_class() -> type[kaleido.Kaleido]:
    # The override relies on a private hook, the only one of a library the project keeps: a new version that
    # drops it falls back to stock Kaleido here, and fails the test that shows the gain
    # (tests/app/test_handout.py::test_kaleido_draws_figure_after_figure_…).
    return _ReusingKaleido if hasattr(kaleido.Kaleido, "_return_kaleido_tab") else kaleido.Kaleido


def render_pngs(figures: Iterable[go.Figure | dict], *, width: int = IMAGE_WIDTH,
                scale: float = IMAGE_SCALE) -> list[bytes]:
    """PNG bytes of every figure, in order, from one Kaleido (Chromium) start.

    `figures` may be a generator: it is consumed on a worker thread while Chromium renders the previous
    figure, so building the next figure in Python and drawing this one overlap. Its first figure is built
    before Chromium starts (about 4 s): a report refused while its first case is made (a leak check), or one
    with no figure, fails at once.
    """
    figures = iter(figures)
    first = next(figures, None)
    if first is None:
        return []
    figures = itertools.chain([first], figures)

    async def main() -> list[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue(maxsize=4)
        done = object()
        failure: list[BaseException] = []

        def produce() -> None:
            try:
                for figure in figures:
                    spec = figure.to_plotly_json() if isinstance(figure, go.Figure) else figure
                    asyncio.run_coroutine_threadsafe(queue.put(spec), loop).result()
            except BaseException as problem:  # noqa: BLE001 — handed to the renderer, raised there
                failure.append(problem)
            finally:
                asyncio.run_coroutine_threadsafe(queue.put(done), loop).result()

        async with _kaleido_class()(n=TABS, mathjax=False, timeout=120) as renderer:
            producer = threading.Thread(target=produce, name="report-figures", daemon=True)
            producer.start()
            # Each figure is sent as soon as it is built: a tab is never idle waiting for Python.
            renders = []
            while (spec := await queue.get()) is not done:
                height = int(spec.get("layout", {}).get("height") or 450)
                renders.append(asyncio.create_task(renderer.calc_fig(
                    spec, opts={"format": "png", "width": width, "height": height, "scale": scale})))
            images = await asyncio.gather(*renders)
            await asyncio.to_thread(producer.join)
        if failure:
            raise failure[0]
        return list(images)

    try:
        # A fresh thread has no running event loop, whoever calls (Streamlit script, CLI, a test).
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="kaleido") as pool:
            return pool.submit(asyncio.run, main()).result()
    except ChromeNotFoundError as problem:
        raise ReportError("Kaleido found no Chromium: `apt-get install -y chromium` or set BROWSER_PATH.") \
            from problem


def data_uri(png: bytes) -> str:
    """An image inline in the HTML, so that the file opens with no network and no side files."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def html_to_pdf(html: str, *, timeout: float = 600, neutral_dates: bool = False) -> bytes:
    """Print an HTML document to PDF with headless Chromium (page size and breaks from its CSS).

    The HTML goes to a private temporary folder that is removed afterwards (it may hold an identified
    report); page headers and footers are off, so no file path or print date appears on the pages.
    `neutral_dates` replaces the creation and modification dates in the PDF's metadata by a fixed
    placeholder (the export day plus "week N after the operation" would date the operation).
    """
    browser = chromium_path()
    with tempfile.TemporaryDirectory(prefix="spine-report-") as folder:
        source, target = Path(folder) / "report.html", Path(folder) / "report.pdf"
        source.write_text(html, encoding="utf-8")
        command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                   "--no-first-run", "--disable-background-networking", "--disable-component-update",
                   "--disable-sync", "--disable-extensions", "--mute-audio",
                   f"--user-data-dir={Path(folder) / 'profile'}", f"--print-to-pdf={target}", source.as_uri()]
        try:
            result = subprocess.run(command, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as problem:
            raise ReportError(f"Chromium did not finish printing the PDF within {timeout:.0f} s.") from problem
        if not target.exists() or target.stat().st_size == 0:
            log.warning("chromium print-to-pdf failed with exit status %s", result.returncode)
            raise ReportError(f"Chromium could not print the PDF (exit status {result.returncode}).")
        document = target.read_bytes()
    return _neutral_metadata_dates(document) if neutral_dates else document


PDF_DATE = re.compile(rb"/(CreationDate|ModDate) \(D:[0-9Z+\-']{1,21}\)")
PLACEHOLDER_DATE = b"D:19700101000000+00'00'"


def _neutral_metadata_dates(document: bytes) -> bytes:
    """Metadata dates replaced in place by a same-length placeholder (byte offsets stay valid)."""
    def neutral(match: re.Match) -> bytes:
        value = match[0][match[0].index(b"(") + 1:-1]
        return match[0].replace(value, PLACEHOLDER_DATE[:len(value)].ljust(len(value), b"0"))
    return PDF_DATE.sub(neutral, document)
