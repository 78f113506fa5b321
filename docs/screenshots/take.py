"""Screenshots of the built site in headless Chromium, with the network off.

    python docs/screenshots/take.py            # build the site, then shoot
    python docs/screenshots/take.py --site DIR # shoot an already built site

Writes ``<page>-desktop.png`` (1280 wide) and ``<page>-phone.png`` (390 wide) next to
this file for the home page, one class page (``localnorm.torch``) and the specification,
so that a rendering change shows in review as a changed image. The site is served from
127.0.0.1 and no host name resolves for the browser (no CDN can load), so math
renders only if the bundled KaTeX does: a CDN dependency would show as raw ``\\(...\\)``.

Needs Chromium (``apt-get install chromium``); without it the script says so and exits 0
(nothing to compare), as CI machines without a browser should.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

#: (file stem, page path under the site, screens tall). The home and class pages show
#: their first screen (what a reader sees first); the spec page is taken tall enough to
#: hold its main display equation (headless Chromium draws a blank page for a URL with a
#: #fragment, so it cannot be scrolled there).
PAGES = (("home", "", 1), ("class-page", "api/torch/", 1), ("spec", "spec/", 3.2))
#: (suffix, width, height of one screen). Device scale 1 keeps the PNGs small.
WIDTHS = (("desktop", 1280, 900), ("phone", 390, 844))


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def build(site: Path) -> None:
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                   cwd=ROOT, check=True,
                   env={**os.environ, "NO_MKDOCS_2_WARNING": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})


def serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def browser_args(browser: str, profile: Path) -> list[str]:
    """Headless, offline (no host name resolves; the site is on 127.0.0.1), no GPU."""
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--force-device-scale-factor=1", f"--user-data-dir={profile}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
            "--virtual-time-budget=5000", "--no-first-run", "--disable-extensions"]


def shoot(browser: str, url: str, out: Path, size: str, profile: Path) -> None:
    subprocess.run([*browser_args(browser, profile), f"--window-size={size}",
                    f"--screenshot={out}", url],
                   check=True, capture_output=True, timeout=120)


def dump_dom(browser: str, url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran (offline), as HTML."""
    proc = subprocess.run([*browser_args(browser, profile), "--dump-dom", url],
                          check=True, capture_output=True, text=True, timeout=120)
    return proc.stdout


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site", type=Path, help="a built site (default: build one)")
    parser.add_argument("--out", type=Path, default=HERE, help="where the PNGs go")
    args = parser.parse_args(argv)
    browser = chromium()
    if browser is None:
        print("No Chromium found (apt-get install chromium): no screenshots taken.")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        site = args.site or Path(tmp) / "site"
        if args.site is None:
            build(site)
        server, base = serve(site)
        try:
            for stem, page, screens in PAGES:
                for suffix, width, height in WIDTHS:
                    out = args.out / f"{stem}-{suffix}.png"
                    size = f"{width},{round(height * screens)}"
                    shoot(browser, base + page, out, size, Path(tmp) / "profile")
                    print(f"{out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}: "
                          f"{out.stat().st_size // 1024} KiB")
        finally:
            server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
