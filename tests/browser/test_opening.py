"""The fair opening on the buyer page (API.md §11): a buyer who arrives before the opening sees
the pre-queue with its countdown and commitment, then the place the draw gave them, with the
way to check it; the place is the one the public draw holds for their token."""

import hashlib
import re
import time

from playwright.sync_api import expect

from test_buyer import sign_in

USER = 7


def opens_in(seconds):
    # The service's zone is UTC unless `--timezone` says otherwise.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + seconds))


def test_the_pre_queue_counts_down_then_shows_the_drawn_place(boxoffice, page):
    # One buyer holds the only ACTIVE slot, so after the draw everyone drawn still waits and
    # the page shows the drawn place rather than moving on.
    server = boxoffice("--max-active", "1")
    server.active_token(50)
    opens_at = opens_in(12)
    status, scheduled = server.admin("PUT", "/v1/admin/queue/opening", {"opensAt": opens_at})
    assert status == 200, scheduled
    for user in (51, 52):
        status, body = server.api("POST", f"/v1/queue-tokens/users/{user}")
        assert status == 201, body

    sign_in(page, server, USER)
    expect(page.locator("#prequeue")).to_be_visible()
    expect(page.locator("#pq-at")).to_have_text(opens_at[11:16])
    expect(page.locator("#pq-commitment")).to_have_text(scheduled["commitment"])
    expect(page.locator("#pq-arrivals")).to_have_text("3")
    expect(page.locator("#pq-countdown")).to_have_text(re.compile(r"^0:(0\d|1[0-2])$"))
    expect(page.locator("#wait-place")).to_have_text("drawn at the opening")

    expect(page.locator("#drawn")).to_be_visible(timeout=30_000)
    expect(page.locator("#prequeue")).to_be_hidden()
    expect(page.locator("#drawn-total")).to_have_text("3")
    place_text = page.locator("#drawn-place").inner_text()
    assert re.fullmatch(r"#[123]", place_text), place_text
    place = int(place_text[1:])

    status, token = server.api("GET", f"/v1/queue-tokens/users/{USER}")
    assert status == 200, token
    expect(page.locator("#drawn-command")).to_have_text(
        f"boxoffice verify-draw --url {server.url} --token {token['tokenId']}"
    )
    # The place shown is the one the public draw holds for this token's public name.
    status, draw = server.api("GET", f"/v1/queue/draw?offset={place - 1}&limit=1")
    assert status == 200, draw
    assert draw["order"] == [hashlib.sha256(str(token["tokenId"]).encode()).hexdigest()]
    expect(page.locator("#drawn-verify")).to_have_attribute(
        "href", f"/v1/queue/draw?offset={place - 1}&limit=1"
    )
