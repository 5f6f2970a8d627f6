"""The upload API's OpenAPI document as a stage serves it.

``functions/upload/chalicelib/openapi.json`` is written with the default stage's limits (so it
reads, and validates, on its own). A stage may allow other types, sizes or part sizes: the
document it serves carries its own, filled in here from its settings, so a client generated from
it refuses what that stage refuses and nothing else.
"""

from __future__ import annotations

import copy

from imagepipe.settings import Settings
from imagepipe.uploads import limits_of


def stage_document(template: dict, settings: Settings) -> dict:
    """A copy of ``template`` with the limits, types and expiry of ``settings``."""
    document = copy.deepcopy(template)
    limits = limits_of(settings)
    schemas = document["components"]["schemas"]
    request = schemas["CreateUploadRequest"]["properties"]
    request["content_type"]["enum"] = list(settings.allowed_types)
    request["size"]["maximum"] = settings.max_upload_bytes
    schemas["CreatedUpload"]["properties"]["expires_in"]["maximum"] = settings.presign_expires

    # The examples show this stage's values too (and still fit the schemas above).
    _example(document, "/limits", "get", "200").update(limits)
    create = document["paths"]["/uploads"]["post"]
    asked = create["requestBody"]["content"]["application/json"]["example"]
    if asked["content_type"] not in settings.allowed_types:
        asked["content_type"] = settings.allowed_types[0]
    asked["size"] = min(asked["size"], settings.max_upload_bytes)
    created = _example(document, "/uploads", "post", "201")
    created["expires_in"] = settings.presign_expires
    created["upload"]["headers"]["Content-Type"] = asked["content_type"]
    for part in _example(document, "/uploads/{upload_id}/parts", "post", "200")["uploaded"]:
        part["size"] = settings.multipart_part_bytes
    if settings.auth_on:  # the bearer token is no longer optional on this stage
        for item in document["paths"].values():
            for operation in item.values():
                if isinstance(operation, dict) and "security" in operation:
                    operation["security"] = [{"bearer": []}]
    return document


def _example(document: dict, path: str, method: str, status: str) -> dict:
    return document["paths"][path][method]["responses"][status]["content"]["application/json"][
        "example"]
