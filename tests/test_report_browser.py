"""The HTML report in a real headless browser (Debian's chromium): it loads
with no console error, fetches nothing, and every plot decodes to pixels.

A probe script is injected into a copy of the report (the report itself has
no script): it records errors from the start of the page and, at the load
event (which waits for every image), writes each image's natural size, the
errors and every fetched resource into the DOM, which chromium's
``--dump-dom`` prints. A broken page checks that the probe does catch errors.

Install the browser with ``apt-get install -y chromium``; without it these
tests skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_report import EXPECTED_PLOTS, png_size, write_run

from benchmark.cli import main

CHROMIUM = (os.environ.get("RTB_CHROMIUM") or shutil.which("chromium")
            or shutil.which("chromium-browser") or shutil.which("google-chrome") or "")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not CHROMIUM or not Path(CHROMIUM).exists(),
                       reason="no chromium on PATH (apt-get install -y chromium)"),
]

PROBE = """<script>
window.__rtb = {errors: []};
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__rtb.errors.push(t && t !== window && t.tagName
    ? 'resource ' + t.tagName + ' failed: ' + String(t.src || t.href || '').slice(0, 60)
    : 'js: ' + e.message);
}, true);
['error', 'warn'].forEach(function (level) {
  var orig = console[level];
  console[level] = function () {
    window.__rtb.errors.push('console.' + level + ': ' + Array.prototype.join.call(arguments, ' '));
    orig.apply(console, arguments);
  };
});
window.addEventListener('load', function () {
  // the load event waits for every image; a data: image that failed has naturalWidth 0
  var images = Array.prototype.slice.call(document.images).map(function (i) {
    return {plot: i.getAttribute('data-plot') || '', ok: i.complete && i.naturalWidth > 0,
            width: i.naturalWidth, height: i.naturalHeight};
  });
  var pre = document.createElement('pre');
  pre.id = 'rtb-browser-check';
  pre.textContent = JSON.stringify({
    errors: window.__rtb.errors, images: images,
    height: document.documentElement.scrollHeight,
    verdict: !!document.getElementById('verdict'),
    fetched: performance.getEntriesByType('resource').map(function (r) { return r.name; })});
  document.body.appendChild(pre);
});
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--hide-scrollbars"]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def browser_check(html_file: Path, tmp: Path) -> tuple[dict[str, Any], list[str]]:
    """Open a probed copy of ``html_file``; return the probe's findings and
    the console lines chromium logged."""
    probed = tmp / f"probed-{html_file.name}"
    text = html_file.read_text()
    assert text.count("<head>") == 1
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    res = chromium(tmp, "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                   "--dump-dom", probed.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    found = re.search(r'<pre id="rtb-browser-check">(.*?)</pre>', res.stdout, re.S)
    assert found, "the probe did not finish: " + res.stderr[-2000:]
    import html

    result = json.loads(html.unescape(found.group(1)))
    console = [line for line in res.stderr.splitlines() if ":CONSOLE" in line]
    return result, console


def test_html_report_loads_without_errors_and_shows_every_plot(tmp_path: Path) -> None:
    run_dir, _ = write_run(tmp_path)
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    result, console = browser_check(out, tmp_path)
    assert result["errors"] == []
    assert console == []
    assert result["fetched"] == []
    images = result["images"]
    assert {i["plot"] for i in images} == EXPECTED_PLOTS
    assert len(images) == len(EXPECTED_PLOTS)
    for img in images:
        assert img["ok"] and img["width"] > 0 and img["height"] > 0, img
    assert result["verdict"]
    # a reasonable length: long tables, further group figures and evidence are a click away
    assert 800 < result["height"] < 5000, result["height"]


def test_probe_catches_a_broken_page(tmp_path: Path) -> None:
    """A page with an undecodable plot, a script error, a console error and an
    external image: the probe must report each."""
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>"
        "<img data-plot='bad' src='data:image/png;base64,AAAA'>"
        "<img data-plot='remote' src='http://127.0.0.1:9/x.png'>"
        "<script>undefinedFunction()</script><script>console.error('boom')</script>"
        "</body></html>")
    result, console = browser_check(page, tmp_path)
    errors = " | ".join(result["errors"])
    assert "undefinedFunction" in errors and "console.error: boom" in errors
    assert errors.count("resource IMG failed") == 2
    assert not any(i["ok"] for i in result["images"])
    assert any("127.0.0.1:9" in f for f in result["fetched"])
    assert len(console) >= 2


def test_screenshot_of_the_report_is_not_blank(tmp_path: Path) -> None:
    """What docs/report-screenshot.png is made with: the page renders to pixels."""
    run_dir, _ = write_run(tmp_path)
    out = tmp_path / "report.html"
    assert main(["report", str(run_dir), "-o", str(out)]) == 0
    shot = tmp_path / "shot.png"
    res = chromium(tmp_path, "--window-size=1280,1600", f"--screenshot={shot}", out.as_uri())
    assert res.returncode == 0, res.stderr[-2000:]
    assert png_size(shot.read_bytes()) == (1280, 1600)
    import matplotlib.image as mpimg

    pixels = mpimg.imread(shot)
    assert pixels[..., :3].std() > 0.05  # text and plots, not a blank page
