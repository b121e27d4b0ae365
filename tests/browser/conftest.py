"""Fixtures for the browser suite (issue 16). Run by `.ci/browser.sh`, or by hand:
`BOXOFFICE_BIN=target/debug/boxoffice .venv-browser/bin/pytest tests/browser`.

Fixtures:
- `browser` (session): Debian's Chromium at /usr/bin/chromium driven by Playwright, headless.
  Playwright's own browser download cannot work here, so `executable_path` names the system one.
- `context`, `page` (function): a fresh browser context (and a page in it) per test, closed after.
- `new_context(**kwargs)` (function): a factory for more contexts in one test (two buyers, a
  390x844 viewport); each is closed after the test.
- `boxoffice(*extra_args)` (function): a factory that starts the real binary `serve --demo` on a
  free port with a fresh SQLite file in a tmp dir and returns a `Server` with `.url`,
  `.admin_key` and `.api(method, path, body=None, headers=None) -> (status, json)`. Extra
  arguments go to `serve` (e.g. `boxoffice("--hold-ttl-secs", "5")`). Killed at teardown.
- `AXE_PATH`: the vendored axe-core, for `page.add_script_tag(path=AXE_PATH)`.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[2]
AXE_PATH = str(Path(__file__).resolve().parent / "vendor" / "axe.min.js")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Every wait in the suite is bounded; a server that is not ready in this time is broken.
READY_TIMEOUT_S = 30


def binary_path():
    explicit = os.environ.get("BOXOFFICE_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target"))
    return str(Path(target) / "debug" / "boxoffice")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One running `boxoffice serve --demo`, with a JSON helper over urllib."""

    def __init__(self, url, admin_key, process, log_path):
        self.url = url
        self.admin_key = admin_key
        self.process = process
        self.log_path = log_path

    def api(self, method, path, body=None, headers=None):
        """(status, parsed JSON or None). Errors come back as their status and envelope."""
        data = None
        all_headers = dict(headers or {})
        if body is not None:
            data = json.dumps(body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                raw = resp.read()
                return resp.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as err:
            raw = err.read()
            return err.code, (json.loads(raw) if raw else None)

    def admin(self, method, path, body=None):
        return self.api(method, path, body, {"X-Admin-Key": self.admin_key})

    def active_token(self, user_id, timeout_s=15):
        """Joins the line and polls until ACTIVE; returns the token id."""
        status, token = self.api("POST", f"/v1/queue-tokens/users/{user_id}")
        assert status in (200, 201), token
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status, body = self.api(
                "GET", f"/v1/queue-status/users/{user_id}", headers={"TOKEN-ID": str(token["tokenId"])}
            )
            assert status == 200, body
            if body["status"] == "ACTIVE":
                return token["tokenId"]
            time.sleep(body["pollAfterMs"] / 1000)
        raise AssertionError(f"user {user_id} not admitted within {timeout_s} s")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def boxoffice(tmp_path):
    started = []

    def start(*extra_args):
        port = free_port()
        admin_key = secrets.token_hex(32)
        db = tmp_path / f"boxoffice-{len(started)}.db"
        log_path = tmp_path / f"boxoffice-{len(started)}.log"
        log = open(log_path, "wb")
        args = [
            binary_path(),
            "serve",
            "--demo",
            "--bind",
            f"127.0.0.1:{port}",
            "--database-url",
            f"sqlite://{db}",
            "--admin-key",
            admin_key,
            *extra_args,
        ]
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        server = Server(f"http://127.0.0.1:{port}", admin_key, process, log_path)
        started.append(server)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"boxoffice exited {process.returncode}: {log_path.read_text()}")
            try:
                with urllib.request.urlopen(server.url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return server
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"boxoffice not ready in {READY_TIMEOUT_S} s: {log_path.read_text()}")

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def new_context(browser):
    contexts = []

    def make(**kwargs):
        ctx = browser.new_context(**kwargs)
        # Bounded waits everywhere: a missing element fails the test in seconds, not minutes.
        ctx.set_default_timeout(15_000)
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def context(new_context):
    return new_context()


@pytest.fixture
def page(context):
    return context.new_page()
