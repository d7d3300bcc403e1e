"""/docs and /redoc that work offline.

FastAPI's own pages load Swagger UI and ReDoc from a CDN, so on a machine without internet access
they come up blank. The fastapi-offline package ships those same dist files (Swagger UI 5, which
renders OpenAPI 3.1, and ReDoc's standalone bundle); here they are served from this process, and
the pages are FastAPI's own HTML pointed at them.

The pages and `/openapi.json` are reads: with JEPA_AUTH_READS they need the key, as the docs
promise for everything but /health and /ready (the assets, the packages' own files, stay open).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from service.deps import ReadAuth

ASSETS_URL = "/docs-assets"
OPENAPI_URL = "/openapi.json"
# Only the package's static folder is used, not its FastAPIOffline factory: create_app builds the app.
ASSETS_DIR = files("fastapi_offline") / "static"


def mount_offline_docs(app: FastAPI, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Serve the OpenAPI schema, the docs pages and their assets; create_app passes docs_url,
    redoc_url and openapi_url as None to FastAPI, so that its own open routes (and CDN-loading
    pages) are not registered first."""
    app.mount(ASSETS_URL, StaticFiles(directory=str(ASSETS_DIR)), name="docs-assets")

    def urls(request: Request) -> tuple[str, str]:
        # Behind a proxy that strips a path prefix, the browser needs the prefix back.
        root = request.scope.get("root_path", "").rstrip("/")
        return root + OPENAPI_URL, root + ASSETS_URL

    @app.get(OPENAPI_URL, include_in_schema=False, dependencies=[ReadAuth])
    async def openapi(request: Request) -> JSONResponse:
        schema = app.openapi()
        root = request.scope.get("root_path", "").rstrip("/")
        if root and app.root_path_in_servers and root not in {s.get("url") for s in schema.get("servers", [])}:
            schema = {**schema, "servers": [{"url": root}, *schema.get("servers", [])]}  # as FastAPI's own does
        return JSONResponse(schema)

    @app.get(docs_url, include_in_schema=False, dependencies=[ReadAuth])
    async def swagger_ui(request: Request) -> HTMLResponse:
        openapi_url, assets = urls(request)
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url=f"{assets}/favicon.png",
            # No badge from validator.swagger.io: offline it is a broken image, online it leaks the spec's URL.
            swagger_ui_parameters={"validatorUrl": None, **(app.swagger_ui_parameters or {})},
        )

    @app.get(redoc_url, include_in_schema=False, dependencies=[ReadAuth])
    async def redoc(request: Request) -> HTMLResponse:
        openapi_url, assets = urls(request)
        return get_redoc_html(
            openapi_url=openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/favicon.png",
            with_google_fonts=False,  # fonts from Google are one more thing offline can't fetch
        )
