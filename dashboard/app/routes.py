"""The server's own routes (Starlette), mounted beside Streamlit by dashboard/app/server.py's `st.App`.

Streamlit alone can neither set an HttpOnly cookie nor serve a file only to a request that carries one. These
routes do, each for one grant that the signed-in script created server-side (dashboard.app.grants):

- `POST /session/start` {"code": …}: a sign-in's one-time code becomes the HttpOnly, SameSite=Strict session
  cookie (Secure over HTTPS or with SPINE_DASHBOARD_SECURE_COOKIE=1); a new tab's script then finds it in
  `st.context.cookies` and resumes the live server-side session.
- `POST /session/end` {"code": …}: a sign-out's code deletes that cookie.
- `GET /reports/<code>`: an identified document (the follow-up report) for the session that clicked, only to a
  request whose cookie names that same live session; audited before it is built; once.

Both POSTs answer only same-origin requests (Origin's host = Host), so another site cannot sign a browser in
to someone else's session or out of its own.
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dashboard.app.grants import (
    GRANTS,
    REPORTS_PATH,
    SESSION_END_PATH,
    SESSION_START_PATH,
    ClearCookie,
    Document,
    SetCookie,
)
from dashboard.store import users

log = logging.getLogger(__name__)

#: "1"/"true"/"yes": mark the session cookie Secure even when the request does not look like HTTPS (a TLS proxy
#: that sends no X-Forwarded-Proto).
SECURE_COOKIE_SETTING = "SPINE_DASHBOARD_SECURE_COOKIE"
#: Served documents are downloads, never pages: not cached, not sniffed, not run, no referrer.
DOCUMENT_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                    "Content-Security-Policy": "sandbox; default-src 'none'", "Referrer-Policy": "no-referrer"}


def _refuse(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=status, headers={"Cache-Control": "no-store"})


def _same_origin(request: Request) -> bool:
    """A browser's POST names its page's origin; it must be this server (the host the request was sent to)."""
    origin, host = request.headers.get("origin"), request.headers.get("host")
    return bool(origin and host) and urlsplit(origin).netloc.lower() == host.lower()


def _secure(request: Request) -> bool:
    """HTTPS directly, behind a proxy that says so, or by the setting."""
    return (request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"
            or os.environ.get(SECURE_COOKIE_SETTING, "").strip().lower() in ("1", "true", "yes"))


async def _code(request: Request) -> str:
    try:
        body = await request.json()
    except ValueError:
        return ""
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else ""


async def start_session(request: Request) -> Response:
    """A sign-in's code for the HttpOnly cookie holding its session's token (404 unknown/used/expired code,
    403 another origin or a session ended meanwhile)."""
    if not _same_origin(request):
        return _refuse(403, "cross-origin request")
    grant = GRANTS.take(await _code(request))
    if not isinstance(grant, SetCookie):
        return _refuse(404, "unknown, used or expired code")
    live = await run_in_threadpool(users.live_session, grant.cookie.engine, grant.session)
    if live is None or users.session_id(grant.token, grant.cookie.key) != grant.session:
        return _refuse(403, "the session has ended")
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.set_cookie(grant.cookie.name, grant.token, max_age=grant.max_age, path="/", httponly=True,
                        samesite="strict", secure=_secure(request))
    return response


async def end_session(request: Request) -> Response:
    """A sign-out's code deletes the cookie (the sessions were revoked by the sign-out itself)."""
    if not _same_origin(request):
        return _refuse(403, "cross-origin request")
    grant = GRANTS.take(await _code(request))
    if not isinstance(grant, ClearCookie):
        return _refuse(404, "unknown, used or expired code")
    response = Response(status_code=204, headers={"Cache-Control": "no-store"})
    response.delete_cookie(grant.cookie.name, path="/", httponly=True, samesite="strict", secure=_secure(request))
    return response


async def report(request: Request) -> Response:
    """An identified document, once, to the session that clicked for it: 404 for an unknown, used or expired
    link, 403 when the request's cookie is missing or names another or an ended session; audited, then built."""
    if request.method != "GET":  # Starlette also routes HEAD here: it must not use up the link
        return _refuse(405, "GET only")
    grant = GRANTS.take(request.path_params["code"])  # taken whatever follows: one presentation per link
    if not isinstance(grant, Document):
        return _refuse(404, "unknown, used or expired link")
    holder = await run_in_threadpool(grant.cookie.session_of, request.cookies)
    if holder is None or holder[0] != grant.session or (holder[1].username, holder[1].role) != (grant.user,
                                                                                                 grant.role):
        log.warning("an identified document's link was presented without its session's cookie: refused")
        return _refuse(403, "this link needs the signed-in session that asked for it")
    try:
        await run_in_threadpool(grant.audit)
    except Exception as problem:  # no audit entry, no document
        log.warning("could not record an identified export (%s): refused", type(problem).__name__)
        return _refuse(503, "the download could not be recorded in the audit log")
    try:
        content = await run_in_threadpool(grant.make)
    except Exception as problem:  # the type only: a message could carry the record's values
        log.warning("could not build an identified document (%s)", type(problem).__name__)
        return _refuse(500, "the document could not be made; click again")
    disposition = f'attachment; filename="{re.sub(r"[^A-Za-z0-9._-]", "_", grant.file_name)}"'
    return Response(content, media_type=grant.media_type,
                    headers={**DOCUMENT_HEADERS, "Content-Disposition": disposition})


ROUTES = [
    Route(SESSION_START_PATH, start_session, methods=["POST"]),
    Route(SESSION_END_PATH, end_session, methods=["POST"]),
    Route(REPORTS_PATH + "/{code}", report, methods=["GET"]),
]
