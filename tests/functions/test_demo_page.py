"""The upload function serves the demo page beside the API (same origin: only S3 is cross-origin)."""

import pytest

from imagepipe.settings import Settings

from .conftest import load_app_module


@pytest.fixture
def api(chalice_client):
    return chalice_client(load_app_module("upload"), Settings(bucket="unused"))


def test_the_page_is_served_at_the_root(api):
    response = api.http.get("/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.body.decode()
    assert '<base href="/">' in page
    assert 'src="app.js"' in page and 'href="app.css"' in page
    assert 'type="file"' in page and "multiple" in page


@pytest.mark.parametrize("path, content_type, marker", [
    ("/app.js", "text/javascript; charset=utf-8", "POST"),
    ("/app.css", "text/css; charset=utf-8", ".uploads"),
])
def test_the_page_assets_have_their_content_types(api, path, content_type, marker):
    response = api.http.get(path)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == content_type
    assert response.headers["Cache-Control"] == "no-cache"
    assert marker in response.body.decode()
