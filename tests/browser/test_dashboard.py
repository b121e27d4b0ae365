"""The operator's dashboard (issue 16, test 6): nothing shows without a valid admin key; the
live stream moves the sold count and turns the cells sold within 2 s of a purchase made
through the API; the new-concert form creates a concert with a generated plan."""

import re
import time

from playwright.sync_api import expect


def open_dashboard(page, server, key=None):
    page.goto(server.url + "/dashboard")
    page.locator("#key-input").fill(key or server.admin_key)
    page.get_by_role("button", name="Open").click()


def sold_held_seats(page, schedule):
    """The dd of the figure 'Schedule N sold / held / seats'."""
    return page.locator("#figures div").filter(
        has=page.locator("dt", has_text=f"Schedule {schedule} sold / held / seats")
    ).locator("dd")


def cell(page, seat_id):
    return page.locator(f'#seat-map [data-seat="{seat_id}"]')


def test_nothing_shows_without_a_valid_key(boxoffice, page):
    server = boxoffice()
    page.goto(server.url + "/dashboard")
    expect(page.locator("#live")).to_be_hidden()
    open_dashboard(page, server, key="not-the-admin-key-not-the-admin-key")
    expect(page.locator("#key-error")).to_contain_text("Key refused")
    expect(page.locator("#key-error")).to_contain_text("403 forbidden")
    expect(page.locator("#live")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('boxoffice.adminKey')") is None, "a refused key is forgotten"
    open_dashboard(page, server)
    expect(page.locator("#live")).to_be_visible()
    expect(page.locator("#conn")).to_have_text("live")
    # Kept for the tab only: a reload stays signed in, and "Forget key" signs out.
    page.reload()
    expect(page.locator("#live")).to_be_visible()
    page.get_by_role("button", name="Forget key").click()
    expect(page.locator("#live")).to_be_hidden()
    expect(page.locator("#key-section")).to_be_visible()


def test_a_purchase_through_the_api_shows_within_two_seconds(boxoffice, page):
    server = boxoffice()
    open_dashboard(page, server)
    expect(sold_held_seats(page, 1)).to_have_text("0 / 0 / 60")
    expect(cell(page, 1)).to_have_class("cell free")
    expect(page.locator("#map-summary")).to_have_text("Schedule 1: 0 sold, 0 held, 60 free")

    token = server.active_token(2)
    headers = {"TOKEN-ID": str(token)}
    status, held = server.api(
        "POST", "/v1/reservations", {"userId": 2, "concertId": 1, "scheduleId": 1, "seatIds": [40, 41]}, headers
    )
    assert status == 201, held
    expect(sold_held_seats(page, 1)).to_have_text("0 / 2 / 60", timeout=2_000)
    expect(cell(page, 40)).to_have_class("cell held", timeout=2_000)

    status, paid = server.api("POST", "/v1/payments/users/2", {"reservationId": held["reservationId"]}, headers)
    assert status == 201, paid
    paid_at = time.monotonic()
    expect(sold_held_seats(page, 1)).to_have_text("2 / 0 / 60", timeout=2_000)
    expect(cell(page, 40)).to_have_class("cell sold", timeout=2_000)
    expect(cell(page, 41)).to_have_class("cell sold", timeout=2_000)
    assert time.monotonic() - paid_at < 2.0
    expect(cell(page, 40)).to_have_attribute("aria-label", "seat 40 sold")
    expect(cell(page, 42)).to_have_class("cell free")
    expect(page.locator("#map-summary")).to_have_text("Schedule 1: 2 sold, 0 held, 58 free")
    # The rates figure came from the same stream.
    expect(page.locator("#figures")).to_contain_text("Holds placed/s")


def test_the_form_creates_a_concert_with_a_generated_plan(boxoffice, page):
    server = boxoffice()
    open_dashboard(page, server)
    expect(page.locator("#live")).to_be_visible()
    page.get_by_label("Name", exact=True).fill("Dashboard gala")
    page.get_by_label("Rows", exact=True).fill("3")
    page.get_by_label("Seats per row", exact=True).fill("4")
    page.get_by_label("Grades by row (comma separated, first rows first)").fill("VIP,R")
    page.get_by_label("Prices by grade (comma separated)").fill("150000,90000")
    page.get_by_label("Dates (comma separated, YYYY-MM-DD)").fill("2099-03-01")
    page.get_by_role("button", name="Create").click()
    result = page.locator("#create-result")
    expect(result).to_contain_text("Created concert")
    concert = int(result.text_content().split("Created concert ")[1].split(",")[0])
    schedule = int(result.text_content().split("schedules ")[1].rstrip("."))

    token = server.active_token(3)
    status, seats = server.api(
        "GET", f"/v1/concerts/{concert}/schedules/{schedule}/seats", headers={"TOKEN-ID": str(token)}
    )
    assert status == 200, seats
    plan = [(s["seatNumber"], s["seatGrade"], s["row"], s["x"], s["y"], s["seatPrice"]) for s in seats["seats"]]
    assert len(plan) == 12
    assert (1, "VIP", "A", 0, 0, 150000) in plan
    assert (8, "R", "B", 3, 1, 90000) in plan
    # The last grade repeats for the rows past the list.
    assert (12, "R", "C", 3, 2, 90000) in plan

    # A bad form is refused in words, before anything is sent.
    page.get_by_label("Prices by grade (comma separated)").fill("free")
    page.get_by_role("button", name="Create").click()
    expect(result).to_have_text("prices must be positive whole numbers")


def opening_figure(page, label):
    return page.locator("#opening-figures div").filter(
        has=page.locator("dt", has_text=re.compile(f"^{re.escape(label)}$"))
    ).locator("dd")


def test_the_opening_and_ten_minutes_of_charts(boxoffice, page):
    # Waiters joined before the page opened: the history the page loads already holds them.
    server = boxoffice("--max-active", "1")
    opens_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 8))
    status, body = server.admin("PUT", "/v1/admin/queue/opening", {"opensAt": opens_at})
    assert status == 200, body
    for user in (1, 2, 3):
        status, body = server.api("POST", f"/v1/queue-tokens/users/{user}")
        assert status == 201, body
    time.sleep(1.2)  # at least two history points with the pre-queue in them
    open_dashboard(page, server)
    expect(opening_figure(page, "Opening")).to_have_text("scheduled")
    expect(opening_figure(page, "Opens at")).to_have_text(opens_at)
    expect(opening_figure(page, "Pre-queue")).to_have_text("3")
    expect(opening_figure(page, "Time to opening")).to_have_text(re.compile(r"^0:0\d$"))

    charts = page.locator("#charts figure")
    expect(charts).to_have_count(4)
    waiting = page.locator("#charts svg").first
    expect(waiting).to_have_attribute("aria-label", re.compile(r"^Waiting over the last 10 minutes: now waiting 3;"))
    # The waiting line was drawn from the history and the frames: a path with several points.
    path = page.locator("#charts svg").first.locator("path.line").get_attribute("d")
    assert path.count("L") >= 2, path

    expect(opening_figure(page, "Opening")).to_have_text("drawn", timeout=20_000)
    expect(opening_figure(page, "Drawn participants")).to_have_text("3")
    expect(opening_figure(page, "Draw took (ms)")).to_have_text(re.compile(r"^\d+(\.\d)?$"))
