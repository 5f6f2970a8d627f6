"""The upload function: HTTP routes and the S3 ObjectCreated handler over ``imagepipe.uploads``.

Routes only parse the request, call one ``UploadService`` method and turn its result or its
``ApiError`` into a JSON response; anything unexpected becomes a logged 500 in the same format,
never a traceback or Chalice's own error body.
"""

import functools
import logging
from urllib.parse import unquote_plus

from chalice import Chalice, Response

from imagepipe import aws, keys, settings as settings_edge
from imagepipe.broker import JobPublisher
from imagepipe.errors import INTERNAL
from imagepipe.status import StatusStore
from imagepipe.uploads import ApiError, UploadService, parse_json_object

app = Chalice(app_name="imagepipe-upload")
app.log.setLevel(logging.INFO)
# Lambda's root logger only passes WARNING; the core's INFO lines (job enqueued, upload
# rejected) are the audit trail of this function.
logging.getLogger("imagepipe").setLevel(logging.INFO)

# The body is parsed here whatever its declared type, so a missing or wrong Content-Type gets
# our error format instead of Chalice's 415.
ANY_CONTENT_TYPE = ["*/*"]
JSON_HEADERS = {"Content-Type": "application/json"}

_service = None


def service() -> UploadService:
    # Settings and clients are made on the first request and kept while the Lambda is warm (the
    # broker connection too: reconnecting per request would cost more than the request).
    global _service
    if _service is None:
        settings = settings_edge.load()  # the broker's credentials come from its secret
        s3 = aws.s3_client(settings)
        _service = UploadService(
            settings, s3, JobPublisher(settings), StatusStore(s3, settings.bucket)
        )
    return _service


def _json(status: int, body: dict, headers: dict | None = None) -> Response:
    return Response(body=body, status_code=status, headers={**JSON_HEADERS, **(headers or {})})


def api(success_status: int):
    """Wrap a view returning a dict: that dict with ``success_status``, or the error as JSON."""
    def decorate(view):
        @functools.wraps(view)
        def respond(**path_params):
            try:
                return _json(success_status, view(**path_params))
            except ApiError as exc:
                headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
                return _json(exc.status, exc.to_body(), headers)
            except Exception:
                app.log.exception("unexpected error in %s", view.__name__)
                return _json(500, {"error": {"code": INTERNAL,
                                             "message": "an internal error occurred"}})
        return respond
    return decorate


def _collection_path(request) -> str:
    # API Gateway puts the stage in the request path ("/api/uploads"), chalice local does not.
    return (request.context or {}).get("path") or "/uploads"


@app.route("/uploads", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@api(201)
def create_upload():
    request = app.current_request
    return service().create_upload(parse_json_object(request.raw_body), _collection_path(request))


@app.route("/uploads/{upload_id}/complete", methods=["POST"], content_types=ANY_CONTENT_TYPE)
@api(202)
def complete_upload(upload_id):
    return service().complete(upload_id)


@app.route("/uploads/{upload_id}", methods=["GET"], content_types=ANY_CONTENT_TYPE)
@api(200)
def get_upload(upload_id):
    return service().get_status(upload_id)


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
        return {"key": key, "result": service().enqueue(upload_id)["status"]}
    except ApiError as exc:
        if exc.retryable:
            app.log.warning("upload %s not enqueued (%s); will retry", upload_id, exc.code)
            return {"key": key, "result": "retry"}
        app.log.info("upload %s not enqueued: %s", upload_id, exc)
        return {"key": key, "result": exc.code}
    except Exception:
        app.log.exception("upload %s not enqueued", upload_id)
        return {"key": key, "result": "retry"}


def _field(event, *path):
    """``event[path[0]][path[1]]...``, or None where the event does not have that shape."""
    for name in path:
        event = event.get(name) if isinstance(event, dict) else None
    return event
