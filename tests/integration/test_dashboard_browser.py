"""The dashboard in a real browser (Debian's headless Chromium, driven by Selenium): it refuses
a visitor without the token, and with it lists the agents, shows a message arriving live (as
text, however it is written), and shows what the agent spent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from clawpen.app import Orchestrator
from clawpen.demo.model import FakeModel
from tests.fakes.fake_channel import MemoryChannel

from ..conftest import running

T = TypeVar("T")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
HOSTILE = "<img src=x onerror=\"document.title='owned'\"> hello from the live test"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def orchestrator(
    orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel, api_key: str
) -> AsyncIterator[tuple[Orchestrator, MemoryChannel]]:
    channel = MemoryChannel()
    built = orchestrator_factory(
        channels={"telegram": channel},
        config_channels={"cli": {}, "telegram": {"token": "123:abc"}},
        pairings=[{"channel": "telegram:42", "agent": "assistant"}],
        dashboard={"port": 0},
        model={
            "name": "claude-test",
            "base_url": fake_model.url,
            "api_key": api_key,
            "prices": {"claude-test": {"input": 3.0, "output": 15.0}},
        },
    )
    async with running(built):
        yield built, channel


async def in_browser(call: Callable[..., T], *args: Any) -> T:
    """Selenium blocks; the orchestrator runs on this event loop, so the browser is driven
    from a thread."""
    return await asyncio.to_thread(call, *args)


async def until(driver: WebDriver, script: str, timeout: float = 20) -> Any:
    """Poll a JavaScript expression in the page until it is truthy; returns its value."""
    async with asyncio.timeout(timeout):
        while True:
            found = await in_browser(driver.execute_script, f"return {script};")
            if found:
                return found
            await asyncio.sleep(0.05)


def cells(driver: WebDriver, table: str) -> list[list[str]]:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")
    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]


async def test_the_dashboard_refuses_without_the_token_then_shows_agents_live_messages_and_spend(
    browser: WebDriver, orchestrator: tuple[Orchestrator, MemoryChannel]
) -> None:
    built, channel = orchestrator
    assert built.dashboard is not None
    base = f"http://127.0.0.1:{built.dashboard.port}"

    # no token: a page that says how to get one, and nothing of the orchestrator
    await in_browser(browser.get, base + "/")
    body = await in_browser(lambda: browser.find_element(By.TAG_NAME, "body").text)
    assert "needs its token" in body and "clawpen dashboard" in body
    assert "assistant" not in browser.page_source
    await in_browser(browser.get, base + "/?token=not-the-token-at-all")
    assert "needs its token" in browser.find_element(By.TAG_NAME, "body").text

    # the printed link: the token leaves the address, the agents are listed, the page is live
    await in_browser(browser.get, built.dashboard.url())
    assert browser.current_url == base + "/"
    await until(browser, "document.querySelector('#agents tr[data-agent=assistant]')")
    assert cells(browser, "agents")[0][:2] == ["assistant", "stopped"]
    await until(browser, "document.getElementById('live').textContent === 'live'")

    # a message arrives while the page is open: it shows up without a reload, as plain text
    await channel.push("42", HOSTILE)
    await until(
        browser,
        "[...document.querySelectorAll('#messages td.text')]"
        ".some(td => td.textContent.includes('hello from the live test'))",
    )
    [row] = [r for r in cells(browser, "messages") if "hello from the live test" in r[3]]
    assert row[1] == "telegram:42" and row[3] == HOSTILE
    assert browser.find_elements(By.CSS_SELECTOR, "#messages img") == []
    assert browser.title == "clawpen"

    # the agent answers; its spend appears in the table and as bars in the chart
    await channel.wait_sent(1)
    await until(
        browser,
        "parseFloat(document.querySelector('#spend tr[data-agent=assistant] .usd')"
        "?.textContent || '0') > 0",
    )
    bars = await until(
        browser, "document.querySelectorAll('#spend-chart svg rect.bar[data-agent=assistant]')"
    )
    assert len(bars) == 1
    await until(
        browser,
        "[...document.querySelectorAll('#tasks tbody tr')]"
        ".some(tr => tr.textContent.includes('done'))",
    )
    # an empty table says "none"; the chart's labels neither overlap nor leave the picture
    assert cells(browser, "jobs") == [["none"]]
    overlaps = await in_browser(browser.execute_script, LABELS_CLASH)
    assert overlaps == [], overlaps


# every pair of the chart's texts whose boxes meet, and every text past the picture's edge
LABELS_CLASH = """
const chart = document.querySelector('#spend-chart svg');
const [, , width, height] = chart.getAttribute('viewBox').split(' ').map(Number);
const boxes = [...chart.querySelectorAll('text')].map(t => [t.textContent, t.getBBox()]);
const found = [];
boxes.forEach(([name, b], i) => {
  if (b.x < 0 || b.y < 0 || b.x + b.width > width || b.y + b.height > height) found.push(name);
  boxes.slice(i + 1).forEach(([other, c]) => {
    if (b.x < c.x + c.width && c.x < b.x + b.width && b.y < c.y + c.height && c.y < b.y + b.height)
      found.push(name + ' / ' + other);
  });
});
return found;
"""


async def test_spend_without_prices_says_cost_unknown_not_zero_dollars(
    browser: WebDriver, orchestrator_factory: Callable[..., Orchestrator], fake_model: FakeModel,
    api_key: str,
) -> None:  # fmt: skip
    channel = MemoryChannel()
    built = orchestrator_factory(
        channels={"telegram": channel},
        config_channels={"cli": {}, "telegram": {"token": "123:abc"}},
        pairings=[{"channel": "telegram:42", "agent": "assistant"}],
        dashboard={"port": 0},
    )
    async with running(built):
        assert built.dashboard is not None
        await channel.push("42", "hello")
        await channel.wait_sent(1)
        await in_browser(browser.get, built.dashboard.url())
        usd = await until(
            browser,
            "document.querySelector('#spend tr[data-agent=assistant] .usd')?.textContent",
        )
        tokens = cells(browser, "spend")[0][2]
    assert usd == "cost unknown"
    assert int(tokens) > 0
