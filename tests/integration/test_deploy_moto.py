"""``make deploy`` / ``make destroy`` orchestration against moto, with botocore's Stubber where
moto cannot follow.

moto creates the infra stack's bucket, roles, ECR repository and ECS cluster (it skips the
Amazon MQ broker and the autoscaling resources) and the resize function's Lambda. Two gaps are
filled, both named where they are filled:

- CloudFormation expands ``Transform: AWS::Serverless-2016-10-31`` server-side; moto does not, so
  ``MotoCloudFormation`` expands it with AWS's own SAM translator before moto sees it.
- moto's CloudFormation skips ``AWS::SecretsManager::Secret``; ``MotoCloudFormation`` creates
  each one through moto's Secrets Manager API and puts its ARN where the template refers to it.
- moto 5.2.5 does not refresh a stack's outputs and parameters after a change set runs; the
  ``moto_change_sets`` fixture makes it do what CloudFormation does.

moto's API Gateway ignores a REST API's OpenAPI body, so the upload stack (the API) goes to a
Stubber with CloudFormation's answers; ECS's rolling update too.
"""

import json
import os

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from imagepipe_tools import chalicefile
from infra.deploy import deploy, stacks, templates
from tests.integration.packaged import ROOT, STAGE, STAGE_ENV, package_once

REGION = STAGE_ENV["AWS_REGION"]
ACCOUNT = "123456789012"
WAIT = {"Delay": 0, "MaxAttempts": 3}
STAGE_PARAMETERS = {"VpcId": "vpc-0a1b2c3d", "SubnetIds": ["subnet-0a1b2c3d", "subnet-4e5f6a7b"],
                    "RouteTableIds": ["rtb-0a1b2c3d"], "BridgeMinCount": 1, "BridgeMaxCount": 3}
API_URL = "https://abc123.execute-api.eu-west-1.amazonaws.com/api/"
# moto names each resource type it skips (the broker, autoscaling, alarms); the docstring says which.
pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")


@pytest.fixture
def moto_change_sets(monkeypatch):
    from moto.cloudformation import models

    apply = models.ChangeSet.apply

    def apply_and_refresh(change_set):
        apply(change_set)
        stack = change_set.stack
        stack.parameters = change_set.parameters
        stack.template = change_set.template
        stack._parse_template()
        stack.output_map = stack._create_output_map()

    monkeypatch.setattr(models.ChangeSet, "apply", apply_and_refresh)


@pytest.fixture
def aws(monkeypatch, moto_change_sets):
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


def private_network() -> dict:
    """A VPC in moto with two private subnets and their route table, as stage parameters."""
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{n}.0/24",
                                 AvailabilityZone=f"{REGION}{zone}")["Subnet"]["SubnetId"]
               for n, zone in ((1, "a"), (2, "b"))]
    table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    return {**STAGE_PARAMETERS, "VpcId": vpc, "SubnetIds": subnets, "RouteTableIds": [table]}


class MotoCloudFormation:
    """moto's CloudFormation client with two of CloudFormation's features that moto lacks."""

    def __init__(self, client, iam, secretsmanager):
        self._client, self._iam, self._secrets = client, iam, secretsmanager

    def create_change_set(self, **request):
        from samtranslator.public.translator import ManagedPolicyLoader
        from samtranslator.translator.transform import transform

        template = json.loads(request["TemplateBody"])
        if template.get("Transform") == "AWS::Serverless-2016-10-31":
            values = {p["ParameterKey"]: p["ParameterValue"] for p in request["Parameters"]}
            values.update({"AWS::Region": REGION, "AWS::AccountId": ACCOUNT,
                           "AWS::Partition": "aws"})
            template = transform(template, values, ManagedPolicyLoader(self._iam))
        for logical, resource in list(template["Resources"].items()):
            if resource["Type"] == "AWS::SecretsManager::Secret":
                template = self._with_secret(template, request["StackName"], logical)
        return self._client.create_change_set(**{**request, "TemplateBody": json.dumps(template)})

    def _with_secret(self, template, stack, logical):
        name = f"{stack}-{logical}"
        try:
            arn = self._secrets.describe_secret(SecretId=name)["ARN"]
        except self._secrets.exceptions.ResourceNotFoundException:
            arn = self._secrets.create_secret(
                Name=name, SecretString=json.dumps({"username": "u", "password": "p"}))["ARN"]
        del template["Resources"][logical]
        text = json.dumps(template).replace(json.dumps({"Ref": logical}), json.dumps(arn))
        return json.loads(text.replace("${%s}" % logical, arn))

    def __getattr__(self, name):
        return getattr(self._client, name)


class Recording:
    """A client that records each call's arguments, then forwards it."""

    def __init__(self, client):
        self._client, self.calls = client, []

    def __getattr__(self, name):
        attribute = getattr(self._client, name)
        if not callable(attribute) or name in ("get_waiter", "get_paginator"):
            return attribute

        def call(**kwargs):
            self.calls.append((name, kwargs))
            return attribute(**kwargs)
        return call


class ByStack:
    """Send calls about ``stack`` to one client, every other call to another."""

    def __init__(self, default, stack, client):
        self._default, self._stack, self._client = default, stack, client

    def _for(self, kwargs):
        return self._client if kwargs.get("StackName") == self._stack else self._default

    def __getattr__(self, name):
        if name == "get_waiter":
            return lambda waiter: _RoutedWaiter(self, waiter)
        if name == "exceptions":
            return self._default.exceptions

        def call(**kwargs):
            return getattr(self._for(kwargs), name)(**kwargs)
        return call


class _RoutedWaiter:
    def __init__(self, router, name):
        self._router, self._name = router, name

    def wait(self, **kwargs):
        return self._router._for(kwargs).get_waiter(self._name).wait(**kwargs)


class FakeDocker:
    """The docker CLI: records commands; a push puts the image into (moto's) ECR."""

    def __init__(self, ecr):
        self.ecr, self.commands = ecr, []

    def __call__(self, command, input=None):
        self.commands.append(command[:2])
        if command[:2] == ["docker", "push"]:
            repository_uri, tag = command[2].rsplit(":", 1)
            manifest = json.dumps({"schemaVersion": 2, "tag": tag,
                                   "mediaType": "application/vnd.docker.distribution.manifest.v2+json"})
            self.ecr.put_image(repositoryName=repository_uri.split("/", 1)[1],
                               imageManifest=manifest, imageTag=tag)


def stub_upload_stack_created(stub, stack, outputs):
    missing = {"Error": {"Code": "ValidationError", "Message": f"Stack with id {stack} does not exist"}}
    stub.add_client_error("describe_stacks", "ValidationError", missing["Error"]["Message"],
                          expected_params={"StackName": stack})
    stub.add_response("create_change_set", {"Id": "cs-1", "StackId": "stack-id"},
                      {"StackName": stack, "ChangeSetName": ANY, "ChangeSetType": "CREATE",
                       "Parameters": ANY, "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"],
                       "TemplateBody": ANY})
    stub.add_response("describe_change_set", {
        "Status": "CREATE_COMPLETE", "ExecutionStatus": "AVAILABLE",
        "Changes": [{"Type": "Resource",
                     "ResourceChange": {"Action": "Add", "LogicalResourceId": "RestAPI"}}]})
    stub.add_response("execute_change_set", {})
    stub.add_response("describe_stacks", {"Stacks": [_stack(stack, "CREATE_COMPLETE", outputs)]})
    stub.add_response("describe_stacks", {"Stacks": [_stack(stack, "CREATE_COMPLETE", outputs)]})


def stub_upload_stack_unchanged(stub, stack, outputs):
    stub.add_response("describe_stacks", {"Stacks": [_stack(stack, "CREATE_COMPLETE", outputs)]})
    stub.add_response("create_change_set", {"Id": "cs-2", "StackId": "stack-id"},
                      {"StackName": stack, "ChangeSetName": ANY, "ChangeSetType": "UPDATE",
                       "Parameters": ANY, "Capabilities": ANY, "TemplateBody": ANY})
    stub.add_response("describe_change_set", {
        "Status": "FAILED", "StatusReason": "The submitted information didn't contain changes. "
        "Submit different information to create a change set."})
    stub.add_response("delete_change_set", {})
    stub.add_response("describe_stacks", {"Stacks": [_stack(stack, "CREATE_COMPLETE", outputs)]})


def _stack(name, status, outputs):
    return {"StackName": name, "StackStatus": status, "CreationTime": "2026-11-28T00:00:00Z",
            "Outputs": [{"OutputKey": k, "OutputValue": v} for k, v in outputs.items()]}


def stub_bridge_roll(stub, cluster, service):
    stub.add_response("update_service", {"service": {"serviceName": service}},
                      {"cluster": cluster, "service": service, "forceNewDeployment": True})
    stub.add_response("describe_services", {"services": [{
        "serviceName": service, "status": "ACTIVE", "runningCount": 1, "desiredCount": 1,
        "deployments": [{"id": "ecs-svc/1", "status": "PRIMARY"}]}]},
        {"cluster": cluster, "services": [service]})


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    return package_once(tmp_path_factory)[0]


@pytest.fixture
def settings():
    manifest = chalicefile.load(ROOT / chalicefile.FILENAME)
    return chalicefile.stage_settings(manifest, STAGE, environ=STAGE_ENV)


BUCKET_AND_ROLE = {
    "Parameters": {"BucketName": {"Type": "String"}},
    "Resources": {
        "Bucket": {"Type": "AWS::S3::Bucket", "Properties": {"BucketName": {"Ref": "BucketName"}}},
        "Role": {"Type": "AWS::IAM::Role", "Properties": {"AssumeRolePolicyDocument": {
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                    "Principal": {"Service": "lambda.amazonaws.com"}}]}}},
    },
    "Outputs": {"Bucket": {"Value": {"Ref": "Bucket"}},
                "RoleArn": {"Value": {"Fn::GetAtt": ["Role", "Arn"]}}},
}


def test_stack_is_created_left_alone_updated_and_deleted(aws):
    cfn = boto3.client("cloudformation", region_name=REGION)
    s3 = boto3.client("s3", region_name=REGION)
    created = stacks.deploy_stack(cfn, "t-stack", BUCKET_AND_ROLE, {"BucketName": "photos-one"},
                                  waiter=WAIT)
    assert created.changed and created.outputs["Bucket"] == "photos-one"
    role = created.outputs["RoleArn"].rsplit("/", 1)[1]
    assert boto3.client("iam").get_role(RoleName=role)["Role"]["Arn"] == created.outputs["RoleArn"]
    again = stacks.deploy_stack(cfn, "t-stack", BUCKET_AND_ROLE, {"BucketName": "photos-one"},
                                waiter=WAIT)
    assert not again.changed and again.outputs == created.outputs
    updated = stacks.deploy_stack(cfn, "t-stack", BUCKET_AND_ROLE, {"BucketName": "photos-two"},
                                  waiter=WAIT)
    assert updated.changed and updated.outputs["Bucket"] == "photos-two"
    assert "photos-two" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert stacks.delete_stack(cfn, "t-stack", waiter=WAIT)
    assert stacks.describe(cfn, "t-stack") is None
    assert not stacks.delete_stack(cfn, "t-stack", waiter=WAIT)


def test_deploy_twice_then_destroy(aws, packaged, settings):
    names = packaged.names
    upload_stack, resize_stack = names.function_stack("upload"), names.function_stack("resize")
    iam = boto3.client("iam")
    moto_cfn = MotoCloudFormation(boto3.client("cloudformation", region_name=REGION), iam,
                                  boto3.client("secretsmanager", region_name=REGION))
    upload_cfn = boto3.client("cloudformation", region_name=REGION)
    upload_stub = Stubber(upload_cfn)
    recorded_upload = Recording(upload_cfn)
    ecs = boto3.client("ecs", region_name=REGION)
    ecs_stub = Stubber(ecs)
    ecr = boto3.client("ecr", region_name=REGION)
    docker = FakeDocker(ecr)
    clients = deploy.Clients(cloudformation=ByStack(moto_cfn, upload_stack, recorded_upload),
                             s3=boto3.client("s3", region_name=REGION), ecr=ecr, ecs=ecs)
    upload_outputs = {"EndpointURL": API_URL, "RestAPIId": "abc123"}
    cluster, service = f"imagepipe-{STAGE}", "bridge"
    stage_parameters = private_network()

    # --- first deploy: everything is created ------------------------------------------------
    stub_upload_stack_created(upload_stub, upload_stack, upload_outputs)
    stub_bridge_roll(ecs_stub, cluster, service)
    with upload_stub, ecs_stub:
        first = deploy.deploy(packaged, settings, stage_parameters, clients, ROOT, run=docker,
                              waiter=WAIT, service_waiter=WAIT)
        upload_stub.assert_no_pending_responses()
        ecs_stub.assert_no_pending_responses()

    assert first.api_url == API_URL and first.bucket == settings.bucket
    assert first.queue == settings.resize_queue
    assert set(first.changed) == {names.infra_stack, resize_stack, upload_stack}
    assert [c[1] for c in docker.commands] == ["login", "build", "push"]
    summary = first.summary()
    assert API_URL in summary and settings.bucket in summary and settings.resize_queue in summary

    cfn = boto3.client("cloudformation", region_name=REGION)
    infra = stacks.describe(cfn, names.infra_stack)
    outputs, parameters = stacks.outputs_of(infra), stacks.parameters_of(infra)
    assert parameters["BridgeImage"] == first.bridge_image
    assert first.bridge_image.startswith(outputs["BridgeRepositoryUri"] + ":")
    assert parameters["EnableObjectCreatedNotification"] == "true"
    assert parameters["BucketName"] == settings.bucket and parameters["VpcId"] == stage_parameters["VpcId"]
    assert settings.bucket in [b["Name"] for b in clients.s3.list_buckets()["Buckets"]]

    # The resize function exists, on the runtime, as the infra stack's role, code by hash.
    function = boto3.client("lambda", region_name=REGION).get_function(
        FunctionName=names.resize_function)["Configuration"]
    assert function["Runtime"] == "python3.12" and function["Architectures"] == ["x86_64"]
    assert function["Role"] == outputs["ResizeFunctionRoleArn"]
    env = function["Environment"]["Variables"]
    assert env["IMAGEPIPE_BUCKET"] == settings.bucket and env["AMQP_URL"] == outputs["AmqpEndpoint"]
    bundles = [o["Key"] for o in clients.s3.list_objects_v2(
        Bucket=outputs["ArtifactsBucketName"])["Contents"]]
    assert sorted(k.split("/")[1] for k in bundles) == ["resize", "upload"]

    # The upload stack got the infra stack's outputs and code that exists in S3.
    (_, request), = [c for c in recorded_upload.calls if c[0] == "create_change_set"]
    assert {p["ParameterKey"]: p["ParameterValue"] for p in request["Parameters"]} == {
        "BucketName": settings.bucket, "AmqpEndpoint": outputs["AmqpEndpoint"],
        "BrokerSecretArn": outputs["BrokerSecretArn"],
        "UploadFunctionRoleArn": outputs["UploadFunctionRoleArn"],
        "UploadApiFunctionName": names.upload_api_function,
        "ObjectCreatedFunctionName": names.object_created_function,
        "CdnDomain": "",  # the stage delivers by redirect: no distribution
        # The upload functions run in the broker's VPC, in the infra stack's security group.
        "UploadFunctionSecurityGroupId": outputs["UploadFunctionSecurityGroupId"],
        "PrivateSubnetIds": ",".join(stage_parameters["SubnetIds"]),
        # A redirect stage that brings no signing keys gets a secret the stack generated.
        "DeliveryKeysSecretArn": outputs["DeliveryKeysSecretArn"],
    }
    # The resize stack went after the upload stack: its stable variant URLs point at the API.
    assert env["IMAGEPIPE_PUBLIC_API_URL"] == API_URL and env["IMAGEPIPE_CDN_DOMAIN"] == ""
    # It signs them with the keys of that secret, which it reads at start: never in plain.
    assert env["IMAGEPIPE_DELIVERY_KEYS_ARN"] == outputs["DeliveryKeysSecretArn"]
    assert "IMAGEPIPE_DELIVERY_KEYS" not in env
    boto3.client("secretsmanager", region_name=REGION).describe_secret(
        SecretId=outputs["DeliveryKeysSecretArn"])
    body = json.loads(request["TemplateBody"])
    code = body["Resources"]["APIHandler"]["Properties"]["CodeUri"]
    assert code["Bucket"] == outputs["ArtifactsBucketName"] and code["Key"] in bundles

    # --- second deploy: nothing changes, nothing is rebuilt or uploaded ----------------------
    recorded_upload.calls.clear()
    docker.commands.clear()
    stub_upload_stack_unchanged(upload_stub, upload_stack, upload_outputs)
    stub_bridge_roll(ecs_stub, cluster, service)
    with upload_stub, ecs_stub:
        second = deploy.deploy(packaged, settings, stage_parameters, clients, ROOT, run=docker,
                               waiter=WAIT, service_waiter=WAIT)
        upload_stub.assert_no_pending_responses()
    assert docker.commands == []
    assert second.bridge_image == first.bridge_image and second.api_url == API_URL
    assert second.changed == []
    assert [o["Key"] for o in clients.s3.list_objects_v2(
        Bucket=outputs["ArtifactsBucketName"])["Contents"]] == bundles
    again = boto3.client("lambda", region_name=REGION).get_function(
        FunctionName=names.resize_function)["Configuration"]
    assert again["CodeSha256"] == function["CodeSha256"]

    # --- destroy ------------------------------------------------------------------------------
    upload_stub.add_response("describe_stacks", {"Stacks": [_stack(upload_stack, "CREATE_COMPLETE", {})]})
    upload_stub.add_response("delete_stack", {}, {"StackName": upload_stack})
    upload_stub.add_response("describe_stacks", {"Stacks": [_stack(upload_stack, "DELETE_COMPLETE", {})]})
    with upload_stub:
        functions = chalicefile.load(ROOT / chalicefile.FILENAME)["functions"]
        report = deploy.destroy(names, functions, clients, waiter=WAIT)
        upload_stub.assert_no_pending_responses()
    assert f"deleted  {names.infra_stack}" in report and f"deleted  {resize_stack}" in report
    assert any(settings.bucket in line and line.startswith("kept") for line in report)
    assert stacks.describe(cfn, names.infra_stack) is None
    assert stacks.describe(cfn, resize_stack) is None


def test_destroy_deletes_the_stack_of_every_function_then_the_infra_stack(aws, packaged):
    # A third function (not upload or resize) must be destroyed like the others.
    names = packaged.names
    cfn = boto3.client("cloudformation", region_name=REGION)
    clients = deploy.Clients(cloudformation=cfn, s3=boto3.client("s3", region_name=REGION),
                             ecr=boto3.client("ecr", region_name=REGION),
                             ecs=boto3.client("ecs", region_name=REGION))
    functions = ["upload", "resize", "thumbnail"]
    every = [names.infra_stack, *(names.function_stack(f) for f in functions)]
    for number, stack_name in enumerate(every):
        stacks.deploy_stack(cfn, stack_name, BUCKET_AND_ROLE, {"BucketName": f"b-{number}"},
                            waiter=WAIT)
    report = deploy.destroy(names, functions, clients, waiter=WAIT)
    assert report == [f"deleted  {stack_name}" for stack_name in every[1:] + every[:1]]
    assert [stacks.describe(cfn, stack_name) for stack_name in every] == [None] * len(every)


def test_stage_parameters_must_be_infra_parameters_and_not_computed(packaged, settings):
    with pytest.raises(Exception, match="not parameters of the infra stack: VpcIdd"):
        deploy.infra_parameters(packaged, settings, {"VpcIdd": "vpc-1"})
    with pytest.raises(Exception, match="set by deploy itself: BucketName"):
        deploy.infra_parameters(packaged, settings, {"BucketName": "other"})
    declared = templates.load(packaged.infra_template)["Parameters"]
    manifest = chalicefile.load(ROOT / chalicefile.FILENAME)
    prod = manifest["stages"][STAGE]["deploy"]["parameters"]
    assert set(prod) <= set(declared) and not set(prod) & deploy.COMPUTED_PARAMETERS
