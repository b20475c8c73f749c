"""The Cognito user pool in the synthesized template: the one the stack creates, and an
existing one given as context instead."""

from __future__ import annotations

from typing import Any

import pytest

from infrastructure import names
from infrastructure.constructs import identity
from tests.infrastructure.conftest import EXISTING_CLIENT_ID, EXISTING_POOL_ARN, EXISTING_POOL_ID, Synthesized

pytestmark = pytest.mark.infrastructure

USER_POOL = "AWS::Cognito::UserPool"
CLIENT = "AWS::Cognito::UserPoolClient"
GROUP = "AWS::Cognito::UserPoolGroup"


def pool_id(synthesized: Synthesized) -> str:
    (logical_id,) = synthesized.resources(USER_POOL)
    return logical_id


def client(synthesized: Synthesized) -> tuple[str, dict[str, Any]]:
    ((logical_id, resource),) = synthesized.resources(CLIENT).items()
    return logical_id, resource["Properties"]


# --- the pool the stack creates ---------------------------------------------------------


def test_the_pool_signs_in_by_username_only_and_refuses_self_sign_up(synthesized: Synthesized) -> None:
    pool = synthesized.raw["Resources"][pool_id(synthesized)]
    props = pool["Properties"]
    # Neither an email address nor a phone number is a username or an alias of one.
    assert "UsernameAttributes" not in props
    assert "AliasAttributes" not in props
    assert "AutoVerifiedAttributes" not in props
    assert props["UsernameConfiguration"] == {"CaseSensitive": False}
    assert props["AdminCreateUserConfig"]["AllowAdminCreateUserOnly"] is True
    # With no email or phone number, only an admin can recover an account.
    assert props["AccountRecoverySetting"] == {"RecoveryMechanisms": [{"Name": "admin_only", "Priority": 1}]}
    assert props["MfaConfiguration"] == "OFF"


def test_the_pool_asks_for_strong_passwords(synthesized: Synthesized) -> None:
    policy = synthesized.raw["Resources"][pool_id(synthesized)]["Properties"]["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 12
    for requirement in ("RequireLowercase", "RequireUppercase", "RequireNumbers", "RequireSymbols"):
        assert policy[requirement] is True, requirement
    assert policy["TemporaryPasswordValidityDays"] <= 7


def test_the_pool_outlives_the_stack(synthesized: Synthesized) -> None:
    pool = synthesized.raw["Resources"][pool_id(synthesized)]
    assert pool["DeletionPolicy"] == "Retain"
    assert pool["UpdateReplacePolicy"] == "Retain"
    assert pool["Properties"]["DeletionProtection"] == "ACTIVE"


def test_the_client_has_no_secret_and_exactly_the_flows_it_needs(synthesized: Synthesized) -> None:
    _, props = client(synthesized)
    assert props["UserPoolId"] == {"Ref": pool_id(synthesized)}
    assert props["GenerateSecret"] is False
    assert sorted(props["ExplicitAuthFlows"]) == [
        "ALLOW_ADMIN_USER_PASSWORD_AUTH",
        "ALLOW_REFRESH_TOKEN_AUTH",
        "ALLOW_USER_PASSWORD_AUTH",
        "ALLOW_USER_SRP_AUTH",
    ]
    assert props["PreventUserExistenceErrors"] == "ENABLED"
    # No hosted UI: no OAuth flows, scopes or redirect URLs.
    assert props["AllowedOAuthFlowsUserPoolClient"] is False
    for key in ("AllowedOAuthFlows", "AllowedOAuthScopes", "CallbackURLs", "LogoutURLs"):
        assert key not in props, key


def test_the_id_token_lasts_an_hour(synthesized: Synthesized) -> None:
    _, props = client(synthesized)
    units = props["TokenValidityUnits"]
    assert (props["IdTokenValidity"], units["IdToken"]) == (60, "minutes")
    assert (props["AccessTokenValidity"], units["AccessToken"]) == (60, "minutes")


def test_the_two_groups_belong_to_the_pool(synthesized: Synthesized) -> None:
    groups = synthesized.resources(GROUP).values()
    by_name = {g["Properties"]["GroupName"]: g for g in groups}
    assert sorted(by_name) == sorted([names.ORGANIZERS_GROUP, names.ADMINS_GROUP])
    for name, group in by_name.items():
        assert group["Properties"]["UserPoolId"] == {"Ref": pool_id(synthesized)}, name
        # Deleting a group would drop its members from the retained pool.
        assert group["DeletionPolicy"] == "Retain", name
    # Admins rank first when a user is in both.
    precedence = {name: g["Properties"]["Precedence"] for name, g in by_name.items()}
    assert precedence[names.ADMINS_GROUP] < precedence[names.ORGANIZERS_GROUP]


def test_the_outputs_give_the_ids_and_the_issuer(synthesized: Synthesized) -> None:
    outputs = synthesized.raw["Outputs"]
    client_id, _ = client(synthesized)
    assert outputs[names.USER_POOL_ID_OUTPUT]["Value"] == {"Ref": pool_id(synthesized)}
    assert outputs[names.USER_POOL_CLIENT_ID_OUTPUT]["Value"] == {"Ref": client_id}
    assert outputs[names.USER_POOL_ISSUER_OUTPUT]["Value"] == {
        "Fn::Join": [
            "",
            [
                "https://cognito-idp.",
                {"Ref": "AWS::Region"},
                ".",
                {"Ref": "AWS::URLSuffix"},
                "/",
                {"Ref": pool_id(synthesized)},
            ],
        ]
    }


def test_the_local_stack_reads_the_template_with_its_pool(synthesized: Synthesized) -> None:
    from infrastructure.local.template import parse_template

    local = parse_template(synthesized.raw)
    assert set(local.workflows) >= {names.REGISTER_WORKFLOW, names.UNREGISTER_WORKFLOW}


# --- an existing pool, given as context -------------------------------------------------


def test_with_context_no_pool_client_or_group_is_created(
    with_existing_pool: tuple[dict[str, Any], Any],
) -> None:
    template, _ = with_existing_pool
    cognito = sorted(
        r["Type"] for r in template["Resources"].values() if r["Type"].startswith("AWS::Cognito::")
    )
    assert cognito == []


def test_with_context_the_outputs_are_the_given_ids(with_existing_pool: tuple[dict[str, Any], Any]) -> None:
    template, _ = with_existing_pool
    outputs = template["Outputs"]
    assert outputs[names.USER_POOL_ID_OUTPUT]["Value"] == EXISTING_POOL_ID
    assert outputs[names.USER_POOL_CLIENT_ID_OUTPUT]["Value"] == EXISTING_CLIENT_ID
    # The issuer is in the pool's own region (in its id), not the stack's.
    assert outputs[names.USER_POOL_ISSUER_OUTPUT]["Value"] == {
        "Fn::Join": [
            "",
            ["https://cognito-idp.eu-west-1.", {"Ref": "AWS::URLSuffix"}, f"/{EXISTING_POOL_ID}"],
        ]
    }


def test_with_context_the_construct_exposes_the_given_pool(
    with_existing_pool: tuple[dict[str, Any], Any],
) -> None:
    _, stack = with_existing_pool
    assert stack.identity.created is False
    assert stack.identity.groups == []
    assert stack.resolve(stack.identity.user_pool.user_pool_id) == EXISTING_POOL_ID
    assert stack.resolve(stack.identity.user_pool_client.user_pool_client_id) == EXISTING_CLIENT_ID
    arn = stack.resolve(stack.identity.user_pool.user_pool_arn)
    assert arn == EXISTING_POOL_ARN


@pytest.mark.parametrize(
    "context",
    [
        {names.USER_POOL_ID_CONTEXT: EXISTING_POOL_ID},
        {names.USER_POOL_CLIENT_ID_CONTEXT: EXISTING_CLIENT_ID},
    ],
)
def test_the_pool_and_its_client_are_given_together(context: dict[str, str]) -> None:
    from aws_cdk import App, Stack

    with pytest.raises(ValueError, match="go together"):
        identity.Identity(Stack(App(context=context), "IdentityOnly"), names.IDENTITY_CONSTRUCT_ID)


def test_malformed_ids_are_refused() -> None:
    with pytest.raises(ValueError, match="not a Cognito user pool id"):
        identity.ExistingUserPool("AbCdEf123", EXISTING_CLIENT_ID)
    with pytest.raises(ValueError, match="not a Cognito app client id"):
        identity.ExistingUserPool(EXISTING_POOL_ID, "has spaces")
    assert identity.ExistingUserPool(EXISTING_POOL_ID, EXISTING_CLIENT_ID).region == "eu-west-1"
