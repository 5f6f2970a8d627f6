"""boto3 client factories. Clients are made on first use, never at import time."""

from __future__ import annotations

from imagepipe.settings import Settings


def s3_client(settings: Settings):
    import boto3
    from botocore.config import Config

    config = Config(
        # Presigned URLs must be SigV4 (SigV2 cannot sign Content-Length or checksums).
        signature_version="s3v4",
        # A local endpoint (moto) is addressed by path; AWS by virtual host.
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
        # Only add checksums where S3 requires them: presigned URLs stay plain for browsers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=5,
        read_timeout=30,
    )
    return boto3.client(
        "s3",
        region_name=settings.region,
        endpoint_url=settings.s3_endpoint_url,
        config=config,
    )


def lambda_client(settings: Settings):
    import boto3
    from botocore.config import Config

    # No botocore retries: the bridge retries through the queue, and a retry after a read
    # timeout would run a job twice while the first run may still be going. Each bridge worker
    # thread holds one connection during a job.
    config = Config(
        retries={"mode": "standard", "max_attempts": 1},
        read_timeout=900,
        max_pool_connections=max(10, settings.worker_count),
    )
    return boto3.client("lambda", region_name=settings.region, config=config)

