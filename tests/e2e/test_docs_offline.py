"""/docs and /redoc on a machine without internet access: every asset they load comes from the server."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from tests.e2e.browsers import chromium  # noqa: F401 - the `browser` fixture
from tests.e2e.servers import Server

ASSET_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def asset_urls(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_assets_the_server_serves(server: Server, page: str) -> None:
    # The suite's shared server: these tests only read pages, assets and the spec.
    with server.client() as client:
        response = client.get(page)
        assert response.status_code == 200
        urls = asset_urls(response.text)
        assert any(url.endswith(".js") for url in urls), response.text
        if page == "/docs":
            assert any(url.endswith(".css") for url in urls), response.text
        for url in urls:
            # Relative to this server: no scheme, no host, so nothing is fetched from a CDN.
            assert urlsplit(url).scheme == "" and urlsplit(url).netloc == "", f"{page} loads {url}"
            asset = client.get(urljoin(page, url))
            assert asset.status_code == 200, url
            assert ASSET_TYPES[Path(url).suffix] in asset.headers["content-type"], (url, asset.headers)
            if not url.endswith(".png"):  # the real bundles, not an error page
                assert len(asset.content) > 10_000, url
        # The spec the page names is this server's, and public like the page.
        spec = re.search(r"""(?:url: '|spec-url=")([^'"]+)""", response.text)
        assert spec is not None and client.get(spec.group(1)).json()["openapi"].startswith("3.")


def test_swagger_ui_renders_the_api_with_the_network_cut_off(server: Server, browser) -> None:  # type: ignore[no-untyped-def]
    page = browser.new_page()
    elsewhere: list[str] = []

    def only_this_server(route) -> None:  # type: ignore[no-untyped-def]
        # Offline, as on an air-gapped host: anything not from this server fails.
        if route.request.url.startswith(server.base_url + "/"):
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    page.route("**/*", only_this_server)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(server.base_url + "/docs")
    # Swagger UI has fetched /openapi.json and drawn an operation from it (OpenAPI 3.1 needs Swagger UI 5).
    page.wait_for_selector(".opblock-summary-path[data-path='/encode']", timeout=30_000)
    assert errors == [] and elsewhere == []
