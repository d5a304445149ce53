"""``GET /``: the web page (static HTML and vanilla JavaScript, no build step).

The page talks to the same JSON API as any client; with API keys configured the user pastes a
key into the page, which keeps it in the browser's local storage and sends it as a bearer token.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(tags=["page"])

STATIC = Path(__file__).resolve().parents[1] / "static"
# The page loads nothing from elsewhere and runs only its own inline script.
CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
       "connect-src 'self'; img-src 'self' data:; form-action 'none'; frame-ancestors 'none'; "
       "base-uri 'none'")


@cache
def page_html() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index() -> HTMLResponse:
    return HTMLResponse(page_html(), headers={
        "Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"})
