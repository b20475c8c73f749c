"""Identity on AWS: the Amazon Cognito user pool callers sign in to, and its app client.

The pool is created here, or an existing one is used when the app is given its ids as
context (`cdk deploy -c userPoolId=<pool id> -c userPoolClientId=<app client id>`, both
or neither). The API's Cognito authorizer (`constructs/api.py`) accepts the pool's ID
tokens on every route but the health check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cognito as cognito
from constructs import Construct

from infrastructure import names

# Users are created by operators and admins with a temporary password (valid this long),
# which they replace at their first sign-in.
PASSWORD_POLICY = cognito.PasswordPolicy(
    min_length=12,
    require_lowercase=True,
    require_uppercase=True,
    require_digits=True,
    require_symbols=True,
    temp_password_validity=Duration.days(3),
)
# What the app client may do: sign in with a password sent to Cognito (USER_PASSWORD_AUTH),
# by an operator's AWS credentials (ADMIN_USER_PASSWORD_AUTH), or with SRP; CDK adds the
# refresh flow (ALLOW_REFRESH_TOKEN_AUTH) to any of them.
AUTH_FLOWS = cognito.AuthFlow(user_password=True, admin_user_password=True, user_srp=True)
ID_TOKEN_VALIDITY = Duration.hours(1)
ACCESS_TOKEN_VALIDITY = Duration.hours(1)
REFRESH_TOKEN_VALIDITY = Duration.days(30)
# Lower precedence wins when a user is in both groups (Cognito's `cognito:preferred_role`).
GROUP_PRECEDENCE = {names.ADMINS_GROUP: 0, names.ORGANIZERS_GROUP: 1}
GROUP_DESCRIPTIONS = {
    names.ORGANIZERS_GROUP: "Create and manage events",
    names.ADMINS_GROUP: "Administer users and every event",
}

# Cognito's own patterns: a pool id is `<region>_<id>`, an app client id word characters.
USER_POOL_ID = re.compile(r"^(?P<region>[a-z]{2}(?:-[a-z]+)+-\d+)_[0-9a-zA-Z]+$")
USER_POOL_CLIENT_ID = re.compile(r"^[\w+]{1,128}$")


@dataclass(frozen=True)
class ExistingUserPool:
    """A user pool (and one of its app clients) that this stack uses instead of its own."""

    user_pool_id: str
    user_pool_client_id: str

    def __post_init__(self) -> None:
        if not USER_POOL_ID.match(self.user_pool_id):
            raise ValueError(f"{self.user_pool_id!r} is not a Cognito user pool id (<region>_<id>)")
        if not USER_POOL_CLIENT_ID.match(self.user_pool_client_id):
            raise ValueError(f"{self.user_pool_client_id!r} is not a Cognito app client id")

    @property
    def region(self) -> str:
        match = USER_POOL_ID.match(self.user_pool_id)
        assert match is not None  # checked when made
        return match["region"]


def existing_user_pool_for(scope: Construct) -> ExistingUserPool | None:
    """The pool named by the `userPoolId` and `userPoolClientId` context values, if any."""
    pool_id = scope.node.try_get_context(names.USER_POOL_ID_CONTEXT)
    client_id = scope.node.try_get_context(names.USER_POOL_CLIENT_ID_CONTEXT)
    if not pool_id and not client_id:
        return None
    if not (pool_id and client_id):
        raise ValueError(
            f"context {names.USER_POOL_ID_CONTEXT} and {names.USER_POOL_CLIENT_ID_CONTEXT} "
            "go together: give both to use an existing user pool, or neither to create one"
        )
    return ExistingUserPool(str(pool_id).strip(), str(client_id).strip())


def issuer_url(scope: Construct, region: str, user_pool_id: str) -> str:
    """The pool's token issuer (`iss`), under which its JSON Web Key Set is published."""
    return f"https://cognito-idp.{region}.{Stack.of(scope).url_suffix}/{user_pool_id}"


class Identity(Construct):
    """The user pool (`user_pool`), its app client (`user_pool_client`) and their outputs.

    A created pool signs users in by username only (no email or phone number as an
    alias), refuses self sign-up (operators and admins create users), has the groups
    `names.USER_GROUPS` and is retained, with deletion protection, when the stack goes.

    An existing pool (`existing`, else the `userPoolId`/`userPoolClientId` context) is
    used as it is: nothing of it is created or changed here, so its groups
    (`organizers` and `admins`) must already exist in it, and its app client should allow
    the flows the created one does (see `AUTH_FLOWS`).
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, existing: ExistingUserPool | None = None
    ) -> None:
        super().__init__(scope, construct_id)
        existing = existing or existing_user_pool_for(self)
        self.created = existing is None
        self.user_pool: cognito.IUserPool
        self.user_pool_client: cognito.IUserPoolClient
        if existing is None:
            pool = self._user_pool()
            self.user_pool = pool
            self.user_pool_client = self._client(pool)
            self.groups = [self._group(pool, group) for group in names.USER_GROUPS]
            issuer = issuer_url(self, Stack.of(self).region, pool.user_pool_id)
        else:
            # Its ARN names the pool's own region (in its id), which may not be the stack's.
            arn = Stack.of(self).format_arn(
                service="cognito-idp",
                region=existing.region,
                resource="userpool",
                resource_name=existing.user_pool_id,
            )
            self.user_pool = cognito.UserPool.from_user_pool_arn(self, names.USER_POOL_CONSTRUCT_ID, arn)
            self.user_pool_client = cognito.UserPoolClient.from_user_pool_client_id(
                self, names.USER_POOL_CLIENT_CONSTRUCT_ID, existing.user_pool_client_id
            )
            self.groups = []
            issuer = issuer_url(self, existing.region, existing.user_pool_id)

        for output_name, value, description in (
            (names.USER_POOL_ID_OUTPUT, self.user_pool.user_pool_id, "Cognito user pool id"),
            (
                names.USER_POOL_CLIENT_ID_OUTPUT,
                self.user_pool_client.user_pool_client_id,
                "Cognito app client id (no secret) to sign in with",
            ),
            (names.USER_POOL_ISSUER_OUTPUT, issuer, "Issuer (iss) of the user pool's tokens"),
        ):
            output = CfnOutput(self, output_name, value=value, description=description)
            output.override_logical_id(output_name)

    def _user_pool(self) -> cognito.UserPool:
        return cognito.UserPool(
            self,
            names.USER_POOL_CONSTRUCT_ID,
            sign_in_aliases=cognito.SignInAliases(username=True, email=False, phone=False),
            sign_in_case_sensitive=False,
            self_sign_up_enabled=False,
            password_policy=PASSWORD_POLICY,
            # No email or phone number to recover an account with: an admin resets the
            # password (AdminSetUserPassword, AdminResetUserPassword).
            account_recovery=cognito.AccountRecovery.NONE,
            # MFA is off: this pool is for development and workshops (username and
            # password only, no SMS or authenticator setup); real deployments bring their
            # own pool, with their MFA policy, through the context above.
            mfa=cognito.Mfa.OFF,
            # Username, password and groups are all Lite features (the lowest tier).
            feature_plan=cognito.FeaturePlan.LITE,
            deletion_protection=True,
            # Like the table: the users outlive the stack.
            removal_policy=RemovalPolicy.RETAIN,
        )

    def _client(self, pool: cognito.UserPool) -> cognito.UserPoolClient:
        return pool.add_client(
            names.USER_POOL_CLIENT_CONSTRUCT_ID,
            generate_secret=False,
            auth_flows=AUTH_FLOWS,
            # No hosted UI or OAuth redirects: tokens come from InitiateAuth only.
            disable_o_auth=True,
            prevent_user_existence_errors=True,
            enable_token_revocation=True,
            id_token_validity=ID_TOKEN_VALIDITY,
            access_token_validity=ACCESS_TOKEN_VALIDITY,
            refresh_token_validity=REFRESH_TOKEN_VALIDITY,
        )

    def _group(self, pool: cognito.UserPool, group_name: str) -> cognito.CfnUserPoolGroup:
        group = cognito.CfnUserPoolGroup(
            self,
            f"{group_name.title()}Group",
            user_pool_id=pool.user_pool_id,
            group_name=group_name,
            description=GROUP_DESCRIPTIONS[group_name],
            precedence=GROUP_PRECEDENCE[group_name],
        )
        # Deleting a group drops its members: it stays with the retained pool.
        group.apply_removal_policy(RemovalPolicy.RETAIN)
        return group
