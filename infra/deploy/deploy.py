"""``make deploy`` / ``make destroy``: the orchestration, over injected AWS clients.

Deploy, in order (each step is idempotent, so a second run changes nothing):

1. the infra stack, keeping the bridge image and the ObjectCreated wiring it had (on a first
   deploy: no bridge task yet, no notification — neither can exist before steps 2–3);
2. the bridge image, built and pushed to the stack's repository unless ECR has its tag;
3. each function's stack (``chalice package`` output, code uploaded by content hash), with the
   infra stack's outputs as parameters;
4. the infra stack again, with the new bridge image and the ObjectCreated notification on;
5. a rolling restart of the bridge service, waiting until it is stable.

Destroy removes the function stacks, then the infra stack. The photo bucket is kept (its
``DeletionPolicy`` is ``Retain``) and named in the report.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from imagepipe import bucket_cors
from infra.deploy import artifacts, bridge_image, stacks, templates
from infra.deploy.package import Package
from imagepipe.errors import ConfigError
from imagepipe.settings import Settings

LOGGER = logging.getLogger(__name__)

INFRA_CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_NAMED_IAM")
FUNCTION_CAPABILITIES = ("CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND")
# Infra parameters that deploy computes; a stage's deploy.parameters may not set them.
COMPUTED_PARAMETERS = {
    "Stage", "BucketName", "AllowedOrigins", "ResizeQueue", "UploadApiFunctionName",
    "ObjectCreatedFunctionName", "ResizeFunctionName", "BridgeImage",
    "EnableObjectCreatedNotification", "Delivery", "AuthSecretArn",
}
# A function stack's parameter for the API's public URL (where stable variant URLs point): the
# stage's public_api_url, else the upload API's own endpoint, so stacks that take it go last.
PUBLIC_API_URL_PARAMETER = "PublicApiUrl"
BRIDGE_SERVICE_WAITER = {"Delay": 15, "MaxAttempts": 80}


class DeployError(Exception):
    pass


@dataclass
class Clients:
    cloudformation: object
    s3: object
    ecr: object
    ecs: object

    @classmethod
    def for_region(cls, region: str) -> "Clients":
        import boto3

        session = boto3.session.Session(region_name=region)
        return cls(*(session.client(name) for name in ("cloudformation", "s3", "ecr", "ecs")))


@dataclass
class Deployment:
    api_url: str
    bucket: str
    queue: str
    broker: str
    bridge_image: str
    changed: list = field(default_factory=list)  # stacks that changed

    def summary(self) -> str:
        return "\n".join([
            f"API      {self.api_url}",
            f"bucket   {self.bucket}",
            f"queue    {self.queue} on {self.broker}",
            f"bridge   {self.bridge_image}",
            "changed  " + (", ".join(self.changed) if self.changed else "nothing (already deployed)"),
        ])


def infra_parameters(package: Package, settings: Settings, stage_parameters: dict,
                     infra_template: dict | None = None) -> dict:
    """Every infra parameter but the two late ones (bridge image, notification).

    ``infra_template`` is the package's infra template when the caller has already read it.
    """
    if infra_template is None:
        infra_template = templates.load(package.infra_template)
    declared = infra_template.get("Parameters", {})
    unknown = set(stage_parameters) - set(declared)
    if unknown:
        raise ConfigError(f"chalicefile.stages.{settings.stage}.deploy.parameters: "
                          f"not parameters of the infra stack: {', '.join(sorted(unknown))}")
    computed = set(stage_parameters) & COMPUTED_PARAMETERS
    if computed:
        raise ConfigError(f"chalicefile.stages.{settings.stage}.deploy.parameters: "
                          f"set by deploy itself: {', '.join(sorted(computed))}")
    return {
        **stage_parameters,
        "Stage": settings.stage,
        "BucketName": settings.bucket,
        "AllowedOrigins": list(bucket_cors.validated_origins(settings.allowed_origins)),
        "ResizeQueue": settings.resize_queue,
        "Delivery": settings.delivery,
        # The stage's auth.secret_arn: the stack lets the upload function read that secret.
        "AuthSecretArn": settings.auth_secret_arn or "",
        **package.names.function_parameters(),
    }


def deploy(package: Package, settings: Settings, stage_parameters: dict, clients: Clients,
           root: Path, run=bridge_image.run_command, waiter=None,
           service_waiter=None) -> Deployment:
    names = package.names
    cfn = clients.cloudformation
    infra_template = templates.load(package.infra_template)
    base = infra_parameters(package, settings, stage_parameters, infra_template)
    changed = []

    previous = stacks.parameters_of(stacks.describe(cfn, names.infra_stack))
    LOGGER.info("1/5 infra stack %s", names.infra_stack)
    infra = stacks.deploy_stack(cfn, names.infra_stack, infra_template, {
        **base,
        "BridgeImage": previous.get("BridgeImage", ""),
        "EnableObjectCreatedNotification": previous.get("EnableObjectCreatedNotification", "false"),
    }, capabilities=INFRA_CAPABILITIES, waiter=waiter)
    changed += [infra.name] if infra.changed else []
    outputs = infra.outputs

    LOGGER.info("2/5 bridge image")
    try:
        image = bridge_image.publish(clients.ecr, root, outputs["BridgeRepositoryUri"], run)
    except bridge_image.ImageError as exc:
        raise DeployError(str(exc)) from None

    values = {**outputs, **names.function_parameters()}
    function_outputs = {}
    loaded = {function: templates.load(path)
              for function, path in package.function_templates.items()}
    ordered = sorted(loaded, key=lambda f: PUBLIC_API_URL_PARAMETER in
                     loaded[f].get("Parameters", {}))
    for function in ordered:
        template_path = package.function_templates[function]
        stack_name = names.function_stack(function)
        LOGGER.info("3/5 function stack %s", stack_name)
        template = artifacts.with_code_location(
            loaded[function], template_path.parent, clients.s3,
            outputs["ArtifactsBucketName"], f"functions/{function}")
        public_api_url = settings.public_api_url or function_outputs.get("EndpointURL")
        if public_api_url:
            values[PUBLIC_API_URL_PARAMETER] = public_api_url
        wanted = template.get("Parameters", {})
        # A parameter with a default may have no value: an optional secret's ARN is an infra
        # output only when the stage sets one.
        missing = {k for k in wanted if k not in values and "Default" not in wanted[k]}
        if missing:
            raise DeployError(f"{stack_name}: no value for parameter(s) {', '.join(sorted(missing))}")
        result = stacks.deploy_stack(cfn, stack_name, template,
                                     {k: values[k] for k in wanted if k in values},
                                     capabilities=FUNCTION_CAPABILITIES, waiter=waiter)
        changed += [result.name] if result.changed else []
        function_outputs.update(result.outputs)

    LOGGER.info("4/5 infra stack %s: bridge image and ObjectCreated wiring", names.infra_stack)
    infra = stacks.deploy_stack(cfn, names.infra_stack, infra_template, {
        **base, "BridgeImage": image, "EnableObjectCreatedNotification": "true",
    }, capabilities=INFRA_CAPABILITIES, waiter=waiter)
    if infra.changed and infra.name not in changed:
        changed.append(infra.name)
    outputs = infra.outputs

    LOGGER.info("5/5 rolling the bridge service")
    roll_bridge(clients.ecs, outputs["ClusterName"], outputs["BridgeServiceName"],
                service_waiter or BRIDGE_SERVICE_WAITER)
    return Deployment(
        api_url=function_outputs.get("EndpointURL", ""),
        bucket=outputs["BucketName"],
        queue=outputs.get("ResizeQueue", settings.resize_queue),
        broker=outputs.get("AmqpEndpoint", ""),
        bridge_image=image,
        changed=changed,
    )


def roll_bridge(ecs, cluster: str, service: str, waiter: dict) -> None:
    """Replace the bridge's tasks one by one (new ones start before old ones stop)."""
    ecs.update_service(cluster=cluster, service=service, forceNewDeployment=True)
    try:
        ecs.get_waiter("services_stable").wait(cluster=cluster, services=[service],
                                               WaiterConfig=waiter)
    except Exception as exc:
        raise DeployError(f"bridge service {service} did not become stable: {exc}") from None


def destroy(package_names, functions, clients: Clients, waiter=None) -> list[str]:
    """Delete each function's stack (``functions``: the manifest's function names), then the
    infra stack; returns report lines."""
    cfn = clients.cloudformation
    report = []
    infra = stacks.describe(cfn, package_names.infra_stack)
    outputs = stacks.outputs_of(infra)
    for function in functions:  # functions first: they use the infra stack's resources
        stack_name = package_names.function_stack(function)
        if stacks.delete_stack(cfn, stack_name, waiter=waiter):
            report.append(f"deleted  {stack_name}")
    if infra is not None:
        # CloudFormation deletes only empty buckets and repositories: bundles and bridge
        # images are ours to remove (the photo bucket is not: it is kept).
        if outputs.get("ArtifactsBucketName"):
            empty_bucket(clients.s3, outputs["ArtifactsBucketName"])
        if outputs.get("BridgeRepositoryUri"):
            empty_repository(clients.ecr, outputs["BridgeRepositoryUri"].split("/", 1)[1])
        stacks.delete_stack(cfn, package_names.infra_stack, waiter=waiter)
        report.append(f"deleted  {package_names.infra_stack}")
        if outputs.get("BucketName"):
            report.append(f"kept     s3://{outputs['BucketName']} (the photos; delete it yourself "
                          "if you mean to)")
    if not report:
        report.append("nothing to delete")
    return report


def empty_repository(ecr, repository: str) -> None:
    try:
        for page in ecr.get_paginator("list_images").paginate(repositoryName=repository):
            if page.get("imageIds"):
                ecr.batch_delete_image(repositoryName=repository, imageIds=page["imageIds"])
    except ecr.exceptions.RepositoryNotFoundException:
        return


def empty_bucket(s3, bucket: str) -> None:
    paginator = s3.get_paginator("list_object_versions")
    try:
        for page in paginator.paginate(Bucket=bucket):
            doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                      for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if doomed:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed, "Quiet": True})
    except s3.exceptions.NoSuchBucket:
        return
