"""template.yaml wires what the README promises: authorization per AuthMode, throttling and access logs,
log retention and tracing, alarms on metrics the code emits, secrets out of the environment, least
privilege, the reaper's failure queue and the in-stack cache. (sam validate, cfn-lint and checkov run
in .ci/run; these tests pin the intent, so a scanner-clean change that drops a promise still fails.)"""

from __future__ import annotations

import re

import pytest

from local.lambda_harness import environment_defaults, http_routes, load_template

TEMPLATE = load_template()
RESOURCES = TEMPLATE["Resources"]
PARAMETERS = TEMPLATE["Parameters"]
GLOBAL_ENV = TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]

# Metric names the code emits (HELPERS.md / CONTRACT): namespace RoomHistory, dimension service.
EMITTED_METRICS = {
    "TurnsStored",
    "DuplicateAppends",
    "CasConflicts",
    "WriteConflicts",
    "VersionMismatches",
    "RedisUnavailable",
    "AuthDenied",
    "RoomsReaped",
    "ColdStart",
}
IAM_SECURITY = {"Fn::If": ["UsesIamAuth", [{"AWS_IAM": []}], {"Ref": "AWS::NoValue"}]}


def resources_of(type_: str) -> dict[str, dict]:
    return {name: r for name, r in RESOURCES.items() if r["Type"] == type_}


def functions() -> dict[str, dict]:
    return resources_of("AWS::Serverless::Function")


def test_every_route_is_on_the_explicit_http_api_with_iam_authorization_when_chosen():
    body_routes = {
        (method.upper(), path)
        for path, methods in RESOURCES["HttpApi"]["Properties"]["DefinitionBody"]["paths"].items()
        for method in methods
    }
    event_routes = {(r.method, r.path) for r in http_routes(TEMPLATE)}
    assert body_routes == event_routes  # a route added to the events needs its authorization here too
    for function in functions().values():
        for event in function["Properties"].get("Events", {}).values():
            if event["Type"] == "HttpApi":
                assert event["Properties"]["ApiId"] == {"Ref": "HttpApi"}
    for methods in RESOURCES["HttpApi"]["Properties"]["DefinitionBody"]["paths"].values():
        assert all(operation == {"security": IAM_SECURITY} for operation in methods.values())
    assert RESOURCES["HttpApi"]["Properties"]["Auth"] == {"EnableIamAuthorizer": True}
    assert TEMPLATE["Conditions"]["UsesIamAuth"] == {"Fn::Equals": [{"Ref": "AuthMode"}, "iam"]}
    assert PARAMETERS["AuthMode"]["Default"] == "token"
    assert set(PARAMETERS["AuthMode"]["AllowedValues"]) == {"token", "iam"}


def test_http_api_is_throttled_and_access_logged_with_retention():
    api = RESOURCES["HttpApi"]["Properties"]
    assert api["DefaultRouteSettings"] == {
        "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
        "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
    }
    log_group = api["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]
    assert RESOURCES[log_group]["Type"] == "AWS::Logs::LogGroup"
    assert RESOURCES[log_group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert "$context.path" not in api["AccessLogSettings"]["Format"]  # room ids stay out of the log


def test_functions_log_to_their_own_groups_with_retention_and_are_traced():
    assert TEMPLATE["Globals"]["Function"]["Tracing"] == "Active"
    groups = set()
    for function in functions().values():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert RESOURCES[group]["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        groups.add(group)
    assert len(groups) == len(functions())


def test_api_reserved_concurrency_is_a_parameter_with_no_reservation_by_default():
    reserved = RESOURCES["ApiFunction"]["Properties"]["ReservedConcurrentExecutions"]
    assert reserved == {
        "Fn::If": ["HasApiReservedConcurrency", {"Ref": "ApiReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }
    assert PARAMETERS["ApiReservedConcurrency"]["Default"] == 0


def test_alarms_watch_metrics_the_code_emits_and_notify_the_optional_topic():
    alarms = resources_of("AWS::CloudWatch::Alarm")
    custom = {
        a["Properties"]["MetricName"]: a["Properties"]
        for a in alarms.values()
        if a["Properties"].get("Namespace") == "RoomHistory"
    }
    assert set(custom) == {"RedisUnavailable", "WriteConflicts"} <= EMITTED_METRICS
    for properties in custom.values():
        # Powertools Metrics: the namespace and the service dimension come from the environment.
        assert properties["Namespace"] == GLOBAL_ENV["POWERTOOLS_METRICS_NAMESPACE"]
        assert properties["Dimensions"] == [{"Name": "service", "Value": GLOBAL_ENV["POWERTOOLS_SERVICE_NAME"]}]
    api_metrics = {
        m["MetricStat"]["Metric"]["MetricName"]: m["MetricStat"]["Metric"]
        for m in alarms["Api5xxAlarm"]["Properties"]["Metrics"]
        if "MetricStat" in m
    }
    assert set(api_metrics) == {"5xx", "Count"}
    assert all(m["Dimensions"] == [{"Name": "ApiId", "Value": {"Ref": "HttpApi"}}] for m in api_metrics.values())
    reaper = alarms["ReaperErrorsAlarm"]["Properties"]
    assert (reaper["Namespace"], reaper["MetricName"]) == ("AWS/Lambda", "Errors")
    assert reaper["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "ReaperFunction"}}]
    topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    assert all(a["Properties"]["AlarmActions"] == topic for a in alarms.values())


def test_no_environment_variable_holds_a_secret():
    assert not any(p.get("NoEcho") for p in PARAMETERS.values())  # nothing secret is a parameter any more
    variables = dict(GLOBAL_ENV)
    for function in functions().values():
        variables.update(function["Properties"].get("Environment", {}).get("Variables", {}))
    secret_names = [name for name in variables if re.search(r"PASSWORD|TOKEN(?!S)|SECRET(?!_ARN)|AUTH_FRONTENDS", name)]
    assert secret_names == []
    assert "{{resolve:" not in str(variables)  # no dynamic reference resolves a secret into the environment
    assert variables["REDIS_SECRET_ARN"] == {
        "Fn::If": ["CacheInStack", {"Ref": "RedisSecret"}, {"Ref": "RedisSecretArn"}]
    }


@pytest.mark.parametrize(
    ("url", "accepted"),
    [
        ("rediss://my-cache.abc.cache.amazonaws.com:6379", True),
        ("redis://10.0.0.5:6379/0", True),
        ("", True),  # with CreateCache (the RedisSource rule asks for it otherwise)
        ("rediss://:hunter2@my-cache:6379", False),
        ("rediss://app:hunter2@my-cache:6379", False),
        ("http://my-cache:6379", False),
    ],
)
def test_redis_url_parameter_refuses_credentials(url, accepted):
    assert bool(re.fullmatch(PARAMETERS["RedisUrl"]["AllowedPattern"], url)) is accepted


def test_functions_read_exactly_their_secrets_and_parameter():
    auth = {"Fn::If": ["HasAuthSecretArn", {"Ref": "AuthSecretArn"}, {"Ref": "AuthSecret"}]}
    redis = {
        "Fn::If": [
            "ReadsRedisSecret",
            {"AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": GLOBAL_ENV["REDIS_SECRET_ARN"]}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    api = RESOURCES["ApiFunction"]["Properties"]
    assert api["Environment"]["Variables"]["AUTH_SECRET_ARN"] == auth
    assert api["Policies"][:2] == [{"AWSSecretsManagerGetSecretValuePolicy": {"SecretArn": auth}}, redis]
    assert api["Policies"][2]["Fn::If"][0] == "HasPromptParameter"
    assert len(api["Policies"]) == 3
    assert RESOURCES["ReaperFunction"]["Properties"]["Policies"] == [redis]  # no frontends secret, no prompt
    outputs = TEMPLATE["Outputs"]
    assert outputs["AuthSecretArn"]["Value"] == auth
    assert RESOURCES["AuthSecret"]["Properties"]["SecretString"] == '{"frontends": []}'


def test_reaper_failures_and_undelivered_runs_go_to_one_queue():
    reaper = RESOURCES["ReaperFunction"]["Properties"]
    queue_arn = {"Fn::GetAtt": ["ReaperFailureQueue", "Arn"]}
    assert reaper["EventInvokeConfig"]["DestinationConfig"]["OnFailure"] == {"Type": "SQS", "Destination": queue_arn}
    assert reaper["Events"]["ReapIdleRooms"]["Properties"]["DeadLetterConfig"] == {"Arn": queue_arn}
    statement = RESOURCES["ReaperFailureQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert [s["Condition"]["ArnEquals"]["aws:SourceArn"] for s in statement] == [
        {"Fn::GetAtt": ["ReaperFunctionReapIdleRooms", "Arn"]}  # the rule SAM names <function><event>
    ]


def test_in_stack_cache_is_reachable_from_the_functions_only_over_tls():
    cache = RESOURCES["Cache"]
    assert cache["Condition"] == "CacheInStack"
    assert cache["Properties"]["Engine"] == "valkey"
    assert cache["Properties"]["SubnetIds"] == {"Ref": "SubnetIds"}
    assert cache["Properties"]["UserGroupId"] == {"Ref": "CacheUserGroup"}
    (ingress,) = RESOURCES["CacheSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["ToPort"]) == (6379, 6380)  # primary and reader endpoints
    assert ingress["SourceSecurityGroupId"] == {"Ref": "FunctionSecurityGroup"}
    assert "CidrIp" not in ingress
    assert GLOBAL_ENV["REDIS_URL"]["Fn::If"][:2] == [
        "CacheInStack",
        {"Fn::Sub": "rediss://${Cache.Endpoint.Address}:${Cache.Endpoint.Port}"},
    ]
    assert GLOBAL_ENV["REDIS_CLUSTER"] == {"Fn::If": ["CacheInStack", "true", {"Ref": "RedisCluster"}]}
    user = RESOURCES["CacheAppUser"]["Properties"]
    assert user["AuthenticationMode"]["Passwords"] == [
        {"Fn::Sub": "{{resolve:secretsmanager:${RedisSecret}:SecretString:password}}"}
    ]
    assert RESOURCES["CacheDefaultUser"]["Properties"]["AccessString"].startswith("off ")


def test_vpc_endpoints_admit_the_functions_only():
    for name in ("SecretsManagerEndpoint", "SsmEndpoint"):
        endpoint = RESOURCES[name]["Properties"]
        assert endpoint["PrivateDnsEnabled"] is True
        assert endpoint["SecurityGroupIds"] == [{"Ref": "EndpointSecurityGroup"}]
    assert RESOURCES["SsmEndpoint"]["Condition"] == "SsmEndpointInStack"  # only with the prompt parameter
    (ingress,) = RESOURCES["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert (ingress["FromPort"], ingress["SourceSecurityGroupId"]) == (443, {"Ref": "FunctionSecurityGroup"})


def test_local_defaults_follow_the_conditions_of_a_default_deployment():
    defaults = environment_defaults(TEMPLATE)
    assert defaults["REDIS_CLUSTER"] == "false"  # CreateCache=false: RedisCluster's default
    assert defaults["POWERTOOLS_METRICS_NAMESPACE"] == "RoomHistory"
    assert "REDIS_URL" not in defaults and "REDIS_SECRET_ARN" not in defaults
    with_cache = {
        **TEMPLATE,
        "Parameters": {**PARAMETERS, "CreateCache": {**PARAMETERS["CreateCache"], "Default": "true"}},
    }
    defaults = environment_defaults(with_cache)
    assert defaults["REDIS_CLUSTER"] == "true"
    assert "REDIS_URL" not in defaults  # the cache endpoint is known only once deployed
