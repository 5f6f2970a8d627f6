"""``python -m imagepipe resize`` as a user runs it: a subprocess over good, bad, missing files."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from imagepipe_tools import cli
from imagepipe_tools.cli import upload as upload_cli
from imagepipe.imaging import vips
from tests import images

ROOT = Path(__file__).resolve().parents[2]
JSON_KEYS = {"input", "status", "variants", "error"}
VARIANT_KEYS = {"name", "width", "height", "format", "bytes", "path"}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # PYTHONPATH: tests/conftest.py
    result = subprocess.run(
        [sys.executable, "-m", "imagepipe", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )
    assert "Traceback" not in result.stdout + result.stderr, result.stderr
    return result


@pytest.fixture
def inputs(tmp_path) -> dict[str, str | None]:
    """File name -> the failure code it must get (None: done). Written into tmp_path."""
    files = {
        "portrait.jpg": (images.make_jpeg(900, 600, orientation=6), None),
        "alpha.png": (images.make_rgba_png(300, 200), None),
        "grey16.png": (images.make_png_16bit_grey(40, 30, 32768), None),
        "page.jpg": (images.make_html_polyglot(), "unsupported_format"),
        "anim.gif": (images.make_animated("GIF", 30, 20, [images.RED, images.BLUE]), None),
        "page.bmp": (images.make_bmp(10, 10), "unsupported_format"),
        "cut.jpg": (images.truncated(images.make_jpeg(400, 300)), "truncated"),
        "broken.png": (images.make_png_bad_pixels(64, 64), "corrupt"),
        "bomb.png": (images.make_png_header(10_000, 6_000), "too_many_pixels"),
        "empty.jpg": (b"", "empty_upload"),
        "new\nline.jpg": (b"not an image", "unsupported_format"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.jpg").mkdir()
    expected = {name: code for name, (_, code) in files.items()}
    expected["missing.jpg"] = "source_missing"
    expected["folder.jpg"] = "source_missing"
    return expected


def test_plain_text_one_line_per_input(tmp_path, inputs):
    result = run_cli("resize", *inputs, "--out", "out", cwd=tmp_path)

    assert result.returncode == 1, "some inputs failed: " + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(inputs)
    for line, (name, code) in zip(lines, inputs.items()):
        shown = name.replace("\n", "\\n")
        if code is None:
            assert line.startswith(f"{shown}: done ("), line
            for part in line[line.index("(") + 1 : -1].split(", "):
                variant, size, fmt, size_bytes = part.split(" ")
                width, height = map(int, size.split("x"))
                ext = "jpg" if fmt == "jpeg" else fmt
                path = tmp_path / "out" / Path(name).stem / f"{variant}.{ext}"
                assert path.stat().st_size == int(size_bytes)
                assert Image.open(path).size == (width, height)
        else:
            assert line.startswith(f"{shown}: failed {code}: "), line
    portrait = lines[0]
    assert "xl 900x600 jpeg" in portrait and "thumb 150x150 jpeg" in portrait  # upright
    assert "xl 300x200 png" in lines[1]


def test_json_lines(tmp_path, inputs):
    result = run_cli("resize", *inputs, "--out", str(tmp_path / "out"), "--json", cwd=tmp_path)

    assert result.returncode == 1, "some inputs failed: " + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(inputs)
    for line, (name, code) in zip(lines, inputs.items()):
        record = json.loads(line)
        assert set(record) == JSON_KEYS
        assert record["input"] == name
        if code is None:
            assert record["status"] == "done" and record["error"] is None
            assert [v["name"] for v in record["variants"]] == ["xl", "lg", "md", "sm", "thumb"]
            for variant in record["variants"]:
                assert set(variant) == VARIANT_KEYS
                path = Path(variant["path"])
                assert path.parent == tmp_path / "out" / Path(name).stem
                assert path.stat().st_size == variant["bytes"]
                image = Image.open(path)
                assert image.size == (variant["width"], variant["height"])
                assert image.format.lower() == variant["format"]
        else:
            assert record["status"] == "failed" and record["variants"] == []
            assert record["error"]["code"] == code
            assert record["error"]["message"]


def test_max_pixels_and_same_stems(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(images.make_jpeg(300, 200))
    (tmp_path / "b" / "x.png").write_bytes(images.make_png(30, 20))

    both = ("resize", "a/x.jpg", "b/x.png", "--out", "out", "--json")
    result = run_cli(*both, "--max-pixels", "1000", cwd=tmp_path)

    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["error"]["code"] == "too_many_pixels"
    assert second["status"] == "done"
    # Folders follow the order of the arguments, not which inputs succeeded.
    assert Path(second["variants"][0]["path"]).parent.name == "x-2"

    result = run_cli(*both, cwd=tmp_path)

    records = [json.loads(line) for line in result.stdout.splitlines()]
    folders = [Path(r["variants"][0]["path"]).parent.name for r in records]
    assert folders == ["x", "x-2"], "the second x must not overwrite the first"


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("resize",),
        ("resize", "--out", "out"),
        ("resize", "a.jpg"),
        ("resize", "a.jpg", "--out", "out", "--max-pixels", "0"),
        ("resize", "a.jpg", "--out", "a.jpg"),  # --out is a file
        ("resize", "a.jpg", "--out", "out", "--engine", "magick"),
        ("nosuchcommand",),
        ("upload", "a.jpg"),  # no --api
        ("upload", "--api", "http://127.0.0.1:1"),  # no file
        ("upload", "a.jpg", "--api", "ftp://example.com"),
        ("upload", "a.jpg", "--api", "http://127.0.0.1:1", "--timeout", "0"),
        ("upload", "a.jpg", "--api", "http://127.0.0.1:1", "--jobs", "0"),
        ("upload", "a.jpg", "--api", "http://127.0.0.1:1", "--out", "a.jpg"),  # --out is a file
    ],
)
def test_usage_errors_exit_2(tmp_path, args):
    (tmp_path / "a.jpg").write_bytes(images.make_jpeg(10, 10))

    result = run_cli(*args, cwd=tmp_path)

    assert result.returncode == 2
    assert result.stdout == ""
    assert "usage:" in result.stderr


def test_resize_with_an_engine_that_cannot_run_here_is_a_usage_error(tmp_path, monkeypatch, capsys):
    # In process: the check is the pipeline's own (imaging.check_engine), turned into exit 2.
    from imagepipe_tools.cli import main

    monkeypatch.setattr(vips, "available", lambda: False)
    with pytest.raises(SystemExit) as exited:
        main(["resize", str(tmp_path / "a.jpg"), "--out", str(tmp_path / "out"), "--engine", "vips"])

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "--engine vips" in err and "pyvips" in err
    assert not (tmp_path / "out").exists()


def test_resize_runs_libvips_by_default(tmp_path, monkeypatch, capsys):
    from imagepipe_tools.cli import main
    from imagepipe_tools.cli import resize as resize_cli

    (tmp_path / "a.jpg").write_bytes(images.make_jpeg(300, 200))
    made, used = resize_cli.resize_one, []
    monkeypatch.setattr(resize_cli, "resize_one", lambda *args: used.append(args[-1]) or made(*args))

    assert main(["resize", str(tmp_path / "a.jpg"), "--out", str(tmp_path / "out")]) == 0

    assert used == ["vips"]
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'a.jpg'}: done (xl 300x200 jpeg")


def test_resize_runs_pillow_with_a_warning_where_libvips_cannot_run(tmp_path):
    (tmp_path / "a.jpg").write_bytes(images.make_jpeg(300, 200))
    broken = ("import sys; from imagepipe.imaging import vips; "
              "vips._load = lambda: 'OSError: libvips.so.42: cannot open'; "
              "from imagepipe_tools.cli import main; sys.exit(main(sys.argv[1:]))")

    result = subprocess.run([sys.executable, "-c", broken, "resize", "a.jpg", "--out", "out"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0
    assert result.stdout.startswith("a.jpg: done (xl 300x200 jpeg")
    [line] = result.stderr.splitlines()
    logged = json.loads(line)
    assert (logged["level"], logged["logger"]) == ("WARNING", "imagepipe.imaging")
    assert logged["message"] == ("imaging engine: pillow, because libvips cannot run here "
                                 "(OSError: libvips.so.42: cannot open)")


ENGINES = ["pillow"] + (["vips"] if vips.available() else [])


@pytest.mark.parametrize("engine", ENGINES)
def test_the_whole_corpus_and_garbage_one_line_each(tmp_path, engine):
    """Every kind of file the engine knows, hostile ones included, plus what is not a file:
    exactly one JSON line each, in order, with the expected outcome; no traceback, no hang."""
    corpus = images.corpus()
    names = []
    for name, (data, _) in corpus.items():
        (tmp_path / name).write_bytes(data)
        names.append(name)
    (tmp_path / "a-folder.jpg").mkdir()
    os.mkfifo(tmp_path / "fifo.jpg")  # would block a reader forever
    extra = {"a-folder.jpg": {"source_missing"}, "fifo.jpg": {"source_missing"},
             "not-there.png": {"source_missing"}}
    names += list(extra)

    result = run_cli("resize", *names, "--out", "out", "--json", "--threads", "2",
                     "--engine", engine, cwd=tmp_path)

    assert result.returncode == 1, "hostile inputs failed: " + result.stderr
    assert result.stderr == "", "nothing but the lines: no warnings either"
    lines = result.stdout.splitlines()
    assert len(lines) == len(names)
    for line, name in zip(lines, names):
        record = json.loads(line)
        assert record["input"] == name
        codes = corpus[name][1] if name in corpus else extra[name]
        if codes is None:
            assert record["status"] == "done", record
            assert len(record["variants"]) == 5
        else:
            assert record["status"] == "failed", record
            assert record["error"]["code"] in codes, record


class _Completed:
    """An UploadClient whose complete answered ``status`` (a job that had already started)."""

    def __init__(self, status: str):
        self.status = status

    def submit_file(self, path, method=None, progress=None):
        return {"upload_id": "u1", "status": self.status}


@pytest.mark.parametrize("answered", ["queued", "processing", "done"])
def test_upload_without_wait_reports_what_complete_answered(answered):
    args = argparse.Namespace(wait=False, timeout=1.0, out=None)

    result = upload_cli.upload_one(_Completed(answered), "cat.jpg", "cat", args, None)

    assert result == {"input": "cat.jpg", "upload_id": "u1", "status": answered,
                      "variants": [], "error": None}
    assert upload_cli._text_line(result) == f"cat.jpg: {answered} u1"


# One exit rule for the commands that take inputs: 0 all done, 1 any failed, 2 usage.
def test_exit_status_is_1_when_any_result_failed():
    done = {"status": "done"}
    failed = {"status": "failed"}
    assert cli.exit_status([done, {"status": "queued"}]) == cli.EXIT_OK == 0
    assert cli.exit_status([done, failed, done]) == cli.EXIT_FAILED == 1
    assert cli.exit_status([]) == 0


@pytest.mark.parametrize("files, expected", [
    ({"a.jpg": images.make_jpeg(40, 30), "b.png": images.make_png(20, 10)}, 0),
    ({"a.jpg": images.make_jpeg(40, 30), "b.txt": b"not an image"}, 1),
    ({"b.txt": b"not an image", "c.jpg": b""}, 1),  # every input failed: not a success
], ids=["all-done", "one-failed", "all-failed"])
def test_resize_exits_0_only_when_every_input_is_done(tmp_path, files, expected):
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)

    result = run_cli("resize", *files, "--out", "out", cwd=tmp_path)

    assert result.returncode == expected, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == len(files)


@pytest.mark.parametrize("command", ["resize", "upload"])
def test_resize_and_upload_exit_1_when_every_input_failed(tmp_path, command):
    """The rule both commands share: a run in which nothing went through is a failure."""
    (tmp_path / "a.jpg").write_bytes(b"not an image")
    (tmp_path / "b.jpg").write_bytes(b"")
    port = _closed_port()
    extra = ["--out", "out"] if command == "resize" else ["--api", f"http://127.0.0.1:{port}"]

    result = run_cli(command, "a.jpg", "b.jpg", *extra, cwd=tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert [line.split(": ")[1].split(" ")[0] for line in result.stdout.splitlines()] == [
        "failed", "failed"]


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed
