"""The demo page's files as responses: content types, the base href, no path tricks."""

from pathlib import Path

import pytest

from imagepipe.webpage import AssetNotFound, WebPage, base_href

WEB = Path(__file__).resolve().parents[2] / "functions" / "upload" / "chalicelib" / "web"


@pytest.mark.parametrize("path, base", [("/", "/"), ("", "/"), ("/api", "/api/"),
                                        ("/api/", "/api/"), ("/api/?x=1", "/api/")])
def test_the_base_is_the_folder_the_page_was_served_from(path, base):
    assert base_href(path) == base


def test_index_gets_its_base_and_html_headers():
    body, headers = WebPage(WEB).asset("index.html", "/api/")
    assert '<base href="/api/">' in body
    assert "{{BASE}}" not in body
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_hostile_base_is_escaped(tmp_path):
    (tmp_path / "index.html").write_text('<base href="{{BASE}}">')
    body, _ = WebPage(tmp_path).asset("index.html", '/"><script>alert(1)</script>')
    assert "<script>" not in body and "&quot;&gt;&lt;script&gt;" in body


def test_script_and_style_have_their_types():
    page = WebPage(WEB)
    assert page.names() == ["app.css", "app.js", "index.html"]
    assert page.asset("app.js")[1]["Content-Type"] == "text/javascript; charset=utf-8"
    assert page.asset("app.css")[1]["Content-Type"] == "text/css; charset=utf-8"


@pytest.mark.parametrize("name", ["../app.py", "missing.js", "app.py", "web/app.js"])
def test_only_the_page_files_are_served(name):
    with pytest.raises(AssetNotFound):
        WebPage(WEB).asset(name)
