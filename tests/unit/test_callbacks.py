"""Which callback URLs are allowed (at create and again at send time) and how they are signed."""

import base64
import hashlib
import hmac
import socket
from datetime import datetime, timezone

import pytest

from imagepipe import callbacks
from imagepipe.callbacks import CallbackUrlError, check_url, resolve_target, signed_headers
from standardwebhooks import Webhook, WebhookVerificationError

PUBLIC_V4 = "93.184.216.34"
PUBLIC_V6 = "2606:2800:220:1:248:1893:25c8:1946"


def _resolver(*addresses):
    def resolve(host, port, type=0):
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port)) for a in addresses]
    return resolve


@pytest.mark.parametrize("url", [
    f"https://{PUBLIC_V4}/hooks/imagepipe",
    f"https://[{PUBLIC_V6}]:8443/hook?x=1",
    f"HTTPS://{PUBLIC_V4}",
])
def test_public_https_targets_are_allowed(url):
    assert check_url(url, allow_private=False) == url


@pytest.mark.parametrize("url, reason", [
    (f"http://{PUBLIC_V4}/hook", "https"),
    (f"ftp://{PUBLIC_V4}/hook", "https"),
    ("https://127.0.0.1/hook", "public"),
    ("https://10.1.2.3/hook", "public"),
    ("https://172.16.0.1/hook", "public"),
    ("https://192.168.1.1/hook", "public"),
    ("https://169.254.169.254/latest/meta-data", "public"),  # cloud metadata
    ("https://100.64.0.1/hook", "public"),  # carrier-grade NAT
    ("https://0.0.0.0/hook", "public"),
    ("https://240.0.0.1/hook", "public"),  # reserved
    ("https://224.0.0.1/hook", "public"),  # multicast
    ("https://[::1]/hook", "public"),
    ("https://[fe80::1]/hook", "public"),
    ("https://[fd00::1]/hook", "public"),
    ("https://[::ffff:127.0.0.1]/hook", "public"),
    ("https://[64:ff9b::7f00:1]/hook", "public"),  # NAT64 of 127.0.0.1
    ("https://[64:ff9b::a9fe:a9fe]/hook", "public"),  # NAT64 of the metadata address
    ("https://[64:ff9b:1::a00:1]/hook", "public"),  # local-use NAT64 of 10.0.0.1
    ("https://[::7f00:1]/hook", "public"),  # IPv4-compatible 127.0.0.1
    ("https://[::a00:1]/hook", "public"),  # IPv4-compatible 10.0.0.1
    ("https://[2002:7f00:1::1]/hook", "public"),  # 6to4 of 127.0.0.1
    ("https://[2002:a9fe:a9fe::1]/hook", "public"),  # 6to4 of 169.254.169.254
    ("https://[2001:0:4136:e378:8000:63bf:f5ff:fffe]/hook", "public"),  # Teredo, client 10.0.0.1
    ("https://[100::1]/hook", "public"),  # discard-only
    ("https://[2001:db8::1]/hook", "public"),  # documentation
    ("https://198.18.0.1/hook", "public"),  # benchmarking
    ("https://localhost/hook", "public"),
    ("https://2130706433/hook", "public"),  # 127.0.0.1 as a decimal number
    ("https://no-such-host.invalid/hook", "resolve"),
    (f"https://user:pw@{PUBLIC_V4}/hook", "credentials"),
    ("https:///hook", "no host"),
    ("https://\u0084/hook", "valid host name"),
    ("https://a_b.example/hook", "valid host name"),
    ("https://-a.example/hook", "valid host name"),
    (f"https://{PUBLIC_V4}:99999/hook", "valid URL"),
    (f"https://{PUBLIC_V4}/a b", "spaces"),
    ("https://" + "a" * 2050 + ".example", "characters"),
    ("", "characters"),
    (42, "characters"),
])
def test_other_targets_are_refused_with_a_reason(url, reason):
    with pytest.raises(CallbackUrlError, match=reason):
        check_url(url, allow_private=False)


def test_a_stage_may_allow_private_targets_and_plain_http():
    assert check_url("http://127.0.0.1:8123/hook", allow_private=True)
    assert check_url("http://receiver.internal:8123/hook", allow_private=True)
    with pytest.raises(CallbackUrlError, match="valid host name"):
        check_url("https://\u0084/hook", allow_private=True)
    with pytest.raises(CallbackUrlError, match="http"):
        check_url("ftp://127.0.0.1/hook", allow_private=True)


def test_nat64_and_6to4_forms_of_public_addresses_stay_allowed():
    for address in ("64:ff9b::5db8:d822", "2002:5db8:d822::1"):  # both embed 93.184.216.34
        assert callbacks.is_public(address), address


def test_a_name_is_refused_if_any_of_its_addresses_is_private():
    with pytest.raises(CallbackUrlError, match="not a public address") as refused:
        resolve_target("https://hooks.example.com/x", False, _resolver(PUBLIC_V4, "10.0.0.7"))
    assert "10.0.0.7" not in str(refused.value)  # no map of private networks for the caller


def test_send_time_resolution_pins_the_vetted_addresses():
    # The name was public when the upload was created; at send time it must be checked again.
    target = resolve_target("https://hooks.example.com:8443/x?y=1", False, _resolver(PUBLIC_V4))
    assert (target.host, target.port, target.path, target.addresses) == (
        "hooks.example.com", 8443, "/x?y=1", (PUBLIC_V4,))
    with pytest.raises(CallbackUrlError, match="not a public address"):
        resolve_target("https://hooks.example.com/x", False, _resolver("127.0.0.1"))


SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
NEXT_SECRET = "whsec_" + base64.b64encode(b"n" * 32).decode()


def test_signature_follows_standard_webhooks():
    body = b'{"status":"done"}'
    headers = signed_headers(SECRET, body, message_id="abc.done", now=1_790_000_000)

    expected = hmac.new(b"k" * 32, b"abc.done.1790000000." + body, hashlib.sha256).digest()
    assert headers["webhook-signature"] == "v1," + base64.b64encode(expected).decode()
    assert headers["webhook-id"] == "abc.done"
    assert headers["webhook-timestamp"] == "1790000000"


def test_the_reference_library_verifies_what_we_sign_and_refuses_tampering():
    body = b'{"status":"done","upload_id":"x"}'
    headers = signed_headers(SECRET, body, message_id="abc.done")
    assert Webhook(SECRET).verify(body, headers) == {"status": "done", "upload_id": "x"}
    with pytest.raises(WebhookVerificationError):
        Webhook(SECRET).verify(body + b" ", headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(NEXT_SECRET).verify(body, headers)
    old = signed_headers(SECRET, body, message_id="abc.done",
                         now=datetime.now(timezone.utc).timestamp() - 301)
    with pytest.raises(WebhookVerificationError):  # a replay
        Webhook(SECRET).verify(body, old)


def test_every_stage_secret_signs_so_receivers_can_rotate():
    body = b'{"status":"done"}'
    headers = signed_headers(f"{SECRET} {NEXT_SECRET}", body, message_id="abc.done")
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, NEXT_SECRET):
        Webhook(secret).verify(body, headers)


@pytest.mark.parametrize("secrets, reason", [
    ("s3cr3t", "whsec_"),
    ("whsec_not base64!", "base64"),
    ("whsec_" + base64.b64encode(b"short").decode(), "24..64 bytes"),
    (f"{SECRET} whsec_%%%", "secret 2"),
])
def test_malformed_secrets_are_refused_without_echoing_them(secrets, reason):
    with pytest.raises(ValueError, match=reason) as refused:
        callbacks.signing_keys(secrets)
    assert "s3cr3t" not in str(refused.value) and "%%%" not in str(refused.value)


def test_new_secret_is_a_valid_one():
    assert len(callbacks.signing_keys(callbacks.new_secret())) == 1
