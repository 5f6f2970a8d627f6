"""The resize function: a Lambda handler over ``imagepipe.resize.handle_invocation``.

Invoked by the bridge (Lambda Invoke, RequestResponse) with a ``messages.Invocation``; returns a
``messages.InvocationResult``. It never raises for a bad image or a transient fault: the result's
status tells the bridge whether to ack, dead-letter or retry.
"""

import logging

from chalice import Chalice

from imagepipe import logs, settings as settings_edge
from imagepipe.resize import Runtime, handle_invocation

# The module level is this function's entry point: Lambda's handler writes JSON (the template's
# LoggingConfig) with each line's upload_id and job_id; elsewhere, JSON lines or text on stderr.
app = Chalice(app_name="imagepipe-resize", configure_logs=False)
logs.configure(logging.INFO)
logging.getLogger("imagepipe").setLevel(logging.INFO)

_runtime = None


def runtime() -> Runtime:
    # Settings and clients are made on the first invocation and kept while the Lambda is warm.
    # ``load``: the delivery keys that sign the variant URLs come from their secret.
    global _runtime
    if _runtime is None:
        _runtime = Runtime(settings_edge.load())
    return _runtime


@app.lambda_function(name="resize")
def resize(event, context):
    return handle_invocation(event, runtime())
