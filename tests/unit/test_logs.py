"""imagepipe.logs: JSON lines with the upload and job ids, text on a terminal, fields from a
context that follows the thread."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import threading

import pytest

from imagepipe import logs

UID = "0123456789abcdef0123456789abcdef"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@contextlib.contextmanager
def bare_root():
    """The root logger with no handlers, as an entry point sees it at start; pytest's own are
    put back (and ours closed) before the test's call phase ends."""
    logger = logging.getLogger()
    handlers, level = logger.handlers[:], logger.level
    logger.handlers.clear()
    try:
        yield logger
    finally:
        for handler in logger.handlers:
            handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)


def _lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_a_pipe_gets_json_lines_with_the_context_fields():
    with bare_root():
        stream = io.StringIO()
        logs.configure(logging.INFO, stream)
        log = logging.getLogger("imagepipe.test")

        with logs.context(upload_id=UID, job_id=UID):
            log.info("job=%s outcome=%s", UID, "done", extra={"attempt": 2})
        log.info("no job here")
        log.debug("below the level")

        first, second = (json.loads(line) for line in _lines(stream))
        assert first["message"] == f"job={UID} outcome=done"
        assert (first["level"], first["logger"]) == ("INFO", "imagepipe.test")
        assert (first["upload_id"], first["job_id"], first["attempt"]) == (UID, UID, 2)
        assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
        assert "upload_id" not in second and "job_id" not in second  # the context ended


def test_a_terminal_gets_text_with_the_ids_the_message_does_not_show():
    with bare_root():
        stream = Tty()
        logs.configure(logging.INFO, stream)
        log = logging.getLogger("imagepipe.test")

        with logs.context(upload_id=UID, job_id="another-job"):
            log.warning("upload %s rejected", UID)

        [line] = _lines(stream)
        assert " WARNING imagepipe.test upload " in line
        assert line.endswith("rejected [job_id=another-job]")  # the upload id is in the words
        with pytest.raises(ValueError):
            json.loads(line)


def test_an_explicit_extra_wins_over_the_context_and_contexts_nest():
    with bare_root():
        stream = io.StringIO()
        logs.configure(logging.INFO, stream)
        log = logging.getLogger("imagepipe.test")

        with logs.context(upload_id="outer", job_id="outer-job"):
            with logs.context(job_id="inner-job", ignored=None):
                log.info("inner")
            log.info("explicit", extra={"job_id": "given"})
            log.info("outer")

        fields = [{k: v for k, v in json.loads(line).items() if k in ("upload_id", "job_id",
                                                                         "ignored")}
                  for line in _lines(stream)]
        assert fields == [
            {"upload_id": "outer", "job_id": "inner-job"},
            {"upload_id": "outer", "job_id": "given"},
            {"upload_id": "outer", "job_id": "outer-job"},
        ]


def test_the_context_belongs_to_the_thread_that_set_it():
    with bare_root():
        stream = io.StringIO()
        logs.configure(logging.INFO, stream)
        log = logging.getLogger("imagepipe.test")
        inside = threading.Event()
        done = threading.Event()

        def worker():
            with logs.context(job_id="worker-job"):
                inside.set()
                done.wait(5)
                log.info("from the worker")

        thread = threading.Thread(target=worker)
        thread.start()
        inside.wait(5)
        log.info("from the main thread")
        done.set()
        thread.join(5)

        by_message = {line["message"]: line for line in map(json.loads, _lines(stream))}
        assert by_message["from the worker"]["job_id"] == "worker-job"
        assert "job_id" not in by_message["from the main thread"]


def test_an_exception_is_one_json_line_with_its_type_and_trace():
    with bare_root():
        stream = io.StringIO()
        logs.configure(logging.INFO, stream)
        try:
            raise KeyError("variants")
        except KeyError:
            logging.getLogger("imagepipe.test").exception("could not record", extra={"when": object()})

        [raw] = _lines(stream)  # the traceback stays inside the one line
        line = json.loads(raw)
        assert (line["errorType"], line["errorMessage"]) == ("KeyError", "'variants'")
        assert any("raise KeyError" in frame for frame in line["stackTrace"])
        assert line["when"].startswith("<object object")  # not JSON: written as its str()


def test_a_runtimes_handler_is_kept_and_sees_the_fields():
    with bare_root() as root:
        # AWS Lambda installs its own handler (JSON with LoggingConfig) before the module loads.
        seen = []

        class RuntimeHandler(logging.Handler):
            def emit(self, record):
                seen.append(record)

        runtime = RuntimeHandler()
        root.addHandler(runtime)
        root.setLevel(logging.WARNING)
        logs.configure(logging.INFO)
        logs.configure(logging.INFO)  # a second module's entry point: one filter, not two

        assert root.handlers == [runtime] and root.level == logging.WARNING
        assert len(runtime.filters) == 1
        with logs.context(upload_id=UID):
            logging.getLogger("imagepipe.test").warning("late")
        assert [(r.getMessage(), r.upload_id) for r in seen] == [("late", UID)]
