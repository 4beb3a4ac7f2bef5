"""`nadm study serve`: the participants' pages and the admin page (Sec. IV-D2), a FastAPI app on uvicorn.

Safety: request bodies are capped (`MAX_BODY`), clips are served only by content hash from the study database
(no request names a file), participants are known only by the random token in their link, every error is a
short HTML page (or JSON when asked) without a stack trace, and the admin page needs `--admin-token`
(compared in constant time). Each answer is one SQLite transaction (WAL, synchronous=FULL); writes are
serialised by one lock, reads run in parallel.
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import socket
import sqlite3
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from nadm.errors import NADMError
from nadm.study import db, pages, sessions
from nadm.study.sessions import RequestRefused

MAX_BODY = 16 * 1024  # bytes; an answer form is about 150
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
HASH_PATTERN = re.compile(r"[0-9a-f]{64}")
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; media-src 'self'; img-src 'self'; style-src 'self'; "
                                 b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),  # the token in the URL never leaks in a Referer header
    (b"x-frame-options", b"DENY"),
]
log = logging.getLogger("nadm.study")


class _BodyTooLarge(Exception):
    pass


class GuardMiddleware:
    """Pure ASGI: refuse bodies over `limit` bytes (by Content-Length, and by counting a chunked body), and add
    the security headers to every response."""

    def __init__(self, app, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _plain(send, 413 if length.isdigit() else 400, "request body too large" if length.isdigit()
                         else "bad Content-Length")
            return
        seen, started = 0, False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        async def guarded_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": list(message.get("headers", [])) + SECURITY_HEADERS}
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if not started:
                await _plain(send, 413, "request body too large")


async def _plain(send, status: int, message: str) -> None:
    """A short JSON error sent straight from the ASGI layer."""
    body = ('{"error": "%s"}' % message).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")] + SECURITY_HEADERS})
    await send({"type": "http.response.body", "body": body})


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _error(request: Request, status: int, message: str) -> Response:
    """An error as JSON (when the client asks for it) or a short HTML page; never a stack trace."""
    token = request.path_params.get("token") if status == 409 else None
    if _wants_json(request):
        return JSONResponse({"error": message}, status_code=status)
    return HTMLResponse(pages.error(status, message, token), status_code=status)


class Study:
    """The database behind the app: one connection per worker thread, one lock for writes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.local = threading.local()
        self.write_lock = threading.Lock()
        con = self.con()
        self.meta = db.read_meta(con)

    def con(self) -> sqlite3.Connection:
        if getattr(self.local, "con", None) is None:
            self.local.con = db.connect(self.path)
        return self.local.con

    def participant(self, token: str) -> int:
        """The participant id of a link's token; RequestRefused 404 for anything else."""
        pid = sessions.participant_id(self.con(), token) if TOKEN_PATTERN.fullmatch(token) else None
        if pid is None:
            raise RequestRefused(404, "unknown participant link")
        return pid

    def store(self, token: str, position: int, pair: int, choices: dict[str, str]) -> int | None:
        """Store one answer under the write lock; the next position (None: finished)."""
        pid = self.participant(token)
        with self.write_lock:
            return sessions.submit(self.con(), pid, position, pair, choices)


def _form(request: Request, body: bytes) -> dict[str, str]:
    """An urlencoded form, strictly: a wrong type is 415, bad bytes or syntax 400, a repeated field 422."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise RequestRefused(415, "send the answer as an application/x-www-form-urlencoded form")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), max_num_fields=16,
                          errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise RequestRefused(400, "malformed form body") from None
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise RequestRefused(422, "a field is given twice")
    return fields


def _range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range, None for the whole file; RequestRefused 416 if unusable."""
    if not header:
        return None
    match = re.fullmatch(r"bytes=(\d*)-(\d*)", header.strip())
    if not match or match.groups() == ("", ""):
        return None  # several ranges or another unit: send the whole file (allowed by RFC 9110)
    first, last = match.groups()
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start, end = int(first), min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise RequestRefused(416, "range not satisfiable")
    return start, end


def _admin_allowed(request: Request, token: str | None) -> bool:
    """HTTP Basic (any user name, the token as password) or Bearer; constant-time comparison."""
    if not token:
        return False
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    given = ""
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            given = ""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), token.encode("utf-8"))


def create_app(path: str | Path, admin_token: str | None = None, open_enrolment: bool = False,
               max_participants: int | None = None) -> FastAPI:
    """The study app for one database (which must exist and be a nadm study)."""
    study = Study(Path(path))
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    app.state.study = study
    _add_error_handlers(app)
    _add_participant_routes(app, study, open_enrolment, max_participants)
    _add_media_routes(app, study)
    _add_admin_routes(app, study, admin_token)
    app.add_middleware(GuardMiddleware)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Every error a short page or JSON: refusals with their status, framework errors as theirs, bugs 500."""

    @app.exception_handler(RequestRefused)
    async def refused(request: Request, exc: RequestRefused) -> Response:
        return _error(request, exc.status, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = _error(request, exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return _error(request, 422, "invalid request")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> Response:
        log.error("error serving %s %s", request.method, request.url.path, exc_info=exc)
        return _error(request, 500, "internal error (logged on the server)")


def _add_participant_routes(app: FastAPI, study: Study, open_enrolment: bool, max_participants: int | None) -> None:
    """Landing page, enrolment, the participant's pages and answers."""

    @app.get("/", response_class=HTMLResponse)
    def landing() -> str:
        return pages.landing(open_enrolment)

    @app.post("/start")
    def enrol() -> Response:
        if not open_enrolment:
            raise RequestRefused(404, "this study is by invitation only")
        with study.write_lock:
            _, token = sessions.add_participant(study.con(), via="open", limit=max_participants)
        return RedirectResponse(f"/p/{token}", status_code=303)

    @app.get("/p/{token}")
    def show(request: Request, token: str) -> Response:
        pid = study.participant(token)
        con = study.con()
        current = sessions.current_slot(con, pid)
        answered, total, _ = sessions.progress(con, pid)
        if _wants_json(request):
            nxt = None if current is None else {"slot": current.position, "pair": current.pair_id,
                                                "prompt": current.prompt, "left": current.left[0],
                                                "right": current.right[0]}
            return JSONResponse({"answered": answered, "total": total, "next": nxt})
        started = con.execute("SELECT started_at FROM participant WHERE id = ?", (pid,)).fetchone()[0]
        if current is None:
            html = pages.finished(total)
        elif started is None:
            html = pages.intro(token, total, study.meta.get("intro") or None)
        else:
            html = pages.slot(token, current)
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    @app.post("/p/{token}/start")
    def begin(token: str) -> Response:
        pid = study.participant(token)
        with study.write_lock:
            sessions.start(study.con(), pid)
        return RedirectResponse(f"/p/{token}", status_code=303)

    @app.post("/p/{token}/answer")
    async def answer(request: Request, token: str) -> Response:
        fields = _form(request, await request.body())
        position, pair, choices = sessions.parse_answer(fields)
        following = await run_in_threadpool(study.store, token, position, pair, choices)
        if _wants_json(request):
            return JSONResponse({"stored": True, "slot": position, "next": following})
        return RedirectResponse(f"/p/{token}", status_code=303)


def _add_media_routes(app: FastAPI, study: Study) -> None:
    """The clips (by content hash only, from the database), the stylesheet, a health check."""

    @app.get("/clip/{sha}")
    def clip(request: Request, sha: str) -> Response:
        if not HASH_PATTERN.fullmatch(sha):
            raise RequestRefused(404, "no such clip")
        row = study.con().execute("SELECT media_type, data FROM media WHERE sha256 = ?", (sha,)).fetchone()
        if row is None:
            raise RequestRefused(404, "no such clip")
        data: bytes = row["data"]
        headers = {"accept-ranges": "bytes", "cache-control": "public, max-age=86400, immutable"}
        span = _range(request.headers.get("range"), len(data))
        if span is None:
            return Response(data, media_type=row["media_type"], headers=headers)
        start, end = span
        headers["content-range"] = f"bytes {start}-{end}/{len(data)}"
        return Response(data[start:end + 1], status_code=206, media_type=row["media_type"], headers=headers)

    @app.get("/static/study.css")
    def css() -> Response:
        return Response(pages.CSS, media_type="text/css", headers={"cache-control": "public, max-age=3600"})

    @app.get("/healthz")
    def health() -> dict:
        return {"ok": True}


def _add_admin_routes(app: FastAPI, study: Study, admin_token: str | None) -> None:
    """/admin (HTML) and /admin.json: progress per participant and per pair, behind the admin token."""

    def guard(request: Request) -> None:
        if not admin_token:
            raise RequestRefused(404, "the admin page is off (start the server with --admin-token)")
        if not _admin_allowed(request, admin_token):
            raise StarletteHTTPException(401, "admin token required",
                                         headers={"www-authenticate": 'Basic realm="nadm study admin"'})

    @app.get("/admin.json")
    def admin_json(request: Request) -> dict:
        guard(request)
        return sessions.overview(study.con())

    @app.get("/admin", response_class=HTMLResponse)
    def admin(request: Request) -> Response:
        guard(request)
        o = sessions.overview(study.con())
        people = [[p["id"], p["via"], p["created_at"], p["started_at"], p["finished_at"],
                   f"{p['answered']}/{p['total']}", f"{p['checks_failed']} of {p['checks_answered']} "
                   f"(of {p['checks']})"] for p in o["participants"]]
        pairs = [[p["id"], p["system_a"], p["system_b"], p["prompt"][:60], p["seed"], p["assigned"], p["answered"]]
                 for p in o["pairs"]]
        body = (f"<h1>Study progress</h1><p>{len(people)} participants, {o['finished']} finished, "
                f"{o['answers']} answers stored. Attention rule: {sessions.ATTENTION_RULE}.</p><h2>Participants</h2>"
                + pages.table(["id", "via", "created", "started", "finished", "pairs answered",
                               "checks failed of answered"], people)
                + "<h2>Pairs</h2>"
                + pages.table(["pair", "A", "B", "prompt", "seed", "assigned", "answered"], pairs))
        return HTMLResponse(pages.page("Study progress", body), headers={"cache-control": "no-store"})


def serve(path: str | Path, host: str = "127.0.0.1", port: int = 8080, admin_token: str | None = None,
          open_enrolment: bool = False, max_participants: int | None = None) -> None:
    """Check the database, bind the socket, say where it listens (the real port when 0), then run uvicorn."""
    import uvicorn

    # 1. the database must be a study and pass SQLite's quick check
    path = Path(path).expanduser()
    con = db.connect(path)
    try:
        result = con.execute("PRAGMA quick_check").fetchone()[0]
    finally:
        con.close()
    if result != "ok":
        raise NADMError(f"{path} fails SQLite's quick_check: {result}")
    app = create_app(path, admin_token, open_enrolment, max_participants)
    # 2. bind (port 0: any free port), then say where
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise NADMError(f"cannot listen on {host}:{port}: {e.strerror or e}") from e
    sock.listen(2048)  # connections queue from now on, before uvicorn's loop takes over the socket
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"nadm study: serving {path} on http://{shown}:{bound}/ (admin page: "
          f"{'/admin' if admin_token else 'off'}; enrolment: {'open' if open_enrolment else 'by invitation'})",
          flush=True)
    if host not in ("127.0.0.1", "::1", "localhost"):
        print("warning: listening beyond this machine; participant links travel in plain HTTP, put a TLS proxy in "
              "front", file=sys.stderr, flush=True)
    # 3. run until interrupted
    config = uvicorn.Config(app, log_level="warning", access_log=False, server_header=False, limit_concurrency=256,
                            timeout_keep_alive=5)
    uvicorn.Server(config).run(sockets=[sock])
