"""Screenshot an rtb HTML report in headless chromium and print its height.

    python scripts/report_screenshot.py REPORT.html docs/report-screenshot.png

The page height (document.documentElement.scrollHeight at a 1280 px wide
window) is measured first; the screenshot is the whole page at that height.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WIDTH = 1280
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--disable-background-networking", "--no-first-run"]
PROBE = ("<script>window.addEventListener('load',function(){var p=document.createElement('pre');"
         "p.id='rtb-height';p.textContent=document.documentElement.scrollHeight;"
         "document.body.appendChild(p);});</script>")


def page_height(chromium: str, report: Path, profile: Path) -> int:
    probed = profile / "probed.html"
    probed.write_text(report.read_text().replace("<head>", "<head>" + PROBE, 1))
    res = subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}",
                          f"--window-size={WIDTH},900", "--virtual-time-budget=10000",
                          "--dump-dom", probed.as_uri()], capture_output=True, text=True,
                         timeout=180)
    found = re.search(r'<pre id="rtb-height">(\d+)</pre>', res.stdout)
    if not found:
        raise SystemExit(f"chromium did not report a height: {res.stderr[-500:]}")
    return int(found.group(1))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    report, shot = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    chromium = os.environ.get("RTB_CHROMIUM") or shutil.which("chromium") or ""
    if not chromium:
        print("no chromium on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        height = page_height(chromium, report, Path(tmp))
        subprocess.run([chromium, *FLAGS, f"--user-data-dir={tmp}",
                        f"--window-size={WIDTH},{height}", f"--screenshot={shot}",
                        report.as_uri()], capture_output=True, timeout=180, check=True)
    print(f"report {report.name}: {WIDTH} x {height} px; screenshot {shot} "
          f"(load {os.getloadavg()[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
