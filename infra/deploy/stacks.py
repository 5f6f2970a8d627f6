"""Create or update a CloudFormation stack through a change set, wait, and read its outputs.

A change set that finds nothing to change is deleted and reported as unchanged, so a second
deploy changes nothing. A stack whose first create failed (``ROLLBACK_COMPLETE``) can only be
deleted: it is, then created again. The client is injected (boto3 or moto).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

LOGGER = logging.getLogger(__name__)

# CloudFormation's limit for an inline template body.
MAX_TEMPLATE_BODY = 51_200
DEFAULT_WAITER = {"Delay": 5, "MaxAttempts": 720}
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
_RECREATE = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "DELETE_FAILED"}


class StackError(Exception):
    """A stack could not be deployed or deleted; the message says which and why."""


@dataclass
class StackResult:
    name: str
    changed: bool
    outputs: dict = field(default_factory=dict)


def describe(cfn, name: str) -> dict | None:
    """The stack's description, or None when there is no such (live) stack."""
    try:
        stacks = cfn.describe_stacks(StackName=name)["Stacks"]
    except cfn.exceptions.ClientError as exc:
        if "does not exist" in str(exc):
            return None
        raise
    if not stacks or stacks[0]["StackStatus"] == "DELETE_COMPLETE":
        return None
    return stacks[0]


def outputs_of(stack: dict | None) -> dict:
    return {o["OutputKey"]: o["OutputValue"] for o in (stack or {}).get("Outputs", [])}


def parameters_of(stack: dict | None) -> dict:
    return {p["ParameterKey"]: p.get("ParameterValue", "")
            for p in (stack or {}).get("Parameters", [])}


def parameter_list(values: dict) -> list[dict]:
    """CloudFormation's parameter list; lists become comma-separated, numbers text."""
    def text(value) -> str:
        if isinstance(value, (list, tuple)):
            return ",".join(str(v) for v in value)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    return [{"ParameterKey": k, "ParameterValue": text(v)} for k, v in sorted(values.items())]


def deploy_stack(cfn, name: str, template: dict, parameters: dict, *,
                 capabilities=("CAPABILITY_IAM",), waiter=None) -> StackResult:
    """Bring stack ``name`` to ``template`` with ``parameters``; returns whether it changed."""
    waiter = waiter or DEFAULT_WAITER
    stack = describe(cfn, name)
    if stack and stack["StackStatus"] in _RECREATE:
        LOGGER.warning("stack %s is %s: deleting it before creating it again",
                       name, stack["StackStatus"])
        delete_stack(cfn, name, waiter=waiter)
        stack = None
    if stack and stack["StackStatus"].endswith("_IN_PROGRESS"):
        raise StackError(f"stack {name} is busy ({stack['StackStatus']}); run again when it is done")
    kind = "UPDATE" if stack else "CREATE"
    change_set = f"imagepipe-{time.strftime('%Y%m%d%H%M%S')}-{int(time.time() * 1000) % 1000:03d}"
    request = {
        "StackName": name,
        "ChangeSetName": change_set,
        "ChangeSetType": kind,
        "Parameters": parameter_list(parameters),
        "Capabilities": list(capabilities),
    }
    body = json.dumps(template, separators=(",", ":"), sort_keys=True)
    if len(body) > MAX_TEMPLATE_BODY:
        raise StackError(f"stack {name}: template is {len(body)} bytes; CloudFormation takes "
                         f"at most {MAX_TEMPLATE_BODY} inline")
    request["TemplateBody"] = body
    try:
        cfn.create_change_set(**request)
    except cfn.exceptions.ClientError as exc:
        # Some CloudFormation endpoints refuse an empty update up front instead of failing it.
        if not any(s in str(exc) for s in _NO_CHANGES):
            raise StackError(f"stack {name}: {exc}") from None
        LOGGER.info("stack %s: no changes", name)
        return StackResult(name, False, outputs_of(stack))
    described = _wait_for_change_set(cfn, name, change_set, waiter)
    if described["Status"] == "FAILED":
        reason = described.get("StatusReason", "")
        if not any(s in reason for s in _NO_CHANGES):
            raise StackError(f"stack {name}: change set failed: {reason}")
        cfn.delete_change_set(StackName=name, ChangeSetName=change_set)
        LOGGER.info("stack %s: no changes", name)
        current = describe(cfn, name)
        return StackResult(name, False, outputs_of(current))
    LOGGER.info("stack %s: %s with %d change(s)", name, kind.lower(), len(described["Changes"]))
    cfn.execute_change_set(StackName=name, ChangeSetName=change_set)
    done = "stack_create_complete" if kind == "CREATE" else "stack_update_complete"
    try:
        cfn.get_waiter(done).wait(StackName=name, WaiterConfig=waiter)
    except Exception as exc:
        raise StackError(f"stack {name}: {kind.lower()} failed: {_failure(cfn, name, exc)}") from None
    current = describe(cfn, name)
    return StackResult(name, True, outputs_of(current))


def delete_stack(cfn, name: str, *, waiter=None) -> bool:
    """Delete stack ``name`` and wait; False when there was none."""
    if describe(cfn, name) is None:
        return False
    cfn.delete_stack(StackName=name)
    try:
        cfn.get_waiter("stack_delete_complete").wait(StackName=name,
                                                     WaiterConfig=waiter or DEFAULT_WAITER)
    except Exception as exc:
        raise StackError(f"stack {name}: delete failed: {_failure(cfn, name, exc)}") from None
    return True


def _wait_for_change_set(cfn, name, change_set, waiter) -> dict:
    # Not botocore's change_set_create_complete waiter: it raises on the "no changes" FAILED.
    for _ in range(waiter["MaxAttempts"]):
        described = cfn.describe_change_set(StackName=name, ChangeSetName=change_set)
        if described["Status"] in ("CREATE_COMPLETE", "FAILED"):
            return described
        time.sleep(waiter["Delay"])
    raise StackError(f"stack {name}: change set {change_set} did not finish")


def _failure(cfn, name, exc) -> str:
    """The first failed resource's reason, which says more than the waiter's error."""
    try:
        events = cfn.describe_stack_events(StackName=name)["StackEvents"]
    except Exception:
        return str(exc)
    for event in events:
        if event.get("ResourceStatus", "").endswith("_FAILED") and event.get("ResourceStatusReason"):
            return f"{event['LogicalResourceId']}: {event['ResourceStatusReason']}"
    return str(exc)
