"""axe-core (vendored, tests/browser/vendor) on every state of the buyer page, on the
dashboard and on the door page, and the 390x844 phone viewport without sideways scroll."""

import pytest
from playwright.sync_api import expect

from conftest import AXE_PATH
from test_buyer import choose_first_schedule, seat, sign_in

PHONE = {"width": 390, "height": 844}


@pytest.fixture
def page(new_context):
    # add_script_tag injects axe inline, which the page's CSP rightly blocks; the other tests
    # run under the real CSP, so the page itself is still held to it.
    return new_context(bypass_csp=True).new_page()


def serious_violations(page):
    page.add_script_tag(path=AXE_PATH)
    result = page.evaluate("axe.run(document)")
    return [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]


def no_sideways_scroll(page):
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def each_state(page, server):
    """Yields the name of each state of the buyer page, the page left in it."""
    page.goto(server.url + "/")
    yield "who"
    sign_in(page, server)
    yield "waiting or performances"
    choose_first_schedule(page)
    seat(page, 11).click()
    yield "seat map"
    page.get_by_role("button", name="Hold these seats").click()
    expect(page.locator("#co-total")).to_have_text("110,000 won")
    yield "checkout"
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#done-amount")).to_have_text("110,000 won")
    # "My tickets" with the QR code, the code, the transfer form and the refund button.
    expect(page.locator("#ticket-list li.ticket .qr")).to_be_visible()
    expect(page.get_by_role("button", name="Transfer")).to_be_visible()
    yield "paid"


def test_axe_buyer_states(boxoffice, page):
    server = boxoffice()
    for state in each_state(page, server):
        assert serious_violations(page) == [], state


def test_axe_waiting_room(boxoffice, page):
    server = boxoffice("--max-active", "1")
    server.active_token(1)
    sign_in(page, server)
    expect(page.locator("#wait-ahead")).to_have_text("0")
    expect(page.locator("#step-wait")).to_be_visible()
    assert serious_violations(page) == []


def test_axe_dashboard(boxoffice, page):
    server = boxoffice()
    response = page.goto(server.url + "/dashboard")
    assert response.status == 200
    assert serious_violations(page) == [], "the key form"
    page.locator("#key-input").fill(server.admin_key)
    page.locator("#key-input").press("Enter")
    expect(page.locator("#conn")).to_have_text("live")
    expect(page.locator("#seat-map .cell").first).to_be_visible()
    assert serious_violations(page) == [], "the live view"


def a_ticket_code(server, user=1, seat_id=1):
    """The code of a ticket `user` bought through the API."""
    token = server.active_token(user)
    status, held = server.api(
        "POST",
        "/v1/reservations",
        {"userId": user, "concertId": 1, "scheduleId": 1, "seatIds": [seat_id]},
        {"TOKEN-ID": str(token)},
    )
    assert status == 201, held
    status, paid = server.api(
        "POST", f"/v1/payments/users/{user}", {"reservationId": held["reservationId"]}, {"TOKEN-ID": str(token)}
    )
    assert status == 201, paid
    status, listed = server.api("GET", f"/v1/tickets/users/{user}")
    assert status == 200, listed
    return listed["tickets"][0]["code"]


def door_states(page, server):
    """Yields the name of each state of the door page, the page left in it."""
    response = page.goto(server.url + "/door")
    assert response.status == 200
    yield "the key form"
    page.get_by_label("The door key (kept in this tab only)").fill(server.admin_key)
    page.get_by_role("button", name="Start scanning").click()
    code_box = page.get_by_label("Ticket code (type or paste, then Enter)")
    expect(code_box).to_be_focused()
    yield "scanning"
    code_box.fill(a_ticket_code(server))
    code_box.press("Enter")
    expect(page.locator("#verdict-title")).to_have_text("Welcome in")
    yield "a green answer"
    code_box.press("Enter")
    expect(page.locator("#verdict-title")).to_have_text("Already checked in")
    yield "a red answer"


def test_axe_door(boxoffice, page):
    server = boxoffice()
    for state in door_states(page, server):
        assert serious_violations(page) == [], state


def test_phone_has_no_sideways_scroll(boxoffice, new_context):
    server = boxoffice()
    page = new_context(viewport=PHONE).new_page()
    for state in each_state(page, server):
        assert no_sideways_scroll(page), state
        if state == "seat map":
            # The plan scrolls in its own box instead, and tap targets are at least 24 px.
            box = seat(page, 11).bounding_box()
            assert box["width"] >= 24 and box["height"] >= 24
    page.goto(server.url + "/dashboard")
    assert no_sideways_scroll(page), "dashboard"
    for state in door_states(page, server):
        assert no_sideways_scroll(page), f"door: {state}"
