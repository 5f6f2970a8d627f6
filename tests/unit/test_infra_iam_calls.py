"""Every AWS call a component's code makes is allowed by its role in infra/stack.yaml.

The calls are found by reading the code (AST), not by listing them by hand: starting from each
component's entry point, the imagepipe/bridge modules it imports (at any depth, lazy imports
too) are scanned for ``<receiver>.<operation>(...)`` where the receiver names the service's
client (``s3``/``self._s3``, ``secrets_client``, the invoker's ``client``) and the operation is
one of botocore's for that service, plus presigned URLs and POSTs (they act with the signer's
permissions). botocore's service model turns each method into its operation name, which maps to
an IAM action; the role's policy is then evaluated for that action on the resource it touches.
A new S3 call in the core without a permission fails here, not in the cloud as AccessDenied.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import boto3
import pytest

from infra.deploy import templates
from tests.unit.test_infra_template import (ACCOUNT, BUCKET, RESIZE_ARN, VALUES, allows, listed,
                                           resolve, statements)

ROOT = Path(__file__).resolve().parents[2]
# component -> (entry point, role in infra/stack.yaml)
COMPONENTS = {
    "upload": ("functions/upload/app.py", "UploadFunctionRole"),
    "resize": ("functions/resize/app.py", "ResizeFunctionRole"),
    "bridge": ("bridge/__main__.py", "BridgeTaskRole"),
}
# Modules a component imports but never runs in the cloud: the bridge's local invoker resizes
# in-process (make dev); in the cloud it invokes the resize function, whose role covers that.
NOT_IN_THE_CLOUD = {"bridge": {"imagepipe.resize"}}
# Calls in a shared module that a component never makes (the scan works module by module):
# settings.load reads a secret only for the *_ARN variables its environment names, and the
# resize function runs Settings.from_env. Keep this short: each entry is trusted.
NEVER_MADE = {"resize": {("secretsmanager", "GetSecretValue")}}
SCANNED_PACKAGES = ("imagepipe", "bridge")
# service -> a word the receiver's name contains (s3, self._s3, secrets_client, self.client)
RECEIVER_HINTS = {"s3": "s3", "secretsmanager": "secrets", "lambda": "client"}
# botocore operation -> IAM action, where they differ from "<service prefix>:<operation>"
# (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazons3.html).
IAM_ACTIONS = {
    ("s3", "HeadObject"): "s3:GetObject",
    ("s3", "ListObjectsV2"): "s3:ListBucket",
    ("s3", "ListObjects"): "s3:ListBucket",
    ("s3", "ListParts"): "s3:ListMultipartUploadParts",
    ("s3", "CreateMultipartUpload"): "s3:PutObject",
    ("s3", "UploadPart"): "s3:PutObject",
    ("s3", "CompleteMultipartUpload"): "s3:PutObject",
    ("s3", "CopyObject"): "s3:PutObject",
    ("lambda", "Invoke"): "lambda:InvokeFunction",
}
BUCKET_LEVEL = {"s3:ListBucket", "s3:ListBucketMultipartUploads"}
SAMPLE_OBJECT = f"arn:aws:s3:::{BUCKET}/originals/0123456789abcdef0123456789abcdef"
# Which key an object call touches is not known statically: an object action must be allowed
# somewhere in the photo bucket (a "<bucket>/<prefix>*" pattern matches this name), and the
# prefix-by-prefix tests in test_infra_template say where.
ANY_OBJECT = f"arn:aws:s3:::{BUCKET}/*"
RESOURCES = {
    "s3": lambda action: f"arn:aws:s3:::{BUCKET}" if action in BUCKET_LEVEL else ANY_OBJECT,
    "secretsmanager": lambda action: VALUES["BrokerSecret"],
    "lambda": lambda action: RESIZE_ARN,
}


def _clients() -> dict:
    return {service: boto3.client(service, region_name="eu-west-1", aws_access_key_id="x",
                                  aws_secret_access_key="x")
            for service in RECEIVER_HINTS}


CLIENTS = _clients()


def operation(service: str, method: str) -> str | None:
    return CLIENTS[service].meta.method_to_api_mapping.get(method)


def iam_action(service: str, op: str) -> str:
    prefix = CLIENTS[service].meta.service_model.signing_name
    return IAM_ACTIONS.get((service, op), f"{prefix}:{op}")


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def imported_modules(tree: ast.AST, package: str | None) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level and package:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {name for name in found if name.split(".")[0] in SCANNED_PACKAGES and module_path(name)}


def closure(entry: str, skipped=frozenset()) -> list[Path]:
    """The entry file and every imagepipe/bridge module it imports, transitively."""
    seen: dict[str, Path] = dict.fromkeys(skipped)
    todo = [(ROOT / entry, None)]
    files = []
    while todo:
        path, package = todo.pop()
        if path in files:
            continue
        files.append(path)
        for name in imported_modules(ast.parse(path.read_text()), package):
            if name not in seen:
                seen[name] = module_path(name)
                pkg = name if seen[name].name == "__init__.py" else name.rpartition(".")[0]
                todo.append((seen[name], pkg))
    return files


def receiver_name(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):  # runtime.s3().get_object(...) style
        return receiver_name(node.func)
    return ""


def aws_calls(paths) -> set[tuple[str, str]]:
    """(service, botocore operation) of every call in ``paths``."""
    calls = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            method, receiver = node.func.attr, receiver_name(node.func.value).lower()
            if method == "generate_presigned_post" and "s3" in receiver:
                calls.add(("s3", "PutObject"))
                continue
            if method == "generate_presigned_url" and "s3" in receiver:
                first = node.args[0] if node.args else next(
                    (k.value for k in node.keywords if k.arg == "ClientMethod"), None)
                assert isinstance(first, ast.Constant), f"{path}: presigned URL of a computed method"
                calls.add(("s3", operation("s3", first.value)))
                continue
            for service, hint in RECEIVER_HINTS.items():
                op = operation(service, method)
                if op and hint in receiver:
                    calls.add((service, op))
    return calls


def allows_somewhere(role, action, resource) -> bool:
    """``allows``, where a resource ending in ``/*`` stands for any object under it."""
    if not resource.endswith("/*"):
        return allows(role, action, resource)
    base = resource[:-1]
    return any(
        any(fnmatch.fnmatchcase(action, a) for a in listed(statement["Action"]))
        and any(resolve(r).startswith(base) for r in listed(statement["Resource"]))
        for statement in statements(role))


@pytest.fixture(scope="module")
def stack():
    return templates.load(ROOT / "infra" / "stack.yaml")


@pytest.fixture(scope="module")
def calls():
    return {name: aws_calls(closure(entry, NOT_IN_THE_CLOUD.get(name, set())))
            for name, (entry, _role) in COMPONENTS.items()}


def test_the_scan_finds_the_calls_each_component_is_known_to_make(calls):
    # The scan itself must see what we know is there, or the policy check proves nothing.
    assert {("s3", "ListParts"), ("s3", "AbortMultipartUpload"), ("s3", "CreateMultipartUpload"),
            ("s3", "UploadPart"), ("s3", "CompleteMultipartUpload"), ("s3", "HeadObject"),
            ("s3", "GetObject"), ("s3", "PutObject"), ("s3", "ListObjectsV2"),
            ("s3", "DeleteObject"), ("secretsmanager", "GetSecretValue")} <= calls["upload"]
    assert {("s3", "GetObject"), ("s3", "PutObject")} <= calls["resize"]
    assert ("lambda", "Invoke") in calls["bridge"]
    assert not any(service == "lambda" for service, _ in calls["upload"] | calls["resize"])


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_the_role_allows_every_aws_call_its_code_makes(stack, calls, component):
    role = stack["Resources"][COMPONENTS[component][1]]
    refused = []
    for service, op in sorted(calls[component] - NEVER_MADE.get(component, set())):
        action = iam_action(service, op)
        resource = RESOURCES[service](action)
        if not allows_somewhere(role, action, resource):
            refused.append(f"{op} -> {action} on {resource}")
    assert not refused, f"{component}: its role refuses {refused}"


def test_multipart_parts_may_be_listed_and_aborted_for_originals_only(stack):
    role = stack["Resources"]["UploadFunctionRole"]
    for action in ("s3:ListMultipartUploadParts", "s3:AbortMultipartUpload"):
        assert allows(role, action, SAMPLE_OBJECT)
        assert not allows(role, action, f"arn:aws:s3:::{BUCKET}/variants/x/md.jpg")
        assert not allows(role, action, f"arn:aws:s3:::other-{BUCKET}/originals/x")


def test_the_mapping_names_real_iam_actions():
    # The operations whose action differs from their name are real operations of botocore's
    # model, so a typo in IAM_ACTIONS cannot hide a call.
    for service, op in IAM_ACTIONS:
        assert op in CLIENTS[service].meta.service_model.operation_names, (service, op)
    assert iam_action("secretsmanager", "GetSecretValue") == "secretsmanager:GetSecretValue"
    assert ACCOUNT in RESIZE_ARN
