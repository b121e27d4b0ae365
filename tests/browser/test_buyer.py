"""The buyer page in a real Chromium: each test drives `/` as a person would and then checks
through the API that the effect really happened."""

import re
import time

from playwright.sync_api import expect

USER = 7
DEMO_BALANCE = 300_000


def sign_in(page, server, user=USER):
    page.goto(server.url + "/")
    page.get_by_label("Your user id").fill(str(user))
    page.get_by_role("button", name="Join the line").click()


def choose_first_schedule(page):
    page.locator("#schedule-list button").first.click()
    expect(page.locator("#plan .seat").first).to_be_visible()


def seat(page, number):
    return page.locator("#plan .seat", has_text=re.compile(rf"^{number}✓?$"))


def seat_states(server, token, schedule_id=1):
    status, body = server.api(
        "GET", f"/v1/concerts/1/schedules/{schedule_id}/seats", headers={"TOKEN-ID": str(token)}
    )
    assert status == 200, body
    return {s["seatNumber"]: s["seatStatus"] for s in body["seats"]}


def test_full_buy_by_clicking(boxoffice, page):
    server = boxoffice()
    sign_in(page, server)
    choose_first_schedule(page)
    seat(page, 11).click()
    seat(page, 12).click()
    expect(seat(page, 11)).to_have_attribute("aria-label", re.compile(r"^R, row B, seat 11, 110,000 won, selected$"))
    expect(page.locator("#selection")).to_contain_text("total 220,000 won")
    page.get_by_role("button", name="Hold these seats").click()
    expect(page.locator("#co-total")).to_have_text("220,000 won")
    expect(page.locator("#co-balance")).to_have_text("300,000 won")
    expect(page.locator("#co-shortfall")).to_have_text("0 won")
    expect(page.locator("#countdown")).to_contain_text(re.compile(r"held for [45]:\d\d"))
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#done-amount")).to_have_text("220,000 won")
    expect(page.locator("#done-balance")).to_have_text("80,000 won")
    expect(page.locator("#done-payment")).to_have_text(re.compile(r"^\d+$"))

    status, balance = server.api("GET", f"/v1/balance/users/{USER}")
    assert (status, balance["currentAmount"]) == (200, DEMO_BALANCE - 220_000)
    other = server.active_token(8)
    states = seat_states(server, other)
    assert states[11] == states[12] == "UNAVAILABLE"
    assert states[13] == "AVAILABLE"


def test_waiting_room_counts_down_at_poll_after_ms(boxoffice, page):
    server = boxoffice("--max-active", "1", "--admit-per-sec", "1")
    # Two others take the one active slot and the place ahead; user 1 leaves after a while.
    first = server.active_token(1)
    status, second = server.api("POST", "/v1/queue-tokens/users/2")
    assert status == 201
    polls = []
    page.on(
        "request",
        lambda r: polls.append((time.monotonic(), r.url)) if "/v1/queue-status/" in r.url else None,
    )
    pauses = []
    page.on(
        "response",
        lambda r: pauses.append(r.json()["pollAfterMs"]) if "/v1/queue-status/" in r.url and r.ok else None,
    )
    sign_in(page, server)
    expect(page.locator("#wait-ahead")).to_have_text("1")
    expect(page.locator("#wait-estimate")).to_be_visible()
    # Free the one active slot: a payment spends user 1's token.
    _, res = server.api(
        "POST", "/v1/reservations", {"userId": 1, "concertId": 1, "scheduleId": 1, "seatIds": [1]},
        {"TOKEN-ID": str(first)},
    )
    server.api("POST", "/v1/payments/users/1", {"reservationId": res["reservationId"]}, {"TOKEN-ID": str(first)})
    expect(page.locator("#wait-ahead")).to_have_text("0", timeout=20_000)
    # User 2 is active now; spend its token too so user 7 moves on by itself.
    tok2 = server.active_token(2)
    _, res2 = server.api(
        "POST", "/v1/reservations", {"userId": 2, "concertId": 1, "scheduleId": 1, "seatIds": [2]},
        {"TOKEN-ID": str(tok2)},
    )
    server.api("POST", "/v1/payments/users/2", {"reservationId": res2["reservationId"]}, {"TOKEN-ID": str(tok2)})
    expect(page.locator("#schedule-list button").first).to_be_visible(timeout=20_000)
    assert len(polls) >= 3
    tolerance = 0.05
    for (t0, _), (t1, _), wait_ms in zip(polls, polls[1:], pauses):
        assert t1 - t0 >= wait_ms / 1000 - tolerance, (t1 - t0, wait_ms)


def test_two_buyers_same_seat_one_wins(boxoffice, new_context):
    server = boxoffice()
    pages = []
    for user in (3, 4):
        p = new_context().new_page()
        sign_in(p, server, user)
        choose_first_schedule(p)
        seat(p, 21).click()
        pages.append(p)
    pages[0].get_by_role("button", name="Hold these seats").click()
    expect(pages[0].locator("#co-total")).to_have_text("110,000 won")
    pages[1].get_by_role("button", name="Hold these seats").click()
    expect(pages[1].locator("#alert")).to_contain_text("was just taken by someone else")
    expect(seat(pages[1], 21)).to_have_attribute("aria-label", re.compile(r"seat 21, .*, taken$"))
    token = server.active_token(5)
    assert seat_states(server, token)[21] == "UNAVAILABLE"
    # Exactly one reservation exists: the loser's attempt made no reservation 2.
    tok4 = server.active_token(4)
    status, _ = server.api("GET", "/v1/reservations/2?userId=4", headers={"TOKEN-ID": str(tok4)})
    assert status == 404


def test_hold_expires_and_seat_is_free(boxoffice, page):
    server = boxoffice("--hold-ttl-secs", "5")
    sign_in(page, server)
    choose_first_schedule(page)
    seat(page, 31).click()
    page.get_by_role("button", name="Hold these seats").click()
    expect(page.locator("#countdown")).to_contain_text("held for 0:0")
    expect(page.locator("#countdown-warning")).to_contain_text("Less than a minute left")
    expect(page.locator("#alert")).to_contain_text("free for others again", timeout=10_000)
    expect(page.get_by_role("button", name="Pay")).to_be_disabled()
    token = server.active_token(9)
    deadline = time.monotonic() + 5
    while seat_states(server, token)[31] != "AVAILABLE" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert seat_states(server, token)[31] == "AVAILABLE"


def test_short_of_money_pays_after_recharge(boxoffice, page):
    server = boxoffice()
    status, user = server.admin("POST", "/v1/admin/users", {"name": "short"})
    assert status == 201
    uid = user["userId"]
    server.api("POST", f"/v1/balance/users/{uid}/recharge", {"amount": 100_000})
    sign_in(page, server, uid)
    choose_first_schedule(page)
    seat(page, 1).click()  # VIP, 150,000 won
    page.get_by_role("button", name="Hold these seats").click()
    expect(page.locator("#co-shortfall")).to_have_text("50,000 won")
    expect(page.get_by_role("button", name="Pay")).to_be_disabled()
    expect(page.get_by_label("Recharge (won)")).to_have_value("50000")
    page.get_by_role("button", name="Recharge", exact=True).click()
    expect(page.locator("#co-shortfall")).to_have_text("0 won")
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#done-balance")).to_have_text("0 won")
    assert server.api("GET", f"/v1/balance/users/{uid}")[1]["currentAmount"] == 0


def test_full_buy_by_keyboard(boxoffice, page):
    server = boxoffice()
    page.goto(server.url + "/")
    page.keyboard.type(str(USER))  # the id field has focus on load
    page.keyboard.press("Enter")
    expect(page.locator("#schedule-list button").first).to_be_visible()
    page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator("#plan .seat").first).to_be_visible()
    for _ in range(10):  # Tab until the plan's one tab stop
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('seat')"):
            break
    assert page.evaluate("document.activeElement.getAttribute('aria-label')").startswith("VIP, row A, seat 1,")
    page.keyboard.press("ArrowDown")  # row B, seat 11
    page.keyboard.press("Space")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("Enter")
    expect(page.locator("#selection")).to_contain_text("2 picked (11, 12), total 220,000 won")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "hold":
            break
    page.keyboard.press("Enter")
    expect(page.locator("#co-total")).to_have_text("220,000 won")
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "pay":
            break
    page.keyboard.press("Enter")
    expect(page.locator("#done-amount")).to_have_text("220,000 won")
    assert server.api("GET", f"/v1/balance/users/{USER}")[1]["currentAmount"] == DEMO_BALANCE - 220_000


def test_a_join_solves_the_proof_of_work_in_the_browser(boxoffice, page):
    # 14 bits: a few thousand SHA-256 tries, quick in any browser, and still refused
    # without the work (a join without X-Queue-Pow is 403 pow_required).
    server = boxoffice("--join-pow-bits", "14")
    status, body = server.api("POST", f"/v1/queue-tokens/users/{USER + 1}")
    assert (status, body["error"]) == (403, "pow_required")
    sign_in(page, server)
    expect(page.locator("#schedule-list button").first).to_be_visible(timeout=60_000)
    status, token = server.api("GET", f"/v1/queue-tokens/users/{USER}")
    assert status == 200, token
    # A second click of the live token needs no work.
    status, again = server.api("POST", f"/v1/queue-tokens/users/{USER}")
    assert (status, again["tokenId"]) == (200, token["tokenId"])
