"""The upload function: HTTP routes and the S3 ObjectCreated handler over ``imagepipe.uploads``.

Routes only parse the request, call one ``UploadService`` method and turn its result or its
``errors.ApiError`` into a JSON response; anything unexpected becomes a logged 500 in the same format,
never a traceback or Chalice's own error body.

On a stage with auth (``IMAGEPIPE_AUTH_MODE=jwt``) every route but the public ones (the demo
page, ``GET /limits``, ``GET /openapi.json``, CORS preflights) first turns the request's
``Authorization: Bearer`` header into an ``auth.Caller`` (or a 401) and hands it to the service,
which answers only the upload's owner. The check runs in the app rather than as a Chalice
authorizer, so ``chalice local`` (which reads only ``Authorization`` for built-in authorizers)
and the tests run exactly what Lambda runs.
"""

import functools
import json
import logging
from typing import Mapping
from pathlib import Path
from urllib.parse import unquote_plus

from chalice import Chalice, Response
from chalice.app import Request

from imagepipe import auth, aws, cors, keys, logs, openapi, settings as settings_edge
from imagepipe.broker import JobPublisher
from imagepipe.errors import INTERNAL, ORIGIN_NOT_ALLOWED, ApiError
from imagepipe.status import StatusStore
from imagepipe.uploads import UploadService, parse_json_object
from imagepipe.webpage import WebPage

# The module level is this function's entry point, so logging is set up here: Lambda's own
# handler (JSON with the template's LoggingConfig, fields included), or JSON lines / text on
# stderr under chalice local. configure_logs=False: Chalice's handler on app.log would print
# plain text to stdout beside it; app.log's lines go through the root logger instead.
app = Chalice(app_name="imagepipe-upload", configure_logs=False)
logs.configure(logging.INFO)
app.log.setLevel(logging.INFO)
# The core's INFO lines (job enqueued, upload rejected) are the audit trail of this function,
# whatever level the runtime gave the root logger.
logging.getLogger("imagepipe").setLevel(logging.INFO)

# The body is parsed here whatever its declared type, so a missing or wrong Content-Type gets
# our error format instead of Chalice's 415.
ANY_CONTENT_TYPE = ["*/*"]
JSON_HEADERS = {"Content-Type": "application/json"}
# Resolved: the local stack links app.py into a private project dir. Chalice packages
# chalicelib/ with the function.
OPENAPI_PATH = Path(__file__).resolve().parent / "chalicelib" / "openapi.json"

_service = None
_verifier: auth.Verifier | None = None
# How long a client should wait when the identity provider's keys cannot be fetched.
KEYS_RETRY_AFTER_S = 5
# The demo page ships in chalicelib/, which Chalice packages with the function.
_page = WebPage(Path(__file__).parent / "chalicelib" / "web")


def service() -> UploadService:
    # Settings and clients are made on the first request and kept while the Lambda is warm (the
    # broker connection too: reconnecting per request would cost more than the request; the
    # JWKS cache too).
    global _service, _verifier
    if _service is None:
        settings = settings_edge.load()  # the broker's credentials come from its secret
        s3 = aws.s3_client(settings)
        _verifier = auth.verifier(settings)
        _service = UploadService(
            settings, s3, JobPublisher(settings), StatusStore(s3, settings.bucket)
        )
    return _service


def _caller() -> auth.Caller | None:
    """Who the request's bearer token speaks for; None on a stage without auth."""
    service()
    if _verifier is None:
        return None
    return _verifier.caller(_header("authorization"))


def _request() -> Request:
    """The request being handled (Chalice sets it before any route or handler runs)."""
    request = app.current_request
    if request is None:
        raise RuntimeError("no current request")
    return request


def _header(name: str) -> str | None:
    headers: Mapping[str, str] = _request().headers or {}
    return headers.get(name)


def _headers(headers: Mapping[str, str]) -> dict[str, str | list[str]]:
    return {name: value for name, value in headers.items()}


def _json(status: int, body: dict, headers: dict | None = None) -> Response:
    return Response(body=body, status_code=status, headers={**JSON_HEADERS, **(headers or {})})


def api(success_status: int, *, public: bool = False):
    """Wrap a view returning a dict: that dict with ``success_status``, or the error as JSON;
    either way with the CORS headers the request's origin may see. Unless ``public``, the view
    gets the verified ``caller`` (None on a stage without auth) as a keyword argument."""
    def decorate(view):
        @functools.wraps(view)
        def respond(**path_params):
            with logs.context(**{logs.UPLOAD_ID: path_params.get("upload_id")}):
                response = _respond(view, success_status, path_params, public)
            origin = _origin()
            if origin:  # the settings are read for a cross-origin call only
                response.headers.update(cors.response_headers(origin, _allowed_origins()))
            return response
        return respond
    return decorate


def _respond(view, success_status: int, path_params: dict, public: bool) -> Response:
    try:
        if not public:
            path_params = {**path_params, "caller": _caller()}
        return _json(success_status, view(**path_params))
    except auth.Unauthorized as exc:
        app.log.info("%s refused: %s", view.__name__, exc.message)  # never the token itself
        return _json(401, ApiError(401, auth.UNAUTHORIZED, exc.message).to_body(),
                     {"WWW-Authenticate": exc.challenge, "Cache-Control": "no-store"})
    except auth.QuotaExceeded as exc:
        return _json(403, ApiError(403, auth.QUOTA_EXCEEDED, exc.message).to_body())
    except auth.KeysUnavailable as exc:
        return _json(503, ApiError(503, auth.AUTH_UNAVAILABLE, exc.message).to_body(),
                     {"Retry-After": str(KEYS_RETRY_AFTER_S)})
    except ApiError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        return _json(exc.status, exc.to_body(), headers)
    except Exception:
        app.log.exception("unexpected error in %s", view.__name__)
        return _internal_error()


def _internal_error() -> Response:
    """The 500 of anything unexpected: logged by the caller, never described to the client."""
    return _json(500, ApiError(500, INTERNAL, "an internal error occurred").to_body())


def _origin() -> str | None:
    return _header("origin")


def _allowed_origins() -> tuple[str, ...]:
    try:
        return service().settings.allowed_origins
    except Exception:  # bad settings: the view's own response says so; allow no origin
        app.log.exception("could not read the allowed origins")
        return ()


def _collection_path(request) -> str:
    # API Gateway puts the stage in the request path ("/api/uploads"), chalice local does not.
    return (request.context or {}).get("path") or "/uploads"


def _web(name: str) -> Response:
    try:
        body, headers = _page.asset(name, (_request().context or {}).get("path") or "/")
    except Exception:
        app.log.exception("the demo page's %s cannot be served", name)
        return _internal_error()
    return Response(body=body, status_code=200, headers=_headers(headers))


# --- the demo page (same origin as the API, so only S3 is cross-origin) ------------------------
@app.route("/", methods=["GET"])
def demo_page():
    return _web("index.html")


@app.route("/app.js", methods=["GET"])
def demo_page_script():
    return _web("app.js")


@app.route("/app.css", methods=["GET"])
def demo_page_style():
    return _web("app.css")


@app.route("/uploads", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@api(201)
def create_upload(caller):
    request = _request()
    return service().create_upload(parse_json_object(request.raw_body), _collection_path(request),
                                   caller)


def _optional_json_object() -> dict:
    # Bodies that are optional by contract (complete, parts): none at all means "defaults".
    raw = _request().raw_body
    return parse_json_object(raw) if raw and raw.strip() else {}


@app.route("/openapi.json", methods=["GET"], content_types=ANY_CONTENT_TYPE)
@api(200, public=True)
def get_openapi():
    return openapi.stage_document(_openapi_template(), service().settings)


@functools.lru_cache(maxsize=1)
def _openapi_template() -> dict:
    return json.loads(OPENAPI_PATH.read_text())


@app.route("/limits", methods=["GET"], content_types=ANY_CONTENT_TYPE)
@api(200, public=True)
def get_limits():
    return service().limits()


@app.route("/uploads/{upload_id}/parts", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@api(200)
def list_parts(upload_id, caller):
    return service().parts(upload_id, _optional_json_object(), caller)


@app.route("/uploads/{upload_id}/complete", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@api(202)
def complete_upload(upload_id, caller):
    return service().complete(upload_id, _optional_json_object(), caller)


@app.route("/uploads/{upload_id}", methods=["GET"], content_types=ANY_CONTENT_TYPE)
@api(200)
def get_upload(upload_id, caller):
    return service().get_status(upload_id, _api_url(f"/uploads/{upload_id}"), caller)


def _api_url(route_path: str) -> str:
    """Where this request reached the API (``https://host/api`` behind API Gateway): the
    stable variant URLs point there unless the stage names its public URL."""
    request = _request()
    context = request.context or {}
    headers: Mapping[str, str] = request.headers or {}
    host = context.get("domainName") or headers.get("host", "")
    scheme = headers.get("x-forwarded-proto") or ("https" if context.get("domainName") else "http")
    path = context.get("path") or route_path
    prefix = path[: -len(route_path)] if path.endswith(route_path) else ""
    return f"{scheme}://{host}{prefix}"


# --- stable variant URLs: no authentication (an <img> sends no header), the signature is the key
@app.route("/v/{upload_id}/{filename}", methods=["GET"], content_types=ANY_CONTENT_TYPE)
def variant_redirect(upload_id, filename):
    try:
        found = service().variant_redirect(upload_id, filename,
                                           dict(_request().query_params or {}))
    except ApiError as exc:
        return _json(exc.status, exc.to_body())
    except Exception:
        app.log.exception("unexpected error in variant_redirect")
        return _internal_error()
    return Response(body="", status_code=302, headers=found["headers"])


@app.route("/uploads/{upload_id}", methods=["DELETE"], content_types=ANY_CONTENT_TYPE)
@api(200)
def cancel_upload(upload_id, caller):
    return service().cancel(upload_id, caller)


@app.lambda_function(name="on_object_created")
def on_object_created(event, context):
    """S3 ObjectCreated notification: enqueue each original, as ``complete`` would.

    Keys that are not originals are ignored. A broker or S3 outage raises at the end, so Lambda's
    async retry runs the event again (enqueue is idempotent); the client's ``complete`` is the
    other path to the same job.
    """
    records = event.get("Records") if isinstance(event, dict) else None
    results = [_enqueue_record(record) for record in records or []]
    retry = [r["key"] for r in results if r["result"] == "retry"]
    if retry:
        raise RuntimeError(f"could not enqueue {len(retry)} upload(s), retrying: {retry}")
    return {"records": results}


def _enqueue_record(record) -> dict:
    bucket = _field(record, "s3", "bucket", "name")
    # S3 notifications URL-encode the key (a space arrives as "+").
    key = unquote_plus(str(_field(record, "s3", "object", "key") or ""))
    if not key.startswith(keys.ORIGINALS_PREFIX):
        app.log.info("ignoring %r: not an original", key)
        return {"key": key, "result": "ignored"}
    try:
        upload_id = keys.upload_id_from_original_key(key)
    except keys.InvalidKey:
        app.log.warning("ignoring %r: not an upload id", key)
        return {"key": key, "result": "ignored"}
    if bucket != service().settings.bucket:
        app.log.warning("ignoring %r: bucket %r is not this stage's", key, bucket)
        return {"key": key, "result": "ignored"}
    try:
        with logs.context(**{logs.UPLOAD_ID: upload_id}):
            return {"key": key, "result": service().enqueue(upload_id)["status"]}
    except ApiError as exc:
        if exc.retryable:
            app.log.warning("upload %s not enqueued (%s); will retry", upload_id, exc.code,
                            extra={logs.UPLOAD_ID: upload_id})
            return {"key": key, "result": "retry"}
        app.log.info("upload %s not enqueued: %s", upload_id, exc,
                     extra={logs.UPLOAD_ID: upload_id})
        return {"key": key, "result": exc.code}
    except Exception:
        app.log.exception("upload %s not enqueued", upload_id, extra={logs.UPLOAD_ID: upload_id})
        return {"key": key, "result": "retry"}


def _field(event, *path):
    """``event[path[0]][path[1]]...``, or None where the event does not have that shape."""
    for name in path:
        event = event.get(name) if isinstance(event, dict) else None
    return event


# --- CORS preflights (keep this last: it covers the routes defined above) ---------------------

def _preflight_view(methods: list[str]):
    def preflight(**_path_params):
        headers = cors.preflight_headers(_origin(), _allowed_origins(), methods)
        if headers is None:
            refused = ApiError(403, ORIGIN_NOT_ALLOWED, "this origin may not call the API")
            return _json(refused.status, refused.to_body(), {"Vary": "Origin"})
        return Response(body="", status_code=204, headers=_headers(headers))
    return preflight


for _number, (_path, _views) in enumerate(list(app.routes.items())):
    if "OPTIONS" not in _views:
        app.route(_path, methods=["OPTIONS"], content_types=ANY_CONTENT_TYPE,
                  name=f"preflight_{_number}")(_preflight_view(sorted(_views)))
