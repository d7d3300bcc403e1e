from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["dashboard"])
PAGE = Path(__file__).resolve().parent.parent / "static" / "dashboard.html"


@cache
def page() -> str:
    return PAGE.read_text()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    """A page showing models, versions, metrics, plots and jobs, with a form to launch training.

    Plain HTML and JavaScript over this same API (no build step); with an API key, the page
    asks for it and sends it like any client."""
    return HTMLResponse(page())
