"""The waiting list on the buyer page (API.md §12), in a real Chromium: a sold-out performance
offers "join the waiting list"; a seat coming back becomes an offer with a countdown, paid
with a button, by keyboard."""

import re

from playwright.sync_api import expect


def sold_out_concert(server):
    """A concert of one seat, held by another user: (concert id, holder, token, reservation)."""
    status, concert = server.admin(
        "POST",
        "/v1/admin/concerts",
        {
            "name": "Sold out",
            "schedules": [
                {
                    "concertAt": "2099-01-01T10:00:00",
                    "reservationAt": "2020-01-01T00:00:00",
                    "seats": [{"seatNumber": 1, "price": 1000}],
                }
            ],
        },
    )
    assert status == 201, concert
    schedule = concert["schedules"][0]
    holder = 20
    token = server.active_token(holder)
    status, held = server.api(
        "POST",
        "/v1/reservations",
        {
            "userId": holder,
            "concertId": concert["concertId"],
            "scheduleId": schedule["scheduleId"],
            "seatIds": schedule["seatIds"],
        },
        {"TOKEN-ID": str(token)},
    )
    assert status == 201, held
    return concert["concertId"], holder, token, held["reservationId"]


def test_join_the_waiting_list_and_pay_an_offer_by_keyboard(boxoffice, page):
    server = boxoffice()
    concert, holder, token, held = sold_out_concert(server)
    page.goto(f"{server.url}/?concert={concert}")
    page.get_by_label("Your user id").fill("21")
    page.get_by_label("Your user id").press("Enter")
    join = page.get_by_role("button", name="Sold out: join the waiting list")
    join.focus()
    page.keyboard.press("Enter")
    page.get_by_label("Seats you want").fill("1")
    page.get_by_label("Seats you want").press("Enter")
    expect(page.locator("#waitlist-position")).to_have_text("1")

    # The holder gives the seat back: it is offered to the list, not sold.
    status, _ = server.api(
        "DELETE", f"/v1/reservations/{held}?userId={holder}", headers={"TOKEN-ID": str(token)}
    )
    assert status == 200
    expect(page.locator("#offer-countdown")).to_contain_text(re.compile(r"Offer held for \d+ min"), timeout=10_000)
    pay = page.get_by_role("button", name="Pay for the offered seats")
    pay.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#message")).to_contain_text("Paid 1,000 won")
    status, balance = server.api("GET", "/v1/balance/users/21")
    assert (status, balance["currentAmount"]) == (200, 300_000 - 1_000)
