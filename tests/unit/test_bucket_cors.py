"""The upload bucket's CORS rule, one construction for the local and the cloud stack."""

import pytest

from imagepipe import bucket_cors
from imagepipe.errors import ConfigError


def test_the_rule_allows_uploads_from_the_stage_origins_and_exposes_etag():
    configuration = bucket_cors.s3_cors_configuration(["https://photos.example.com",
                                                "http://127.0.0.1:8000/"])
    (rule,) = configuration["CORSRules"]
    assert rule["AllowedOrigins"] == ["https://photos.example.com", "http://127.0.0.1:8000"]
    assert sorted(rule["AllowedMethods"]) == ["POST", "PUT"]
    assert set(rule["ExposeHeaders"]) == {"ETag", "Location"}
    assert rule["MaxAgeSeconds"] > 0


def test_no_origin_means_no_rule():
    assert bucket_cors.s3_cors_configuration([]) is None


def test_cloudformation_spelling_carries_the_same_rule_for_the_templates_origins():
    s3_rule = bucket_cors.s3_cors_configuration(["https://a.example"])["CORSRules"][0]
    origins = {"Ref": "AllowedOrigins"}
    (cfn_rule,) = bucket_cors.cloudformation_cors_configuration(origins)["CorsRules"]
    assert cfn_rule == {
        "Id": s3_rule["ID"],
        "AllowedOrigins": origins,
        "AllowedMethods": s3_rule["AllowedMethods"],
        "AllowedHeaders": s3_rule["AllowedHeaders"],
        "ExposedHeaders": ["ETag", "Location"],
        "MaxAge": s3_rule["MaxAgeSeconds"],
    }


@pytest.mark.parametrize("origin", ["*", "https://*.example.com", "ftp://example.com",
                                    "https://example.com/app", "example.com",
                                    "https://user:pw@example.com", ""])
def test_anything_but_a_plain_origin_is_a_config_error(origin):
    with pytest.raises(ConfigError, match="allowed_origins"):
        bucket_cors.s3_cors_configuration([origin])


def test_duplicates_are_dropped_in_order():
    assert bucket_cors.validated_origins(["https://b.example", "https://a.example",
                                   "https://b.example/"]) == ("https://b.example",
                                                              "https://a.example")


def test_normalised_origins_drop_the_trailing_slash_and_duplicates_unchecked():
    assert bucket_cors.normalised_origins(["https://b.example/", "https://b.example",
                                           "unset-origin"]) == ("https://b.example",
                                                                "unset-origin")
