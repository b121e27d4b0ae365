"""axe-core (vendored, tests/browser/vendor) on every state of the buyer page and on the
dashboard, and the 390x844 phone viewport without sideways scroll."""

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
