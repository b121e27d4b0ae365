#!/usr/bin/env python3
"""How long the buyer page's proof of work takes in Chromium (issue 27's target: a median of at
most 2 s at 20 bits on this machine). Starts `boxoffice serve --demo --join-pow-bits BITS`,
opens the buyer page in Debian's Chromium, and solves ROUNDS fresh challenges with the page's
own worker (`/web/buyer-pow-worker.js`, split over the same number of workers the page uses),
joins with each solution (the service must accept it), then prints the distribution.

    .venv-browser/bin/python scripts/pow_solve_times.py [--bits 20] [--rounds 20]

(`.ci/browser.sh` makes `.venv-browser`; BOXOFFICE_BIN names the binary, default
target/debug/boxoffice: the solving happens in the browser, so a debug build is fine.)
"""

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run"]

SOLVE_JS = """
async (bits) => {
  const { challenge } = await (await fetch("/v1/queue/challenge")).json();
  const count = Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1));
  const started = performance.now();
  const workers = [];
  const solution = await new Promise((resolve) => {
    for (let i = 0; i < count; i++) {
      const w = new Worker("/web/buyer-pow-worker.js");
      workers.push(w);
      w.onmessage = (e) => {
        if (e.data.solution) resolve(e.data.solution);
        if (e.data.error) resolve("error: " + e.data.error);
      };
      // `step`: what an older worker (--worker-file) needs to share the search.
      w.postMessage({ challenge, bits, first: i, step: count });
    }
  });
  const ms = performance.now() - started;
  for (const w of workers) w.terminate();
  return { ms, solution, workers: count };
}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bits", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--worker-file", help="serve this file as the worker instead (e.g. an "
                        "older version, for a side-by-side run)")
    args = parser.parse_args()
    binary = os.environ.get("BOXOFFICE_BIN", str(ROOT / "target" / "debug" / "boxoffice"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [binary, "serve", "--demo", "--bind", f"127.0.0.1:{port}",
             "--database-url", f"sqlite://{tmp}/pow.db", "--admin-key", secrets.token_hex(32),
             "--join-pow-bits", str(args.bits)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(base + "/readyz", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                            args=CHROMIUM_ARGS)
                page = browser.new_page()
                if args.worker_file:
                    source = Path(args.worker_file).read_text()
                    page.route("**/web/buyer-pow-worker.js", lambda route: route.fulfill(
                        body=source, content_type="text/javascript"))
                page.goto(base + "/")
                times = []
                for n in range(args.rounds):
                    out = page.evaluate(SOLVE_JS, args.bits)
                    # The service must accept what was found: a join of demo user n + 1.
                    join = urllib.request.Request(
                        f"{base}/v1/queue-tokens/users/{n % 100 + 1}", method="POST",
                        headers={"X-Queue-Pow": out["solution"]})
                    with urllib.request.urlopen(join, timeout=10) as answer:
                        assert answer.status in (200, 201), answer.status
                    times.append(out["ms"] / 1000)
                    print(f"round {n + 1}: {times[-1]:.2f} s ({out['workers']} workers)", flush=True)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    times.sort()
    q = lambda f: times[min(len(times) - 1, int(f * len(times)))]
    print(f"bits {args.bits}, {len(times)} solves: min {times[0]:.2f} s, median "
          f"{statistics.median(times):.2f} s, p90 {q(0.9):.2f} s, max {times[-1]:.2f} s")
    print("chromium:", subprocess.run(["/usr/bin/chromium", "--version"], capture_output=True,
                                      text=True).stdout.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
