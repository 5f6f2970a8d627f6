"""Code bundles into the artifacts bucket, by content hash, and templates pointed at them.

The key is the bundle's SHA-256, so an unchanged function uploads nothing and its stack sees no
change; old keys stay for CloudFormation to roll back to.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path

from imagepipe.errors import is_missing_object

FUNCTION_TYPES = ("AWS::Serverless::Function", "AWS::Lambda::Function")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload_bundle(s3, bucket: str, bundle: Path, prefix: str) -> str:
    """Upload ``bundle`` unless its hash is already there; returns its key."""
    key = f"{prefix}/{sha256(bundle)}.zip"
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return key
    except s3.exceptions.ClientError as exc:
        if not is_missing_object(exc):
            raise
    s3.upload_file(str(bundle), bucket, key)
    return key


def with_code_location(template: dict, template_dir: Path, s3, bucket: str, prefix: str) -> dict:
    """A copy of ``template`` whose functions' local code paths are S3 locations (uploaded)."""
    template = copy.deepcopy(template)
    for resource in template["Resources"].values():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            key = upload_bundle(s3, bucket, template_dir / props["CodeUri"], prefix)
            props["CodeUri"] = {"Bucket": bucket, "Key": key}
        elif resource["Type"] == "AWS::Lambda::Function" and isinstance(props.get("Code"), str):
            key = upload_bundle(s3, bucket, template_dir / props["Code"], prefix)
            props["Code"] = {"S3Bucket": bucket, "S3Key": key}
    return template
