"""A ticket's life in a real Chromium (API.md §12): a seat bought by clicking shows its QR code
(an SVG) under "My tickets"; the door page admits its code once, in green, and turns the same
code away the second time, in red; a second seat is refunded from the page and the balance
comes back; a third is handed to another user from the page and leaves "My tickets". Each step
is then checked through the API."""

import re

from playwright.sync_api import expect

from test_buyer import DEMO_BALANCE, choose_first_schedule, seat, sign_in

USER = 7
FRIEND = 8
# Row E of the demo plan is grade S.
PRICE_S = 80_000
GREEN = "rgb(10, 125, 40)"
RED = "rgb(179, 18, 27)"


def buy_by_clicking(page, number):
    """From the performances (or after a payment, "Buy more tickets"): one seat, held and paid."""
    again = page.get_by_role("button", name="Buy more tickets")
    if again.is_visible():
        again.click()
    choose_first_schedule(page)
    seat(page, number).click()
    page.get_by_role("button", name="Hold these seats").click()
    expect(page.locator("#co-total")).to_have_text("80,000 won")
    page.get_by_role("button", name="Pay").click()
    expect(page.locator("#done-amount")).to_have_text("80,000 won")


def api_tickets(server, user):
    status, body = server.api("GET", f"/v1/tickets/users/{user}")
    assert status == 200, body
    return body["tickets"]


def ticket_item(page, ticket_id):
    return page.locator("#ticket-list li.ticket", has_text=re.compile(rf"^Ticket {ticket_id}:"))


def scan(door, code):
    door.get_by_label("Ticket code (type or paste, then Enter)").fill(code)
    door.get_by_label("Ticket code (type or paste, then Enter)").press("Enter")


def test_a_ticket_is_bought_admitted_once_refunded_and_transferred(boxoffice, page, new_context):
    server = boxoffice()
    sign_in(page, server)
    buy_by_clicking(page, 41)

    # "My tickets" shows the paid seat with its QR code, served as SVG.
    [first] = api_tickets(server, USER)
    item = ticket_item(page, first["ticketId"])
    expect(item).to_contain_text("seat 41")
    qr = item.get_by_role("img", name=f"QR code of ticket {first['ticketId']}")
    expect(qr).to_be_visible()
    expect(qr).to_have_js_property("complete", True)
    assert qr.evaluate("img => img.naturalWidth") > 0
    svg = page.request.get(server.url + qr.get_attribute("src"))
    assert svg.status == 200
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "<svg" in svg.text()
    code = item.get_by_label(f"Code of ticket {first['ticketId']}").input_value()
    assert code == first["code"] and code.startswith("bo1.")

    # The door, in its own tab: the page asks for the key, then takes the pasted code.
    door = new_context().new_page()
    door.goto(server.url + "/door")
    door.get_by_label("The door key (kept in this tab only)").fill(server.admin_key)
    door.get_by_label("Gate name").fill("north-1")
    door.get_by_role("button", name="Start scanning").click()
    scan(door, code)
    verdict = door.locator("#verdict")
    expect(verdict).to_have_class(re.compile(r"\bok\b"))
    expect(verdict).to_contain_text("Welcome in")
    expect(door.locator("#verdict-detail")).to_have_text(f"Row E, seat 41 (ticket {first['ticketId']})")
    expect(verdict).to_have_css("background-color", GREEN)
    scan(door, code)
    expect(verdict).to_have_class(re.compile(r"\bno\b"))
    expect(door.locator("#verdict-title")).to_have_text("Already checked in")
    expect(door.locator("#verdict-detail")).to_contain_text("gate north-1")
    expect(verdict).to_have_css("background-color", RED)
    [admitted] = api_tickets(server, USER)
    assert admitted["status"] == "CHECKED_IN" and admitted["checkedInAt"] is not None

    # A second seat, refunded from the page: the balance is back where it was before it.
    buy_by_clicking(page, 42)
    expect(page.locator("#done-balance")).to_have_text(f"{DEMO_BALANCE - 2 * PRICE_S:,} won")
    second = next(t for t in api_tickets(server, USER) if t["ticketId"] != first["ticketId"])
    refund = page.get_by_role("button", name=f"Refund reservation {second['reservationId']}")
    expect(refund).to_be_visible()
    # A checked-in ticket's reservation offers no refund.
    expect(page.get_by_role("button", name=f"Refund reservation {first['reservationId']}")).to_have_count(0)
    with page.expect_request(re.compile(r"/refund\?")) as sent:
        refund.click()
    # A click again after a lost answer would repeat this same refund, not a new one.
    assert re.fullmatch(r"refund-[0-9a-f]{32}", sent.value.headers["idempotency-key"])
    after_refund = DEMO_BALANCE - PRICE_S
    expect(page.locator("#message")).to_contain_text(
        f"Refunded 80,000 won. Your balance is now {after_refund:,} won."
    )
    expect(ticket_item(page, second["ticketId"])).to_contain_text("(VOID)")
    status, balance = server.api("GET", f"/v1/balance/users/{USER}")
    assert (status, balance["currentAmount"]) == (200, after_refund)

    # A third seat, handed to a friend from the page: it leaves "My tickets" and is theirs.
    buy_by_clicking(page, 43)
    third = next(t for t in api_tickets(server, USER) if t["status"] == "VALID")
    expect(ticket_item(page, third["ticketId"])).to_be_visible()
    page.get_by_label("Give this ticket to user id").fill(str(FRIEND))
    page.get_by_role("button", name="Transfer").click()
    expect(page.locator("#message")).to_contain_text(f"Ticket {third['ticketId']} now belongs to user {FRIEND}.")
    expect(ticket_item(page, third["ticketId"])).to_have_count(0)
    expect(ticket_item(page, first["ticketId"])).to_be_visible()
    mine = {t["ticketId"] for t in api_tickets(server, USER)}
    assert third["ticketId"] not in mine
    [given] = api_tickets(server, FRIEND)
    assert given["ticketId"] == third["ticketId"] and given["code"] != third["code"]

    # The old code is refused at the door at once; the friend's new one gets in.
    scan(door, third["code"])
    expect(door.locator("#verdict-title")).to_have_text("Invalid ticket")
    scan(door, given["code"])
    expect(door.locator("#verdict-title")).to_have_text("Welcome in")
