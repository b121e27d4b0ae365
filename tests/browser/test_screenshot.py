"""Takes the README's picture of the seat map mid-choice, and checks the picture shows a drawn
plan: a failure here means the plan did not render. It is written to a temporary directory, so
a CI run leaves the checkout clean; `BOXOFFICE_SCREENSHOTS=docs bash .ci/browser.sh` refreshes
docs/buyer-seat-map.png."""

import os
from pathlib import Path

from playwright.sync_api import expect

from test_buyer import choose_first_schedule, seat, sign_in

ROOT = Path(__file__).resolve().parents[2]


def test_buyer_seat_map_screenshot(boxoffice, new_context, tmp_path):
    out = Path(os.environ["BOXOFFICE_SCREENSHOTS"]) if os.environ.get("BOXOFFICE_SCREENSHOTS") else tmp_path
    if not out.is_absolute():
        out = ROOT / out
    server = boxoffice()
    # Someone else's seats show as taken in the picture.
    token = server.active_token(2)
    server.api("POST", "/v1/reservations", {"userId": 2, "concertId": 1, "scheduleId": 1, "seatIds": [3, 4, 25]},
               {"TOKEN-ID": str(token)})
    page = new_context(viewport={"width": 900, "height": 900}).new_page()
    sign_in(page, server)
    choose_first_schedule(page)
    seat(page, 15).click()
    seat(page, 16).click()
    expect(seat(page, 3)).to_have_class("seat g0 taken")
    assert page.locator("#plan .seat").count() == 60
    page.locator("#step-seats").screenshot(path=str(out / "buyer-seat-map.png"))
    assert (out / "buyer-seat-map.png").stat().st_size > 10_000


def test_dashboard_screenshot(boxoffice, new_context, tmp_path):
    """The dashboard mid-drop: holds and a sale on schedule 1 while it watches, so the picture
    shows the rates of the interval they happened in."""
    out = Path(os.environ["BOXOFFICE_SCREENSHOTS"]) if os.environ.get("BOXOFFICE_SCREENSHOTS") else tmp_path
    if not out.is_absolute():
        out = ROOT / out
    server = boxoffice()
    tokens = {user: server.active_token(user) for user in (2, 3, 4)}
    page = new_context(viewport={"width": 900, "height": 1100}).new_page()
    page.goto(server.url + "/dashboard")
    page.locator("#key-input").fill(server.admin_key)
    page.locator("#key-input").press("Enter")
    expect(page.locator("#conn")).to_have_text("live")
    for user, seats, pay in [(2, [3, 4], True), (3, [25, 26], False), (4, [14], False)]:
        headers = {"TOKEN-ID": str(tokens[user])}
        status, held = server.api(
            "POST", "/v1/reservations", {"userId": user, "concertId": 1, "scheduleId": 1, "seatIds": seats}, headers
        )
        assert status == 201, held
        if pay:
            status, paid = server.api("POST", f"/v1/payments/users/{user}", {"reservationId": held["reservationId"]}, headers)
            assert status == 201, paid
    expect(page.locator("#map-summary")).to_have_text("Schedule 1: 2 sold, 3 held, 55 free")
    page.locator("#live").screenshot(path=str(out / "dashboard.png"))
    assert (out / "dashboard.png").stat().st_size > 10_000
