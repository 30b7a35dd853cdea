"""Make the README's screenshots of ``duravoke ui``: real workflows, real server, Chromium.

Run from a checkout, with Playwright and Debian's Chromium (``/usr/bin/chromium``)::

    python docs/screenshots.py        # writes docs/ui-list.png and docs/ui-timeline.png
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

import duravoke
from duravoke._ui import make_server, workflow_key

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# A newsletter that crashes (the process dies) after two e-mails, then is run again.
NEWSLETTER = textwrap.dedent(
    """
    import os, sys, time
    import duravoke

    d = duravoke.Duravoke(duravoke.open_store(sys.argv[1]))
    crash = sys.argv[2] == "crash"

    @d.duravoke(name="newsletter.load_subscribers")
    def load_subscribers(issue):
        time.sleep(0.12)
        return ["ada@example.com", "grace@example.com", "linus@example.com", "guido@example.com"]

    @d.duravoke(name="newsletter.render")
    def render(issue, email):
        time.sleep(0.05)
        return {"to": email, "subject": f"Issue {issue}", "bytes": 18_432}

    @d.duravoke(name="newsletter.send_email")
    def send_email(email):
        message = render(42, email)
        time.sleep(0.18)
        return {"id": "msg-" + email.split("@")[0], "size": message["bytes"]}

    @d.duravoke(name="newsletter.send_issue")
    def send_issue(issue):
        sent = []
        for n, email in enumerate(load_subscribers(issue)):
            if crash and n == 2:
                os._exit(1)  # the machine went away
            sent.append(send_email(email))
        return {"issue": issue, "sent": len(sent)}

    with d.workflow("newsletter-2026-11"):
        send_issue(42)
    """
)


def fill(folder: Path) -> duravoke.Store:
    """A store holding the kinds of workflows a user would have after a day."""
    spec = str(folder)
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    for mode in ("crash", "resume"):
        subprocess.run(
            [sys.executable, "-c", NEWSLETTER, spec, mode], env=env, timeout=120, check=False
        )
        time.sleep(1.5)  # the re-run comes a little later: the axis shortens the gap
    store = duravoke.open_store(spec)
    d = duravoke.Duravoke(store)

    @d.duravoke(name="billing.charge")
    def charge(customer: str, cents: int) -> dict[str, object]:
        time.sleep(0.03)
        if customer == "cus_4411":
            raise RuntimeError("card declined: insufficient funds")
        return {"charge": f"ch_{customer[-4:]}", "cents": cents}

    @d.duravoke(name="billing.invoice")
    def invoice(customer: str) -> str:
        time.sleep(0.02)
        return f"inv_{customer[-4:]}"

    for customer, cents in [("cus_1001", 4900), ("cus_2002", 1900), ("cus_4411", 9900)]:
        try:
            with d.workflow(f"monthly-billing/{customer}"):
                charge(customer, cents)
                invoice(customer)
        except RuntimeError:
            pass

    @d.duravoke(name="reports.build")
    def build(day: str) -> dict[str, int]:
        time.sleep(0.04)
        return {"rows": 1204}

    for day in ("2026-11-28", "2026-11-29"):
        build(day)  # no workflow around it: the call is its own workflow
    # One more crash, left as it is: "interrupted" until someone runs it again.
    crash = NEWSLETTER.replace("newsletter-2026-11", "newsletter-2026-12")
    subprocess.run([sys.executable, "-c", crash, spec, "crash"], env=env, timeout=120, check=False)
    return store


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = fill(Path(tmp) / "duravoke")
        server = make_server(store, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1280, "height": 640})
            page.goto(server.url)
            page.locator("table.list tbody tr").first.wait_for()
            page.screenshot(path=str(HERE / "ui-list.png"))

            page.set_viewport_size({"width": 1280, "height": 900})
            page.goto(f"{server.url}#/w/{workflow_key('newsletter-2026-11')}")
            page.locator(".trow").first.wait_for()
            page.locator(".trow", has_text='send_email(email="linus').click()
            page.locator(".stepinfo:not([hidden]) pre").nth(1).wait_for()
            page.locator("h2", has_text="Runs").scroll_into_view_if_needed()
            page.screenshot(path=str(HERE / "ui-timeline.png"), full_page=True)
            browser.close()
        server.shutdown()
        server.server_close()
    print("wrote", HERE / "ui-list.png", "and", HERE / "ui-timeline.png")


if __name__ == "__main__":
    main()
