"""Helpers for the upload API's function tests: requests through the test client, what the
browser would do with a presigned upload, and reading the work queue back."""

import json

import pika

from imagepipe import keys

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01" + b"\x00" * 200
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + b"\x00" * 200
WEBP = b"RIFF\x00\x01\x00\x00WEBPVP8 " + b"\x00" * 200
GIF = b"GIF89a" + b"\x00" * 200
BMP = b"BM" + b"\x00" * 200  # an image format the API does not take


def post_json(client, path, payload=None, raw=None, content_type="application/json"):
    body = raw if raw is not None else json.dumps(payload or {}).encode()
    return client.http.post(path, headers={"Content-Type": content_type}, body=body)


def create(client, **fields):
    payload = {"filename": "cat.jpg", "content_type": "image/jpeg", "size": len(JPEG), **fields}
    response = post_json(client, "/uploads", payload)
    assert response.status_code == 201, response.body
    return response.json_body["upload_id"]


def upload(s3_mock, upload_id, body):
    """What the browser does with the presigned upload (moto checks nothing of it)."""
    s3, bucket = s3_mock
    s3.put_object(Bucket=bucket, Key=keys.original_key(upload_id), Body=body)


def complete(client, upload_id):
    return client.http.post(f"/uploads/{upload_id}/complete")


def drain(settings):
    """Every message on the work queue, removed: [(properties, body)]."""
    connection = pika.BlockingConnection(pika.URLParameters(settings.amqp_url))
    try:
        channel = connection.channel()
        messages = []
        while True:
            method, properties, body = channel.basic_get(settings.resize_queue, auto_ack=True)
            if method is None:
                return messages
            messages.append((properties, body))
    finally:
        connection.close()


def assert_error(response, status, code):
    assert response.status_code == status, response.body
    assert response.headers["Content-Type"] == "application/json"
    assert set(response.json_body) == {"error"}
    assert response.json_body["error"]["code"] == code
    assert response.json_body["error"]["message"]
    return response.json_body["error"]


def objects(s3_mock, prefix):
    s3, bucket = s3_mock
    return [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
