"""The infra stack's security properties, read from infra/stack.yaml with cfn-lint's decoder.

IAM policies are checked by evaluating them: each statement's actions and resources are
resolved (``!Sub``/``!GetAtt``/``!Ref`` with example values) and matched like IAM does, so a
test asks "may the resize role write originals/x?" rather than comparing YAML.
"""

import base64
import dataclasses
import fnmatch
import json
import re
from pathlib import Path

import pytest

from imagepipe import bucket_cors, keys
from imagepipe.errors import ConfigError
from imagepipe import settings as settings_module
from imagepipe.settings import Settings
from imagepipe_tools import chalicefile
from infra.deploy import package, templates
from tests.integration.packaged import STAGE_ENV

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "photos-prod"
ACCOUNT = "123456789012"
VALUES = {
    "AWS::Partition": "aws", "AWS::Region": "eu-west-1", "AWS::AccountId": ACCOUNT,
    "AWS::URLSuffix": "amazonaws.com",
    "Bucket": BUCKET, "Bucket.Arn": f"arn:aws:s3:::{BUCKET}",
    "ResizeFunctionName": "imagepipe-resize-prod-resize",
    "ObjectCreatedFunctionName": "imagepipe-upload-prod-on_object_created",
    "UploadApiFunctionName": "imagepipe-upload-prod",
    "BrokerSecret": f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:imagepipe-prod/broker-AbCd",
    "BridgeRepository.Arn": f"arn:aws:ecr:eu-west-1:{ACCOUNT}:repository/imagepipe-prod-bridge",
    "Stage": "prod",
    "Broker": "b-1234a5b6-78cd-901e-2fgh-3i45j6k178l9",  # Ref of a broker: its id
    "CallbackSecretArn": f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:imagepipe-prod/callback-XyZ",
    "DeliveryKeysSecretArn": f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:own/keys-Qr",
    "DeliveryKeysSecret": f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:imagepipe-prod/keys-Gh",
    "AuthSecretArn": f"arn:aws:secretsmanager:eu-west-1:{ACCOUNT}:secret:imagepipe-prod/auth-Jk",
}
RESIZE_ARN = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:imagepipe-resize-prod-resize"
UPLOAD_ID = "0123456789abcdef0123456789abcdef"
VPC_ACTIONS = {"ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
               "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses",
               "ec2:UnassignPrivateIpAddresses"}


@pytest.fixture(scope="module")
def template():
    return templates.load(ROOT / "infra" / "stack.yaml")


def resources(template, kind):
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def resolve(value):
    """An intrinsic as the string it becomes with VALUES (log groups resolve to their ARN)."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return VALUES.get(value["Ref"], value["Ref"])
    if "Fn::GetAtt" in value:
        name, attr = value["Fn::GetAtt"]
        if name.endswith("LogGroup") and attr == "Arn":
            return f"arn:aws:logs:eu-west-1:{ACCOUNT}:log-group:{name}:*"
        return VALUES[f"{name}.{attr}"]
    if "Fn::Sub" in value:
        return re.sub(r"\$\{([^}]+)\}", lambda m: VALUES[m.group(1)], value["Fn::Sub"])
    raise AssertionError(f"unexpected intrinsic {value}")


def statements(role):
    """The role's statements, a conditional one (``!If [cond, statement, NoValue]``) as on a
    stage that sets the condition."""
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                _condition, statement, otherwise = statement["Fn::If"]
                assert otherwise == {"Ref": "AWS::NoValue"}
            yield statement


def listed(value):
    return value if isinstance(value, list) else [value]


def branches(value):
    """A value and, for ``!If [cond, a, b]``, each of its branches: what it may become."""
    if isinstance(value, dict) and "Fn::If" in value:
        _condition, then, otherwise = value["Fn::If"]
        return [*branches(then), *branches(otherwise)]
    return [value]


def allows(role, action, resource) -> bool:
    """Whether any reading of the role (conditional statements on, either branch of a
    conditional resource) allows ``action`` on ``resource``."""
    for statement in statements(role):
        assert statement["Effect"] == "Allow"
        if any(fnmatch.fnmatchcase(action, a) for a in listed(statement["Action"])) and \
                any(fnmatch.fnmatchcase(resource, resolve(r))
                    for entry in listed(statement["Resource"]) for r in branches(entry)):
            return True
    return False


def obj(key):
    return f"arn:aws:s3:::{BUCKET}/{key}"


def test_the_bucket_is_private_owner_enforced_encrypted_and_kept(template):
    bucket = template["Resources"]["Bucket"]
    props = bucket["Properties"]
    assert all(props["PublicAccessBlockConfiguration"][k] is True for k in (
        "BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"))
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    sse = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert bucket["DeletionPolicy"] == "Retain" and bucket["UpdateReplacePolicy"] == "Retain"
    deny = template["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert deny["Effect"] == "Deny"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_artifacts_bucket_is_private_and_refuses_plain_http_too(template):
    props = template["Resources"]["ArtifactsBucket"]["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    policy = template["Resources"]["ArtifactsBucketPolicy"]["Properties"]
    assert policy["Bucket"] == {"Ref": "ArtifactsBucket"}
    (deny,) = policy["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Principal"], deny["Action"]) == ("Deny", "*", "s3:*")
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert deny["Resource"] == [{"Fn::GetAtt": ["ArtifactsBucket", "Arn"]},
                                {"Fn::Sub": "${ArtifactsBucket.Arn}/*"}]


def test_cors_comes_from_the_stages_allowed_origins(template):
    cors = template["Resources"]["Bucket"]["Properties"]["CorsConfiguration"]
    condition, rules, otherwise = cors["Fn::If"]
    assert template["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "AllowedOrigins"}]}, ""]}]}
    assert rules == {"CorsRules": []}  # the rule itself is rendered from bucket_cors
    assert otherwise == {"Ref": "AWS::NoValue"}
    assert template["Parameters"]["AllowedOrigins"]["Type"] == "CommaDelimitedList"


def test_the_packaged_template_carries_the_local_stacks_cors_rule():
    rendered = package.render_infra(ROOT, Settings(bucket=BUCKET))

    _, rules, _ = rendered["Resources"]["Bucket"]["Properties"]["CorsConfiguration"]["Fn::If"]
    (rule,) = rules["CorsRules"]
    assert rule["AllowedOrigins"] == {"Ref": "AllowedOrigins"}
    # The rule the local stack puts on moto, field by field: PUT and POST only, ETag exposed.
    (local,) = bucket_cors.s3_cors_configuration(["https://photos.example.com"])["CORSRules"]
    assert (rule["Id"], rule["AllowedMethods"], rule["AllowedHeaders"], rule["ExposedHeaders"],
            rule["MaxAge"]) == (local["ID"], local["AllowedMethods"], local["AllowedHeaders"],
                                local["ExposeHeaders"], local["MaxAgeSeconds"])
    assert set(rule["AllowedMethods"]) == {"PUT", "POST"} and "ETag" in rule["ExposedHeaders"]


def test_packaging_refuses_a_template_without_the_place_for_the_cors_rule(tmp_path):
    stack = (ROOT / "infra" / "stack.yaml").read_text()
    (tmp_path / "infra").mkdir()
    (tmp_path / "infra" / "stack.yaml").write_text(
        stack.replace("        - CorsRules: []\n", "        - CorsRules: [{Id: by-hand}]\n"))

    with pytest.raises(ConfigError, match="CorsConfiguration"):
        package.render_infra(tmp_path, Settings(bucket=BUCKET))


def test_lifecycle_aborts_incomplete_multipart_and_can_expire_originals(template):
    rules = template["Resources"]["Bucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    abort = rules[0]
    assert abort["Status"] == "Enabled"
    assert abort["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": {"Ref": "AbortIncompleteMultipartDays"}}
    condition, expire, otherwise = rules[1]["Fn::If"]
    assert template["Conditions"][condition] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "ExpireOriginalsDays"}, 0]}]}
    assert expire["Prefix"] == keys.ORIGINALS_PREFIX
    assert expire["ExpirationInDays"] == {"Ref": "ExpireOriginalsDays"}
    assert otherwise == {"Ref": "AWS::NoValue"}
    [slots] = [r for r in rules[2:] if r.get("Prefix") == keys.TOKENS_PREFIX]
    assert slots["Status"] == "Enabled" and 1 <= slots["ExpirationInDays"] <= 7


def test_the_upload_role_may_take_and_give_back_token_upload_slots(template):
    role = template["Resources"]["UploadFunctionRole"]["Properties"]["Policies"][0]
    statements = {s["Sid"]: s for s in role["PolicyDocument"]["Statement"] if "Sid" in s}
    slots = {"Fn::Sub": "${Bucket.Arn}/" + keys.TOKENS_PREFIX + "*"}
    assert slots in statements["WriteUploads"]["Resource"]
    assert slots in statements["RetractStatus"]["Resource"]


def test_object_created_on_originals_only_invokes_the_enqueue_function(template):
    notification = template["Resources"]["Bucket"]["Properties"]["NotificationConfiguration"]
    condition, config, _ = notification["Fn::If"]
    assert template["Conditions"][condition] == {
        "Fn::Equals": [{"Ref": "EnableObjectCreatedNotification"}, "true"]}
    (wiring,) = config["LambdaConfigurations"]
    assert wiring["Event"] == "s3:ObjectCreated:*"
    assert wiring["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": keys.ORIGINALS_PREFIX}]
    assert resolve(wiring["Function"]).endswith(":function:imagepipe-upload-prod-on_object_created")


def test_broker_credentials_live_only_in_secrets_manager(template):
    secret = template["Resources"]["BrokerSecret"]["Properties"]["GenerateSecretString"]
    assert secret["GenerateStringKey"] == "password" and secret["PasswordLength"] >= 16
    broker = template["Resources"]["Broker"]["Properties"]
    assert broker["EngineType"] == "RABBITMQ"
    (user,) = broker["Users"]
    for field in ("Username", "Password"):
        assert "{{resolve:secretsmanager:${BrokerSecret}:SecretString:" in user[field]["Fn::Sub"]
    # No environment anywhere carries a password: only the endpoint and the secret's ARN.
    env = {e["Name"]: e["Value"] for e in
           template["Resources"]["BridgeTaskDefinition"]["Properties"]["ContainerDefinitions"][0]["Environment"]}
    assert resolve(env["AMQP_URL"]) == (
        "amqps://b-1234a5b6-78cd-901e-2fgh-3i45j6k178l9.mq.eu-west-1.amazonaws.com:5671")
    assert env["IMAGEPIPE_AMQP_SECRET_ARN"] == {"Ref": "BrokerSecret"}


def ingress(template, group):
    """(port, source security group) of every ingress rule of ``group``, inline or separate."""
    rules = list(template["Resources"][group]["Properties"].get("SecurityGroupIngress", []))
    rules += [r["Properties"] for r in resources(template, "AWS::EC2::SecurityGroupIngress").values()
              if r["Properties"]["GroupId"] == {"Ref": group}]
    for rule in rules:
        assert "CidrIp" not in rule and "CidrIpv6" not in rule, (group, rule)
        assert rule["FromPort"] == rule["ToPort"], (group, rule)
    return {(r["FromPort"], r["SourceSecurityGroupId"]["Ref"]) for r in rules}


def test_the_broker_is_private_and_only_the_upload_function_and_bridge_reach_it(template):
    broker = template["Resources"]["Broker"]["Properties"]
    assert broker["PubliclyAccessible"] is False
    assert broker["SecurityGroups"] == [{"Ref": "BrokerSecurityGroup"}]
    condition, multi_az, single = broker["SubnetIds"]["Fn::If"]
    assert template["Conditions"][condition] == {
        "Fn::Equals": [{"Ref": "BrokerDeploymentMode"}, "CLUSTER_MULTI_AZ"]}
    assert multi_az == {"Ref": "SubnetIds"}
    assert single == [{"Fn::Select": [0, {"Ref": "SubnetIds"}]}]
    assert ingress(template, "BrokerSecurityGroup") == {
        (5671, "UploadFunctionSecurityGroup"), (5671, "BridgeSecurityGroup")}
    # The broker opens no connection of its own.
    (egress,) = template["Resources"]["BrokerSecurityGroup"]["Properties"]["SecurityGroupEgress"]
    assert egress["CidrIp"] == "127.0.0.1/32"
    # The only way to 5671 from the bridge and the function is the broker's group.
    for group in ("BridgeSecurityGroup", "UploadFunctionSecurityGroup"):
        rules = template["Resources"][group]["Properties"]["SecurityGroupEgress"]
        amqps = [r for r in rules if r["FromPort"] == 5671]
        assert amqps and all(r == {**r, "DestinationSecurityGroupId": {"Ref": "BrokerSecurityGroup"}}
                             and "CidrIp" not in r for r in amqps), group
        assert {r["FromPort"] for r in rules} == {443, 5671}, group


def test_the_vpc_reaches_s3_through_a_gateway_and_secrets_manager_through_an_endpoint(template):
    s3 = template["Resources"]["S3GatewayEndpoint"]["Properties"]
    assert s3["VpcEndpointType"] == "Gateway"
    assert resolve(s3["ServiceName"]) == "com.amazonaws.eu-west-1.s3"
    assert s3["RouteTableIds"] == {"Ref": "RouteTableIds"}
    endpoint = template["Resources"]["SecretsManagerEndpoint"]
    assert endpoint["Condition"] == "CreatesSecretsManagerEndpoint"
    props = endpoint["Properties"]
    assert (props["VpcEndpointType"], props["PrivateDnsEnabled"]) == ("Interface", True)
    assert resolve(props["ServiceName"]) == "com.amazonaws.eu-west-1.secretsmanager"
    assert template["Parameters"]["CreateSecretsManagerEndpoint"]["Default"] == "true"
    assert ingress(template, "SecretsManagerEndpointSecurityGroup") == {
        (443, "UploadFunctionSecurityGroup"), (443, "BridgeSecurityGroup")}
    assert template["Parameters"]["BridgeAssignPublicIp"]["Default"] == "DISABLED"
    # The upload functions' VpcConfig reads these outputs (infra/upload-functions.yaml).
    outputs = template["Outputs"]
    assert outputs["UploadFunctionSecurityGroupId"]["Value"] == {"Ref": "UploadFunctionSecurityGroup"}
    assert outputs["PrivateSubnetIds"]["Value"] == {"Fn::Join": [",", {"Ref": "SubnetIds"}]}


def test_upload_functions_run_in_the_vpc_and_the_resize_function_does_not():
    upload = templates.load(ROOT / "infra" / "upload-functions.yaml")
    for function in ("APIHandler", "OnObjectCreated"):
        assert upload["Resources"][function]["Properties"]["VpcConfig"] == {
            "SecurityGroupIds": [{"Ref": "UploadFunctionSecurityGroupId"}],
            "SubnetIds": {"Ref": "PrivateSubnetIds"}}
    assert upload["Parameters"]["PrivateSubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    # The resize function publishes nothing and talks only to S3: no VPC, no NAT to pay for.
    resize = templates.load(ROOT / "infra" / "resize-function.yaml")
    assert "VpcConfig" not in resize["Resources"]["Resize"]["Properties"]


def test_the_callback_secret_reaches_the_bridge_and_upload_function_only_by_arn(template):
    assert template["Parameters"]["CallbackSecretArn"]["Default"] == ""
    assert template["Conditions"]["HasCallbackSecret"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "CallbackSecretArn"}, ""]}]}
    container = package.bridge_container(template)
    condition, secrets, otherwise = container["Secrets"]["Fn::If"]
    assert (condition, otherwise) == ("HasCallbackSecret", {"Ref": "AWS::NoValue"})
    assert secrets == [{"Name": "IMAGEPIPE_CALLBACK_SECRET",
                        "ValueFrom": {"Ref": "CallbackSecretArn"}}]
    assert "IMAGEPIPE_CALLBACK_SECRET" in settings_module.SECRET_ENV
    # ECS reads `secrets` with the execution role; the upload function reads it itself.
    arn = VALUES["CallbackSecretArn"]
    for role in ("BridgeExecutionRole", "UploadFunctionRole"):
        assert allows(template["Resources"][role], "secretsmanager:GetSecretValue", arn), role
    for role in ("BridgeTaskRole", "ResizeFunctionRole"):
        assert not allows(template["Resources"][role], "secretsmanager:GetSecretValue", arn), role
    assert not allows(template["Resources"]["BridgeExecutionRole"],
                      "secretsmanager:GetSecretValue", VALUES["BrokerSecret"])
    upload = templates.load(ROOT / "infra" / "upload-functions.yaml")
    for function in ("APIHandler", "OnObjectCreated"):
        env = upload["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env["IMAGEPIPE_CALLBACK_SECRET_ARN"] == {"Ref": "CallbackSecretArn"}
    assert upload["Parameters"]["CallbackSecretArn"]["Default"] == ""


def test_the_delivery_keys_reach_the_functions_that_sign_and_check_urls_only_by_arn(template):
    """Both functions read the URLs' signing keys (resize signs, upload checks), from the
    stage's own secret or, when it names none, one the stack generates; nobody else may."""
    params, conditions = template["Parameters"], template["Conditions"]
    assert params["DeliveryKeysSecretArn"]["Default"] == ""
    assert conditions["UsesRedirect"] == {"Fn::Equals": [{"Ref": "Delivery"}, "redirect"]}
    assert conditions["CreatesDeliveryKeysSecret"] == {"Fn::And": [
        {"Condition": "UsesRedirect"}, {"Fn::Not": [{"Condition": "HasDeliveryKeysSecretArn"}]}]}
    generated = template["Resources"]["DeliveryKeysSecret"]
    assert generated["Condition"] == "CreatesDeliveryKeysSecret"
    spec = generated["Properties"]["GenerateSecretString"]
    # A plain string (no JSON template) of letters and digits: one key, no comma to split on.
    assert "SecretStringTemplate" not in spec and spec["ExcludePunctuation"] is True
    assert spec["PasswordLength"] >= 32
    output = template["Outputs"]["DeliveryKeysSecretArn"]
    assert output["Condition"] == "UsesRedirect"
    assert output["Value"] == {"Fn::If": ["HasDeliveryKeysSecretArn",
                                          {"Ref": "DeliveryKeysSecretArn"},
                                          {"Ref": "DeliveryKeysSecret"}]}
    for arn in (VALUES["DeliveryKeysSecretArn"], VALUES["DeliveryKeysSecret"]):
        for role in ("UploadFunctionRole", "ResizeFunctionRole"):
            assert allows(template["Resources"][role], "secretsmanager:GetSecretValue", arn), role
        for role in ("BridgeTaskRole", "BridgeExecutionRole"):
            assert not allows(template["Resources"][role], "secretsmanager:GetSecretValue",
                              arn), role
    # Only that secret: not the callback's, the auth's or the broker's for the resize role.
    resize = template["Resources"]["ResizeFunctionRole"]
    for other in ("CallbackSecretArn", "AuthSecretArn", "BrokerSecret"):
        assert not allows(resize, "secretsmanager:GetSecretValue", VALUES[other]), other
    env_name = settings_module.secret_arn_env(settings_module.ENV_DELIVERY_KEYS)
    resize_template = templates.load(ROOT / "infra" / "resize-function.yaml")
    upload_template = templates.load(ROOT / "infra" / "upload-functions.yaml")
    assert resize_template["Resources"]["Resize"]["Properties"]["Environment"]["Variables"][
        env_name] == {"Ref": "DeliveryKeysSecretArn"}
    for function in ("APIHandler", "OnObjectCreated"):
        env = upload_template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env[env_name] == {"Ref": "DeliveryKeysSecretArn"}, function
    for merge in (resize_template, upload_template):
        assert merge["Parameters"]["DeliveryKeysSecretArn"]["Default"] == ""


def test_the_hs256_auth_secret_reaches_the_upload_function_only_by_arn(template):
    assert template["Parameters"]["AuthSecretArn"]["Default"] == ""
    assert template["Conditions"]["HasAuthSecret"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "AuthSecretArn"}, ""]}]}
    arn = VALUES["AuthSecretArn"]
    assert allows(template["Resources"]["UploadFunctionRole"], "secretsmanager:GetSecretValue",
                  arn)
    for role in ("ResizeFunctionRole", "BridgeTaskRole", "BridgeExecutionRole"):
        assert not allows(template["Resources"][role], "secretsmanager:GetSecretValue", arn), role
    assert template["Outputs"]["AuthSecretArn"] == {"Condition": "HasAuthSecret",
                                                    "Value": {"Ref": "AuthSecretArn"}}
    upload = templates.load(ROOT / "infra" / "upload-functions.yaml")
    for function in ("APIHandler", "OnObjectCreated"):
        env = upload["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert env["IMAGEPIPE_AUTH_SECRET_ARN"] == {"Ref": "AuthSecretArn"}, function
    assert "IMAGEPIPE_AUTH_SECRET" in settings_module.SECRET_ENV
    # The deploy passes the stage's auth.secret_arn; a stage may not set it by hand.
    from infra.deploy import deploy

    packaged = package.Package(stage="prod", out_dir=ROOT, infra_template=ROOT / "infra" /
                               "stack.yaml", function_templates={}, names=_names())
    hs256 = Settings(bucket=BUCKET, stage="prod", auth_mode="jwt", auth_issuer="https://app",
                     auth_audience="imagepipe", auth_secret_arn=arn)
    assert deploy.infra_parameters(packaged, hs256, {})["AuthSecretArn"] == arn
    assert deploy.infra_parameters(packaged, Settings(bucket=BUCKET, stage="prod"),
                                   {})["AuthSecretArn"] == ""
    with pytest.raises(ConfigError, match="AuthSecretArn"):
        deploy.infra_parameters(packaged, hs256, {"AuthSecretArn": "arn:other"})


def test_no_secret_setting_is_a_plain_environment_variable_of_any_template(template):
    """Every ``secret=True`` setting reaches a function as its ``<NAME>_ARN`` (a parameter) and
    the bridge through ECS ``secrets``/``valueFrom``, never as a plain value."""
    secret_names = [f.metadata["env"].name for f in dataclasses.fields(Settings)
                    if f.metadata["env"].secret]
    assert set(secret_names) == set(settings_module.SECRET_ENV) and len(secret_names) >= 3
    container = package.bridge_container(template)
    plain = {e["Name"] for e in container["Environment"]}
    assert not plain & set(secret_names)
    for entry in container["Secrets"]["Fn::If"][1]:
        assert entry["Name"] in secret_names and set(entry) == {"Name", "ValueFrom"}
        assert set(entry["ValueFrom"]) == {"Ref"}
        assert entry["ValueFrom"]["Ref"] in template["Parameters"]
    for merge in ("upload-functions.yaml", "resize-function.yaml"):
        functions = templates.load(ROOT / "infra" / merge)
        for name, resource in functions["Resources"].items():
            env = resource.get("Properties", {}).get("Environment", {}).get("Variables", {})
            assert not set(env) & set(secret_names), (merge, name)
            for variable, value in env.items():
                if variable.removesuffix("_ARN") in secret_names:
                    assert set(value) == {"Ref"} and value["Ref"] in functions["Parameters"], \
                        (merge, name, variable)


def test_a_stage_that_writes_a_secret_in_plain_is_not_packaged(tmp_path):
    manifest = json.loads((ROOT / "chalicefile.json").read_text())
    manifest["stages"]["prod"]["callback_secret"] = "${IMAGEPIPE_CALLBACK_SECRET}"
    (tmp_path / "chalicefile.json").write_text(json.dumps(manifest))
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    env = {**STAGE_ENV, "IMAGEPIPE_CALLBACK_SECRET": secret}

    with pytest.raises(ConfigError, match="IMAGEPIPE_CALLBACK_SECRET_ARN") as caught:
        package.package(tmp_path, "prod", tmp_path / "out", environ=env)
    assert secret not in str(caught.value)
    assert not (tmp_path / "out" / "infra.json").exists()


def test_no_role_has_wildcard_actions_or_unscoped_resources(template):
    roles = resources(template, "AWS::IAM::Role")
    assert set(roles) == {"UploadFunctionRole", "ResizeFunctionRole", "BridgeTaskRole",
                          "BridgeExecutionRole"}
    for name, role in roles.items():
        assert "ManagedPolicyArns" not in role["Properties"], name
        for statement in statements(role):
            for action in listed(statement["Action"]):
                assert "*" not in action, (name, action)
            if "*" in listed(statement["Resource"]):
                # The ECR call and the VPC network-interface calls Lambda makes for a function
                # in a VPC have no resource-level permission.
                assert (listed(statement["Action"]) == ["ecr:GetAuthorizationToken"]
                        or set(listed(statement["Action"])) == VPC_ACTIONS), name
                assert name in ("BridgeExecutionRole", "UploadFunctionRole"), name


def test_bridge_may_invoke_only_the_resize_function(template):
    role = template["Resources"]["BridgeTaskRole"]
    assert allows(role, "lambda:InvokeFunction", RESIZE_ARN)
    other = f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:imagepipe-upload-prod"
    assert not allows(role, "lambda:InvokeFunction", other)
    assert not allows(role, "s3:GetObject", obj(f"originals/{UPLOAD_ID}"))
    assert allows(role, "secretsmanager:GetSecretValue", VALUES["BrokerSecret"])


def test_resize_reads_originals_and_writes_results_under_their_prefixes_only(template):
    role = template["Resources"]["ResizeFunctionRole"]
    assert allows(role, "s3:GetObject", obj(keys.original_key(UPLOAD_ID)))
    for key in (keys.variant_key(UPLOAD_ID, "md", "jpeg"), keys.manifest_key(UPLOAD_ID),
                keys.status_marker_key(UPLOAD_ID, "done")):
        assert allows(role, "s3:PutObject", obj(key)), key
    assert not allows(role, "s3:PutObject", obj(keys.original_key(UPLOAD_ID)))
    assert not allows(role, "s3:PutObject", obj(keys.upload_record_key(UPLOAD_ID)))
    assert not allows(role, "s3:GetObject", obj(keys.upload_record_key(UPLOAD_ID)))
    # A rerender deletes the variants it superseded, and nothing else.
    assert allows(role, "s3:DeleteObject", obj(keys.variant_key(UPLOAD_ID, "md", "jpeg")))
    for key in (keys.original_key(UPLOAD_ID), keys.manifest_key(UPLOAD_ID),
                keys.status_marker_key(UPLOAD_ID, "done"), keys.upload_record_key(UPLOAD_ID)):
        assert not allows(role, "s3:DeleteObject", obj(key)), key
    assert not allows(role, "s3:PutObject", f"arn:aws:s3:::other-bucket/variants/{UPLOAD_ID}/md.jpg")
    assert not allows(role, "secretsmanager:GetSecretValue", VALUES["BrokerSecret"])
    assert not allows(role, "lambda:InvokeFunction", RESIZE_ARN)


def test_upload_function_signs_uploads_but_cannot_write_results(template):
    role = template["Resources"]["UploadFunctionRole"]
    # Presigned uploads act with the signer's permissions.
    assert allows(role, "s3:PutObject", obj(keys.original_key(UPLOAD_ID)))
    assert allows(role, "s3:PutObject", obj(keys.upload_record_key(UPLOAD_ID)))
    assert allows(role, "s3:GetObject", obj(keys.variant_key(UPLOAD_ID, "md", "jpeg")))
    assert not allows(role, "s3:PutObject", obj(keys.variant_key(UPLOAD_ID, "md", "jpeg")))
    assert not allows(role, "s3:PutObject", obj(keys.manifest_key(UPLOAD_ID)))
    assert not allows(role, "s3:DeleteObject", obj(keys.original_key(UPLOAD_ID)))
    assert allows(role, "secretsmanager:GetSecretValue", VALUES["BrokerSecret"])
    assert not allows(role, "lambda:InvokeFunction", RESIZE_ARN)


def test_every_log_group_has_retention_and_each_function_has_one(template):
    groups = resources(template, "AWS::Logs::LogGroup")
    assert all(g["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"} for g in groups.values())
    names = {resolve(g["Properties"]["LogGroupName"]) for g in groups.values()}
    for function in ("ResizeFunctionName", "ObjectCreatedFunctionName", "UploadApiFunctionName"):
        assert f"/aws/lambda/{VALUES[function]}" in names
    container = template["Resources"]["BridgeTaskDefinition"]["Properties"]["ContainerDefinitions"][0]
    assert container["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "BridgeLogGroup"}
    # Functions may write only to their own groups (never create one without retention).
    for role in ("UploadFunctionRole", "ResizeFunctionRole"):
        for statement in statements(template["Resources"][role]):
            assert "logs:CreateLogGroup" not in listed(statement["Action"])


def test_bridge_is_an_always_on_fargate_service_scaled_on_queue_depth(template):
    service = template["Resources"]["BridgeService"]["Properties"]
    assert service["LaunchType"] == "FARGATE"
    assert service["DesiredCount"] == {"Fn::If": ["HasBridgeImage", {"Ref": "BridgeMinCount"}, 0]}
    breaker = service["DeploymentConfiguration"]["DeploymentCircuitBreaker"]
    assert breaker == {"Enable": True, "Rollback": True}
    task = template["Resources"]["BridgeTaskDefinition"]["Properties"]
    container = task["ContainerDefinitions"][0]
    assert container["ReadonlyRootFilesystem"] is True and container["StopTimeout"] >= 60
    assert "/healthz" in " ".join(container["HealthCheck"]["Command"])
    target = template["Resources"]["BridgeScalableTarget"]["Properties"]
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    alarms = resources(template, "AWS::CloudWatch::Alarm")
    assert len(alarms) == 2
    for alarm in alarms.values():
        props = alarm["Properties"]
        assert (props["Namespace"], props["MetricName"]) == ("AWS/AmazonMQ", "MessageReadyCount")
        dims = {d["Name"]: d["Value"] for d in props["Dimensions"]}
        assert dims["Queue"] == {"Ref": "ResizeQueue"}
        (action,) = props["AlarmActions"]
        policy = template["Resources"][action["Ref"]]["Properties"]
        assert policy["ScalingTargetId"] == {"Ref": "BridgeScalableTarget"}


def test_the_template_is_clean_for_cfn_lint_and_lint_catches_a_planted_error(tmp_path):
    assert templates.lint([ROOT / "infra" / "stack.yaml"]) == []
    broken = (ROOT / "infra" / "stack.yaml").read_text().replace(
        "Type: AWS::ECS::Cluster", "Type: AWS::ECS::Clustr", 1)
    (tmp_path / "stack.yaml").write_text(broken)
    findings = templates.lint([tmp_path / "stack.yaml"])
    assert findings and "AWS::ECS::Clustr" in " ".join(findings)


@pytest.mark.parametrize("merge_template", ["resize-function.yaml", "upload-functions.yaml"])
def test_every_function_writes_lambdas_json_log_format_at_info(merge_template):
    # The chalice merge templates: Lambda's JSON formatter then writes each line's upload_id and
    # job_id (imagepipe.logs) as fields; INFO keeps the core's audit lines.
    merged = templates.load(ROOT / "infra" / merge_template)
    # A fragment without a Type is merged into the function chalice made under that name.
    functions = {name: resource["Properties"] for name, resource in merged["Resources"].items()
                 if "Type" not in resource and "FunctionName" in resource["Properties"]}
    assert functions
    for name, props in functions.items():
        assert props["LoggingConfig"] == {"LogFormat": "JSON", "ApplicationLogLevel": "INFO"}, name


# --- the CDN of a stage that delivers variants by CloudFront -----------------------------------

DISTRIBUTION_ID = "E2QWRUHEXAMPLE"


def _cdn_statement(template):
    statements = template["Resources"]["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    [conditional] = [s for s in statements if "Fn::If" in s]
    condition, statement, otherwise = conditional["Fn::If"]
    assert condition == "UsesCdn" and otherwise == {"Ref": "AWS::NoValue"}
    return statement


def test_the_cdn_exists_only_when_the_stage_delivers_by_cdn(template):
    assert template["Parameters"]["Delivery"]["AllowedValues"] == ["redirect", "cdn", "presigned"]
    assert template["Parameters"]["Delivery"]["Default"] == "redirect"
    assert template["Conditions"]["UsesCdn"] == {"Fn::Equals": [{"Ref": "Delivery"}, "cdn"]}
    for kind in ("AWS::CloudFront::Distribution", "AWS::CloudFront::OriginAccessControl"):
        made = resources(template, kind)
        assert len(made) == 1 and all(r["Condition"] == "UsesCdn" for r in made.values()), kind
    # The functions learn its domain from the stack (empty without a CDN).
    output = template["Outputs"]["CdnDomain"]["Value"]
    assert output == {"Fn::If": ["UsesCdn", {"Fn::GetAtt": ["VariantsDistribution", "DomainName"]},
                                 ""]}


def test_the_cdn_reads_the_private_bucket_through_origin_access_control(template):
    oac = template["Resources"]["VariantsOriginAccessControl"]["Properties"][
        "OriginAccessControlConfig"]
    assert (oac["OriginAccessControlOriginType"], oac["SigningBehavior"],
            oac["SigningProtocol"]) == ("s3", "always", "sigv4")
    config = template["Resources"]["VariantsDistribution"]["Properties"]["DistributionConfig"]
    (origin,) = config["Origins"]
    assert origin["DomainName"] == {"Fn::GetAtt": ["Bucket", "RegionalDomainName"]}
    assert origin["OriginAccessControlId"] == {"Fn::GetAtt": ["VariantsOriginAccessControl", "Id"]}
    assert origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}  # OAC, not the legacy OAI
    behaviour = config["DefaultCacheBehavior"]
    assert behaviour["TargetOriginId"] == origin["Id"]
    assert behaviour["ViewerProtocolPolicy"] in ("redirect-to-https", "https-only")
    assert set(behaviour["AllowedMethods"]) == {"GET", "HEAD"}
    # The bucket stays private: its public access block is untouched by the CDN.
    block = template["Resources"]["Bucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert all(block[k] is True for k in block)


def test_only_this_distribution_may_read_and_only_the_variants(template):
    statement = _cdn_statement(template)
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert statement["Action"] == "s3:GetObject"
    VALUES["VariantsDistribution"] = DISTRIBUTION_ID
    try:
        resource = resolve(statement["Resource"])
        source = resolve(statement["Condition"]["StringEquals"]["AWS:SourceArn"])
    finally:
        del VALUES["VariantsDistribution"]
    assert source == f"arn:aws:cloudfront::{ACCOUNT}:distribution/{DISTRIBUTION_ID}"
    assert fnmatch.fnmatchcase(obj(keys.variant_key(UPLOAD_ID, "md", "jpeg")), resource)
    for key in (keys.original_key(UPLOAD_ID), keys.upload_record_key(UPLOAD_ID),
                keys.manifest_key(UPLOAD_ID), keys.status_marker_key(UPLOAD_ID, "done")):
        assert not fnmatch.fnmatchcase(obj(key), resource), key


def test_the_stages_delivery_picks_the_cdn_at_deploy():
    from infra.deploy import deploy

    packaged = package.Package(stage="prod", out_dir=ROOT, infra_template=ROOT / "infra" /
                               "stack.yaml", function_templates={},
                               names=_names())
    for mode in ("cdn", "redirect"):
        settings = Settings(bucket=BUCKET, stage="prod", delivery=mode,
                            cdn_domain="d1.cloudfront.net" if mode == "cdn" else None)
        assert deploy.infra_parameters(packaged, settings, {})["Delivery"] == mode
    with pytest.raises(ConfigError, match="Delivery"):
        deploy.infra_parameters(packaged, Settings(bucket=BUCKET, stage="prod"),
                                {"Delivery": "cdn"})


def _names():
    from infra.deploy.names import Names

    fields = Names.__dataclass_fields__
    return Names(**{name: f"imagepipe-{name}" for name in fields})


def test_packaging_throttles_the_api_and_reserves_each_functions_concurrency():
    template = {"Resources": {
        "RestAPI": {"Type": "AWS::Serverless::Api", "Properties": {"StageName": "api"}},
        "APIHandler": {"Type": "AWS::Serverless::Function", "Properties": {}},
        "OnObjectCreated": {"Type": "AWS::Serverless::Function", "Properties": {}},
        "Permission": {"Type": "AWS::Lambda::Permission", "Properties": {}},
    }}
    limited = package.with_limits(template, {"rate_per_s": 7.5, "burst": 15}, 4)
    assert limited["Resources"]["RestAPI"]["Properties"]["MethodSettings"] == [{
        "ResourcePath": "/*", "HttpMethod": "*",
        "ThrottlingRateLimit": 7.5, "ThrottlingBurstLimit": 15}]
    for function in ("APIHandler", "OnObjectCreated"):
        assert limited["Resources"][function]["Properties"]["ReservedConcurrentExecutions"] == 4
    assert limited["Resources"]["Permission"]["Properties"] == {}
    unreserved = package.with_limits(
        {"Resources": {"Resize": {"Type": "AWS::Serverless::Function", "Properties": {}}}},
        {"rate_per_s": 1, "burst": 1}, None)
    assert "ReservedConcurrentExecutions" not in unreserved["Resources"]["Resize"]["Properties"]


def test_the_bridge_gets_the_resize_reservation_of_the_deploy_section():
    """One number for one limit: deploy.reserved_concurrency.resize reserves the function and
    bounds the lambda bridge's default concurrency (``IMAGEPIPE_RESIZE_RESERVED_CONCURRENCY``)."""
    stage = Settings(bucket=BUCKET, stage="prod", invoker="lambda", resize_function="f")
    assert stage.worker_count == settings_module.DEFAULT_LAMBDA_WORKERS  # unbounded alone
    reserved = package.with_resize_reservation(stage, 20)
    assert reserved.resize_reserved_concurrency == 20 and reserved.worker_count == 20
    env = {e["Name"]: e["Value"] for e in
           package.bridge_container(package.render_infra(ROOT, reserved))["Environment"]}
    assert env["IMAGEPIPE_RESIZE_RESERVED_CONCURRENCY"] == "20"
    assert package.with_resize_reservation(stage, None).resize_reserved_concurrency == 0
    # The stage may say the same number; another one is refused rather than one silently won.
    same = dataclasses.replace(stage, resize_reserved_concurrency=20)
    assert package.with_resize_reservation(same, 20).resize_reserved_concurrency == 20
    with pytest.raises(ConfigError, match="differs from deploy.reserved_concurrency.resize"):
        package.with_resize_reservation(dataclasses.replace(stage,
                                                            resize_reserved_concurrency=50), 20)
    # A stage asking for more workers than the reservation fails when packaged.
    with pytest.raises(ConfigError, match="reserved concurrency"):
        package.with_resize_reservation(dataclasses.replace(stage, workers=30), 20)


def test_the_bridge_tasks_share_the_resize_reservation():
    """All bridge tasks at once stay within the reservation: each defaults to its share."""
    stage = Settings(bucket=BUCKET, stage="prod", invoker="lambda", resize_function="f")
    shared = package.with_resize_reservation(stage, 20, bridge_tasks=4)
    assert shared.worker_count == 5 and shared.workers == 5
    assert package.with_resize_reservation(stage, 3, bridge_tasks=4).worker_count == 1
    assert package.with_resize_reservation(stage, 200, bridge_tasks=2).worker_count == \
        settings_module.DEFAULT_LAMBDA_WORKERS  # the default is below the share
    # A stage that sets its workers keeps them; an unreserved function leaves the default.
    assert package.with_resize_reservation(dataclasses.replace(stage, workers=8), 20,
                                           bridge_tasks=4).worker_count == 8
    assert package.with_resize_reservation(stage, None, bridge_tasks=4).workers == 0
    # prod: 20 reserved, at most 4 bridge tasks.
    manifest = chalicefile.load(ROOT / "chalicefile.json")
    assert package.bridge_max_count(ROOT, manifest, "prod") == 4


def test_packaging_refuses_auth_with_callbacks_but_no_targets(tmp_path):
    (tmp_path / "chalicefile.json").write_text((ROOT / "chalicefile.json").read_text())
    env = {**STAGE_ENV, "IMAGEPIPE_CALLBACK_SECRET_ARN": VALUES["CallbackSecretArn"]}

    with pytest.raises(ConfigError, match="callback_allowed_prefixes"):
        package.package(tmp_path, "prod", tmp_path / "out", environ=env)
    assert not (tmp_path / "out" / "infra.json").exists()


def test_only_the_upload_function_gets_the_auth_settings():
    hs256 = Settings(bucket=BUCKET, stage="prod", auth_mode="jwt", auth_issuer="https://app",
                     auth_audience="imagepipe", auth_secret_arn=VALUES["AuthSecretArn"])
    bare = package.without_auth(hs256)
    assert not bare.auth_on and bare.auth_secret_arn is None
    env = {e["Name"]: e["Value"] for e in package.bridge_container(
        package.render_infra(ROOT, bare))["Environment"]}
    # Only what a stage without auth says (mode none), no issuer, audience or secret's ARN.
    unauthenticated = {k: v for k, v in Settings(bucket=BUCKET).to_env().items()
                       if k.startswith("IMAGEPIPE_AUTH")}
    assert {k: v for k, v in env.items() if k.startswith("IMAGEPIPE_AUTH")} == unauthenticated
    assert unauthenticated["IMAGEPIPE_AUTH_MODE"] == "none"
