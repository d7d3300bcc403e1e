"""The dashboard at / in headless Chromium: load it, launch a job, watch it finish."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.browsers import chromium  # noqa: F401 - the `browser` fixture
from tests.e2e.conftest import ready_on_a_copy
from tests.e2e.servers import Server


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory, trained_data_dir: Path) -> Iterator[Server]:
    """One ready server (a copy of the trained template) for this module's tests. Neither changes
    what the other looks at: one trains a model of its own name, the other scores with the default.
    Not the suite's shared server: a job and a model launched from the browser would be seen there."""
    with ready_on_a_copy(trained_data_dir, tmp_path_factory.mktemp("dashboard")) as server:
        yield server


def open_dashboard(server: Server, browser):  # type: ignore[no-untyped-def]
    """A ready server's dashboard in a new page, and the list its script errors are put in."""
    page = browser.new_page(viewport={"width": 1300, "height": 1100})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.base_url + "/")
    return page, errors


def test_the_dashboard_launches_a_job_and_shows_it_finish(dashboard_server: Server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page, errors = open_dashboard(dashboard_server, browser)
    page.wait_for_selector("text=ready: trajectories v1")
    page.wait_for_selector('[data-model="trajectories"] img')  # the first-start model, with its plots

    page.fill('input[name="model"]', "from-the-browser")
    page.select_option('select[name="pattern"]', "linear")
    page.fill('input[name="num_samples"]', "64")
    page.fill('input[name="epochs"]', "3")
    page.click("#launch")
    job_id = page.wait_for_selector("#train-result[data-job]").get_attribute("data-job")
    row = f'#jobs tr[data-job="{job_id}"]'
    page.wait_for_selector(f"{row} .status-succeeded", timeout=90_000)
    assert page.inner_text(f"{row} td:nth-child(4)").strip().endswith("3/3")
    page.wait_for_selector('[data-model="from-the-browser"]', timeout=10_000)
    page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
    assert errors == []


def test_the_dashboard_plots_a_scored_series(dashboard_server: Server, browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    page, errors = open_dashboard(dashboard_server, browser)
    page.click("#example")
    page.click("#score-button")
    page.wait_for_selector("#score-result:has-text('(forecast): most anomalous')")  # the toy model: no memory
    assert page.locator("#score-plot svg polyline").count() == 3  # two features, and the surprise curve
    assert page.locator("#score-plot svg rect").count() >= 1  # the segments, shaded
    page.fill('#score textarea[name="series"]', "[1, 2")
    page.click("#score-button")
    page.wait_for_selector("#score-result.error")
    page.screenshot(path=str(tmp_path / "scored.png"), full_page=True)
    assert errors == []
