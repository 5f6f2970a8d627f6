"""The change-set paths moto cannot produce, against botocore's Stubber."""

import boto3
import pytest
from botocore.stub import ANY, Stubber

from infra.deploy import stacks

WAIT = {"Delay": 0, "MaxAttempts": 2}
TEMPLATE = {"Resources": {"B": {"Type": "AWS::S3::Bucket"}}}


@pytest.fixture
def cfn():
    client = boto3.client("cloudformation", region_name="eu-west-1",
                          aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def stack(status, outputs=()):
    return {"Stacks": [{"StackName": "s", "StackStatus": status,
                        "CreationTime": "2026-11-28T00:00:00Z",
                        "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs]}]}


def change_set_request(kind):
    return {"StackName": "s", "ChangeSetName": ANY, "ChangeSetType": kind, "Parameters": [],
            "Capabilities": ["CAPABILITY_IAM"], "TemplateBody": ANY}


def test_a_change_set_that_fails_for_a_reason_is_an_error_with_it(cfn):
    client, stub = cfn
    stub.add_response("describe_stacks", stack("UPDATE_COMPLETE"))
    stub.add_response("create_change_set", {"Id": "c"}, change_set_request("UPDATE"))
    stub.add_response("describe_change_set", {
        "Status": "FAILED", "StatusReason": "Parameter 'VpcId' must be one of AllowedValues"})
    with pytest.raises(stacks.StackError, match="stack s: change set failed: Parameter 'VpcId'"):
        stacks.deploy_stack(client, "s", TEMPLATE, {}, waiter=WAIT)


def test_a_stack_whose_create_rolled_back_is_deleted_then_created(cfn):
    client, stub = cfn
    stub.add_response("describe_stacks", stack("ROLLBACK_COMPLETE"))
    stub.add_response("describe_stacks", stack("ROLLBACK_COMPLETE"))  # delete_stack looks first
    stub.add_response("delete_stack", {}, {"StackName": "s"})
    stub.add_response("describe_stacks", stack("DELETE_COMPLETE"))  # the waiter
    stub.add_response("create_change_set", {"Id": "c"}, change_set_request("CREATE"))
    stub.add_response("describe_change_set", {"Status": "CREATE_COMPLETE", "Changes": [{}]})
    stub.add_response("execute_change_set", {})
    stub.add_response("describe_stacks", stack("CREATE_COMPLETE"))  # the waiter
    stub.add_response("describe_stacks", stack("CREATE_COMPLETE", [("Url", "https://x")]))
    result = stacks.deploy_stack(client, "s", TEMPLATE, {}, waiter=WAIT)
    assert result.changed and result.outputs == {"Url": "https://x"}


def test_a_failed_update_names_the_resource_that_failed(cfn):
    client, stub = cfn
    stub.add_response("describe_stacks", stack("UPDATE_COMPLETE"))
    stub.add_response("create_change_set", {"Id": "c"}, change_set_request("UPDATE"))
    stub.add_response("describe_change_set", {"Status": "CREATE_COMPLETE", "Changes": [{}]})
    stub.add_response("execute_change_set", {})
    stub.add_response("describe_stacks", stack("UPDATE_ROLLBACK_COMPLETE"))  # the waiter fails
    stub.add_response("describe_stack_events", {"StackEvents": [{
        "StackId": "id", "EventId": "e", "StackName": "s", "Timestamp": "2026-11-28T00:00:00Z",
        "LogicalResourceId": "Broker", "ResourceStatus": "UPDATE_FAILED",
        "ResourceStatusReason": "Broker engine version 3.8 is not supported"}]})
    with pytest.raises(stacks.StackError, match="Broker: Broker engine version 3.8"):
        stacks.deploy_stack(client, "s", TEMPLATE, {}, waiter=WAIT)


def test_a_busy_stack_is_refused_before_any_change(cfn):
    client, stub = cfn
    stub.add_response("describe_stacks", stack("UPDATE_IN_PROGRESS"))
    with pytest.raises(stacks.StackError, match="busy"):
        stacks.deploy_stack(client, "s", TEMPLATE, {}, waiter=WAIT)


def test_parameter_values_are_cloudformation_text():
    assert stacks.parameter_list({"B": ["a", "b"], "A": 3, "C": True, "D": ""}) == [
        {"ParameterKey": "A", "ParameterValue": "3"},
        {"ParameterKey": "B", "ParameterValue": "a,b"},
        {"ParameterKey": "C", "ParameterValue": "true"},
        {"ParameterKey": "D", "ParameterValue": ""},
    ]


def test_a_template_too_big_to_send_inline_is_refused_before_any_change(cfn):
    client, stub = cfn
    stub.add_response("describe_stacks", stack("UPDATE_COMPLETE"))
    big = {"Resources": {f"B{i}": {"Type": "AWS::S3::Bucket"} for i in range(2000)}}
    with pytest.raises(stacks.StackError, match=r"stack s: template is \d+ bytes; CloudFormation "
                       r"takes at most 51200 inline"):
        stacks.deploy_stack(client, "s", big, {}, waiter=WAIT)
