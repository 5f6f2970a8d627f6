"""Which callback URLs are allowed (at create and again at send time) and how they are signed."""

import hashlib
import hmac
import socket

import pytest

from imagepipe import callbacks
from imagepipe.callbacks import CallbackUrlError, check_url, resolve_target, signed_headers, verify

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


def test_a_name_is_refused_if_any_of_its_addresses_is_private():
    with pytest.raises(CallbackUrlError, match="10.0.0.7"):
        resolve_target("https://hooks.example.com/x", False, _resolver(PUBLIC_V4, "10.0.0.7"))


def test_send_time_resolution_pins_the_vetted_addresses():
    # The name was public when the upload was created; at send time it must be checked again.
    target = resolve_target("https://hooks.example.com:8443/x?y=1", False, _resolver(PUBLIC_V4))
    assert (target.host, target.port, target.path, target.addresses) == (
        "hooks.example.com", 8443, "/x?y=1", (PUBLIC_V4,))
    with pytest.raises(CallbackUrlError, match="127.0.0.1"):
        resolve_target("https://hooks.example.com/x", False, _resolver("127.0.0.1"))


def test_signature_is_hmac_sha256_over_timestamp_dot_body():
    body = b'{"status":"done"}'
    headers = signed_headers("s3cr3t", body, event_type="imagepipe.job.done",
                             delivery_id="abc", now=1_790_000_000)

    expected = hmac.new(b"s3cr3t", b"1790000000." + body, hashlib.sha256).hexdigest()
    assert headers[callbacks.SIGNATURE_HEADER] == f"sha256={expected}"
    assert headers[callbacks.TIMESTAMP_HEADER] == "1790000000"
    assert headers[callbacks.EVENT_HEADER] == "imagepipe.job.done"
    assert verify("s3cr3t", headers, body, now=1_790_000_100)
    assert not verify("s3cr3t", headers, body + b" ", now=1_790_000_100)
    assert not verify("other", headers, body, now=1_790_000_100)
    assert not verify("s3cr3t", headers, body, now=1_790_000_000 + 301)  # a replay
    assert not verify("s3cr3t", {}, body)
