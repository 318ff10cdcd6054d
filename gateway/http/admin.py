"""``/admin``: the reconciliation view as server-rendered pages, for people.

A browser sends no bearer header when it navigates, so a person signs in once with an
admin-scope token and then holds a signed, HttpOnly, SameSite=Strict session cookie
(Starlette's session middleware, scoped to ``/admin``). Every action is a POST carrying the
session's CSRF token. Templates autoescape; contact data is masked before it is rendered.
"""

from __future__ import annotations

import hmac
import json
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import exc as sa_exc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from gateway.http.admin_views import adoptable, subject_grid
from gateway.http.auth import Authenticator
from gateway.http.params import SUBJECT_ID, UUID_TEXT, path_id
from gateway.http.problems import busy_logged
from gateway.http.responses import JSONResponse
from gateway.reconcile.runner import decode_cursor
from gateway.redaction import mask_contacts
from gateway.refusals import Refusal
from gateway.service import Gateway, no_subject
from schemas.api import ProviderSync, SyncStatus

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
TEMPLATES.env.filters["masked"] = lambda value: mask_contacts(
    value if isinstance(value, str) else json.dumps(value, default=str, indent=2)
)
ATTENTION = (SyncStatus.diverged, SyncStatus.failed)
PAGE_SIZE = 50
RUNS_SHOWN = 5
HTML_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; connect-src 'self'; "
        "form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
}


class Forbidden(Exception):
    """A POST without the session's CSRF token, or a page without a signed-in admin."""


def create_admin_app(gateway: Gateway, authenticator: Authenticator) -> Starlette:
    settings = gateway.settings.admin
    secret = settings.session_secret.get_secret_value() if settings.session_secret else secrets.token_urlsafe(32)
    pages = Pages(gateway, authenticator)
    app = Starlette(
        routes=[
            Route("/", pages.dashboard, methods=["GET"]),
            Route("/login", pages.login_form, methods=["GET"]),
            Route("/login", pages.login, methods=["POST"]),
            Route("/logout", pages.logout, methods=["POST"]),
            Route("/admin.css", pages.stylesheet, methods=["GET"]),
            Route("/admin.js", pages.script, methods=["GET"]),
            Route("/runs.json", pages.runs_json, methods=["GET"]),
            Route("/subjects/{subject_id}/status.json", pages.subject_json, methods=["GET"]),
            Route("/runs", pages.start_run, methods=["POST"]),
            Route("/subjects/{subject_id}", pages.subject, methods=["GET"]),
            Route("/subjects/{subject_id}/repush", pages.repush, methods=["POST"]),
            Route("/subjects/{subject_id}/adopt", pages.adopt, methods=["POST"]),
            Route("/deliveries/{delivery_id}/retry", pages.retry, methods=["POST"]),
        ],
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie="consent_gateway_admin",
                path="/admin",
                same_site="strict",
                https_only=settings.secure_cookie,
                max_age=settings.session_max_age_s,
            )
        ],
        exception_handlers={
            Forbidden: pages.forbidden,
            Refusal: pages.refused,
            sa_exc.SQLAlchemyError: pages.store_error,
            OSError: pages.store_error,
        },
    )
    return app


class Pages:
    def __init__(self, gateway: Gateway, authenticator: Authenticator) -> None:
        self.gateway = gateway
        self.authenticator = authenticator

    # -- session -------------------------------------------------------------------------

    def render(self, request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        csrf = request.session.setdefault("csrf", secrets.token_urlsafe(32))
        flash = request.session.pop("flash", None)
        response = TEMPLATES.TemplateResponse(
            request, name, {"csrf": csrf, "flash": flash, "statuses": list(SyncStatus), **context}, status_code=status
        )
        response.headers.update(HTML_HEADERS)
        return response

    async def signed_in(self, request: Request) -> bool:
        """An open session (not signed out, not expired) whose token is still configured with
        the admin scope."""
        session_id = request.session.get("admin")
        if not isinstance(session_id, str):
            return False
        digest = await self.gateway.store.sessions.holder(session_id, self.gateway.clock())
        token = self.authenticator.by_digest(digest) if digest else None
        return token is not None and "admin" in token.scopes

    async def checked_form(self, request: Request) -> dict[str, str]:
        """The POSTed form, after its CSRF token is checked against the session's."""
        form = {key: value for key, value in (await request.form()).items() if isinstance(value, str)}
        expected = request.session.get("csrf")
        if not isinstance(expected, str) or not hmac.compare_digest(form.get("csrf", ""), expected):
            raise Forbidden("the form is stale or was not sent from this page: reload it and try again")
        return form

    async def action(self, request: Request) -> dict[str, str]:
        if not await self.signed_in(request):
            raise Forbidden("sign in first")
        return await self.checked_form(request)

    @staticmethod
    def back(request: Request, message: str, to: str) -> Response:
        request.session["flash"] = message
        return RedirectResponse(to, 303)

    async def forbidden(self, request: Request, exc: Exception) -> Response:
        return self.render(request, "refused.html", {"title": "Not allowed", "reason": str(exc)}, 403)

    async def refused(self, request: Request, exc: Exception) -> Response:
        """What the API answers as a problem, the page shows with the same status and reason."""
        assert isinstance(exc, Refusal)
        problem = exc.problem
        return self.render(request, "refused.html", {"title": problem.title, "reason": str(exc)}, problem.status)

    async def store_error(self, request: Request, exc: Exception) -> Response:
        """A busy store is refused as the API refuses it (503); any other store error is a crash."""
        return await self.refused(request, busy_logged(exc))

    # -- pages ---------------------------------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        return self.render(request, "login.html", {})

    async def login(self, request: Request) -> Response:
        form = await self.checked_form(request)
        token = self.authenticator.find(form.get("token", "").strip())
        if token is None or "admin" not in token.scopes:
            return self.render(request, "login.html", {"error": "That is not a token with the admin scope."}, 401)
        max_age = self.gateway.settings.admin.session_max_age_s
        session_id = await self.gateway.store.sessions.open(token.sha256, self.gateway.clock(), max_age)
        request.session.clear()
        request.session.update({"admin": session_id, "who": token.name, "csrf": secrets.token_urlsafe(32)})
        return RedirectResponse("/admin/", 303)

    async def logout(self, request: Request) -> Response:
        await self.checked_form(request)
        if isinstance(session_id := request.session.get("admin"), str):
            await self.gateway.store.sessions.close(session_id)
        request.session.clear()
        return RedirectResponse("/admin/login", 303)

    async def stylesheet(self, _request: Request) -> Response:
        return asset("admin.css", "text/css")

    async def script(self, _request: Request) -> Response:
        return asset("admin.js", "text/javascript")

    async def dashboard(self, request: Request) -> Response:
        if not await self.signed_in(request):
            return RedirectResponse("/admin/login", 303)
        wanted = request.query_params.get("subject", "").strip()
        if wanted:
            return await self.search(request, wanted)
        provider = request.query_params.get("provider") or None
        status = request.query_params.get("status", "")
        statuses = {SyncStatus(status)} if status in set(SyncStatus) else set(ATTENTION)
        if provider not in self.gateway.adapters:
            provider = None
        cursor, first = _cursor(request)
        view = self.gateway.reconciler.view
        page = await view(provider=provider, status=statuses, cursor=cursor, limit=PAGE_SIZE)
        counts = page.provider_counts.get(provider, {}) if provider else page.counts
        context = {
            "page": page,
            "provider": provider,
            "status": status,
            "providers": sorted(self.gateway.adapters),
            "first": first,
            "total": sum(counts.get(s, 0) for s in statuses),
            "runs": await self.gateway.store.runs.recent(RUNS_SHOWN),
        }
        return self.render(request, "dashboard.html", context)

    async def search(self, request: Request, subject_id: str) -> Response:
        """A subject id typed in the search box: its page, or back here saying there is none."""
        if SUBJECT_ID.fullmatch(subject_id) and await self.gateway.subject(subject_id) is not None:
            return RedirectResponse(f"/admin/subjects/{quote(subject_id, safe='')}", 303)
        return self.back(request, f"No subject {subject_id!r}: no decision has been recorded for it.", "/admin/")

    async def subject(self, request: Request) -> Response:
        if not await self.signed_in(request):
            return RedirectResponse("/admin/login", 303)
        found = await self.gateway.shown_subject(self.subject_id(request))
        history = await self.gateway.store.ledger.history(found.state.subject_id, 50)
        context = {
            "subject": found,
            "grid": subject_grid(found, self.gateway.adapters),
            "adoptable": {row.provider for row in found.providers if adoptable(row)},
            "history": history,
        }
        return self.render(request, "subject.html", context)

    async def subject_json(self, request: Request) -> Response:
        """Each provider row's status and last delivery, for the page to follow without a reload."""
        if not await self.signed_in(request):
            raise Forbidden("sign in first")
        found = await self.gateway.shown_subject(self.subject_id(request))
        return JSONResponse({row.provider: _row_status(row) for row in found.providers})

    async def runs_json(self, request: Request) -> Response:
        if not await self.signed_in(request):
            raise Forbidden("sign in first")
        runs = await self.gateway.store.runs.recent(RUNS_SHOWN)
        return JSONResponse([run.model_dump(mode="json") for run in runs])

    @staticmethod
    def subject_id(request: Request) -> str:
        subject_id = str(request.path_params["subject_id"])
        if not SUBJECT_ID.fullmatch(subject_id):
            raise no_subject()
        return subject_id

    # -- actions -------------------------------------------------------------------------

    async def start_run(self, request: Request) -> Response:
        await self.action(request)
        run, created = await self.gateway.start_run(None, None)
        queued = "queued" if created else "was queued already"
        return self.back(request, f"Read-back run {run.id[:8]} {queued}: its progress is below.", "/admin/")

    async def repush(self, request: Request) -> Response:
        form = await self.action(request)
        subject_id = str(request.path_params["subject_id"])
        providers = [form["provider"]] if form.get("provider") else list(self.gateway.adapters)
        note = f"re-pushed from the admin page to {', '.join(providers)}"
        await self.gateway.repush(subject_id, providers, note)
        return self.back(request, f"Pushing again to {', '.join(providers)}.", f"/admin/subjects/{subject_id}")

    async def adopt(self, request: Request) -> Response:
        form = await self.action(request)
        subject_id, provider = str(request.path_params["subject_id"]), form.get("provider", "")
        await self.gateway.adopt(subject_id, provider)
        return self.back(request, f"Adopted {provider}'s state as a decision.", f"/admin/subjects/{subject_id}")

    async def retry(self, request: Request) -> Response:
        form = await self.action(request)
        await self.gateway.retry(path_id(request, "delivery_id", UUID_TEXT, "delivery"))
        target = f"/admin/subjects/{form['subject']}" if SUBJECT_ID.fullmatch(form.get("subject", "")) else "/admin/"
        return self.back(request, "Retrying now.", target)


def asset(name: str, media_type: str) -> Response:
    text = Path(__file__).with_name("templates").joinpath(name).read_text()
    return Response(text, media_type=media_type, headers={"Cache-Control": "max-age=300"})


def _cursor(request: Request) -> tuple[str | None, int]:
    """Where this page of rows starts (a cursor the view handed out, else the first page) and the
    number of its first row (for "51–100 of 241")."""
    cursor = request.query_params.get("cursor") or None
    first = request.query_params.get("from", "1")
    if cursor is None or not first.isdigit():
        return None, 1
    try:
        decode_cursor(cursor)
    except ValueError:
        return None, 1
    return cursor, max(int(first), 1)


def _row_status(row: ProviderSync) -> dict[str, Any]:
    delivery = row.last_delivery
    return {
        "status": row.status.value,
        "delivery": None if delivery is None else f"{delivery.status.value} at {delivery.updated_at:%Y-%m-%d %H:%M:%S}",
    }
