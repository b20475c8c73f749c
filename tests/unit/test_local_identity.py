"""Sign-in in the local twin: the template's user pool in moto, its tokens and their checks,
the operator endpoint that issues them and `regctl token`."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import io
import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.utilities.utils import load_resource

from infrastructure import names
from infrastructure.local import operator_endpoints
from infrastructure.local.engine import LocalEngine
from infrastructure.local.http_server import LocalServer
from infrastructure.local.identity import Caller, InvalidToken, LocalIdentity
from infrastructure.local.intrinsic_functions import TemplateError
from infrastructure.local.template import parse_template
from infrastructure.ops.cli import main
from tests.fixtures.sample_template import (
    SAMPLE_OUTPUTS,
    USER_POOL,
    USER_POOL_CLIENT,
    sample_template,
    with_user_pool,
)
from tests.fixtures.stub_engine import stub_engine

TOKEN_PATH = f"{names.LOCAL_OPS_PREFIX}/token"


@pytest.fixture(scope="module")
def engine() -> Iterator[LocalEngine]:
    with LocalEngine(with_user_pool(sample_template()), workflow_outputs=SAMPLE_OUTPUTS) as started:
        yield started


@pytest.fixture
def identity(engine: LocalEngine) -> LocalIdentity:
    assert engine.identity is not None
    return engine.identity


def _claims(token: str) -> dict[str, Any]:
    claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return claims


def _moto_key() -> Any:
    """The private key moto signs every pool's tokens with."""
    return jwt.algorithms.RSAAlgorithm.from_jwk(
        json.dumps(load_resource("cognitoidp/resources/jwks-private.json"))
    )


def _signed(claims: dict[str, Any], key: Any = None, kid: str = "dummy") -> str:
    return jwt.encode(claims, key or _moto_key(), algorithm="RS256", headers={"kid": kid})


def _segment(document: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def _refused(identity: LocalIdentity, token: str, reason: str) -> None:
    with pytest.raises(InvalidToken) as caught:
        identity.verify(token)
    assert reason in caught.value.reason


# --- the template --------------------------------------------------------------------------


def test_the_template_names_the_pool_its_client_and_groups() -> None:
    local = parse_template(with_user_pool(sample_template()), workflow_outputs=SAMPLE_OUTPUTS)
    pool = local.user_pool
    assert pool is not None
    assert (pool.logical_id, pool.name) == (USER_POOL, USER_POOL)
    assert pool.client.logical_id == USER_POOL_CLIENT and pool.client.generate_secret is False
    assert "ALLOW_ADMIN_USER_PASSWORD_AUTH" in pool.client.explicit_auth_flows
    assert pool.group_names == {"organizers", "admins"}
    assert pool.properties["Policies"]["PasswordPolicy"]["MinimumLength"] == 12
    # What create_user_pool does not take stays out.
    assert "EnabledMfas" not in pool.properties and "DeletionProtection" not in pool.properties


def test_a_template_without_a_pool_has_no_identity() -> None:
    assert parse_template(sample_template(), workflow_outputs=SAMPLE_OUTPUTS).user_pool is None


def test_a_client_of_a_pool_the_template_lacks_is_refused() -> None:
    template = with_user_pool(sample_template())
    template["Resources"][USER_POOL_CLIENT]["Properties"]["UserPoolId"] = "us-east-1_elsewhere"
    with pytest.raises(TemplateError, match="UserPoolId"):
        parse_template(template, workflow_outputs=SAMPLE_OUTPUTS)
    del template["Resources"][USER_POOL]
    with pytest.raises(TemplateError, match="no user pool"):
        parse_template(template, workflow_outputs=SAMPLE_OUTPUTS)


def test_names_from_the_template_are_the_pools_names() -> None:
    template = copy.deepcopy(with_user_pool(sample_template()))
    template["Resources"][USER_POOL]["Properties"]["UserPoolName"] = "registrations"
    template["Resources"][USER_POOL_CLIENT]["Properties"]["ClientName"] = "api"
    pool = parse_template(template, workflow_outputs=SAMPLE_OUTPUTS).user_pool
    assert pool is not None and (pool.name, pool.client.name) == ("registrations", "api")


# --- tokens --------------------------------------------------------------------------------


def test_a_token_verifies_and_names_the_user_and_groups(identity: LocalIdentity) -> None:
    token = identity.token("ada-lovelace", ["organizers"])
    assert identity.verify(token) == Caller(user_id="ada-lovelace", groups=frozenset({"organizers"}))
    claims = _claims(token)
    assert claims["iss"] == identity.issuer and claims["aud"] == identity.client_id
    assert identity.issuer == f"https://cognito-idp.{names.LOCAL_REGION}.amazonaws.com/{identity.pool_id}"


def test_the_groups_change_with_the_next_token(identity: LocalIdentity) -> None:
    assert identity.verify(identity.token("grace", ["organizers", "admins"])).groups == {
        "organizers",
        "admins",
    }
    assert identity.verify(identity.token("grace", ["admins"])).groups == {"admins"}
    assert identity.verify(identity.token("grace")).groups == frozenset()
    assert identity.verify(identity.token("grace", ["organizers"])).groups == {"organizers"}


def test_only_the_pools_groups_can_be_asked_for(identity: LocalIdentity) -> None:
    with pytest.raises(ValueError, match="unknown groups root"):
        identity.token("ada", ["organizers", "root"])


# --- what verification refuses ---------------------------------------------------------------


def test_a_token_signed_by_another_key_is_refused(identity: LocalIdentity) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _refused(identity, _signed(_claims(identity.token("ada")), other), "signature")


def test_an_unsigned_token_is_refused(identity: LocalIdentity) -> None:
    claims = _claims(identity.token("ada"))
    unsigned = f"{_segment({'alg': 'none', 'typ': 'JWT', 'kid': 'dummy'})}.{_segment(claims)}."
    _refused(identity, unsigned, "RS256")
    _refused(identity, jwt.encode(claims, None, algorithm="none", headers={"kid": "dummy"}), "RS256")


def test_a_token_signed_with_the_public_key_as_a_secret_is_refused(identity: LocalIdentity) -> None:
    public = (
        _moto_key()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', 'kid': 'dummy'})}.{_segment(_claims(identity.token('ada')))}"
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    _refused(identity, forged, "RS256")


def test_an_expired_token_is_refused(identity: LocalIdentity) -> None:
    claims = _claims(identity.token("ada"))
    # Signed as moto signs, so only the expiry is wrong.
    assert identity.verify(_signed(claims)).user_id == "ada"
    an_hour_ago = int(time.time()) - 3600
    _refused(identity, _signed({**claims, "iat": an_hour_ago - 3600, "exp": an_hour_ago}), "expired")


def test_a_token_of_another_pool_is_refused(engine: LocalEngine, identity: LocalIdentity) -> None:
    cognito = engine._client("cognito-idp")
    other_pool = cognito.create_user_pool(PoolName="other")["UserPool"]["Id"]
    other_client = cognito.create_user_pool_client(
        UserPoolId=other_pool, ClientName="other", ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    token = _sign_in(cognito, other_pool, other_client, "ada")["IdToken"]
    # Same key (moto has one), another issuer: only the issuer and audience tell them apart.
    _refused(identity, token, "issuer")
    _refused(identity, _signed({**_claims(token), "aud": identity.client_id}), "issuer")


def test_a_token_for_another_client_of_the_pool_is_refused(
    engine: LocalEngine, identity: LocalIdentity
) -> None:
    cognito = engine._client("cognito-idp")
    other_client = cognito.create_user_pool_client(
        UserPoolId=identity.pool_id, ClientName="other", ExplicitAuthFlows=["ALLOW_ADMIN_USER_PASSWORD_AUTH"]
    )["UserPoolClient"]["ClientId"]
    identity.token("ada")
    cognito.admin_set_user_password(
        UserPoolId=identity.pool_id, Username="ada", Password="Aa1!" * 4, Permanent=True
    )
    answer = cognito.admin_initiate_auth(
        UserPoolId=identity.pool_id,
        ClientId=other_client,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": "ada", "PASSWORD": "Aa1!" * 4},
    )["AuthenticationResult"]
    assert _claims(answer["IdToken"])["iss"] == identity.issuer
    _refused(identity, answer["IdToken"], "another app client")
    # The identity signs the user in again with a password of its own.
    identity._passwords.pop("ada")
    assert identity.verify(identity.token("ada")).user_id == "ada"


def test_an_access_token_is_refused(engine: LocalEngine, identity: LocalIdentity) -> None:
    identity.token("ada")
    cognito = engine._client("cognito-idp")
    access = _sign_in(cognito, identity.pool_id, identity.client_id, "ada", identity._passwords["ada"])
    _refused(identity, access["AccessToken"], "aud")
    # With the audience it lacks, it is still no ID token.
    claims = _claims(access["AccessToken"])
    _refused(identity, _signed({**claims, "aud": identity.client_id}), "not an ID token")


@pytest.mark.parametrize("garbage", ["", "not-a-token", "a.b.c", "eyJhbGciOiJSUzI1NiJ9.e30", "Bearer x.y.z"])
def test_garbage_is_refused(identity: LocalIdentity, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        identity.verify(garbage)


def test_a_token_signed_by_an_unknown_key_id_is_refused(identity: LocalIdentity) -> None:
    _refused(identity, _signed(_claims(identity.token("ada")), kid="rotated"), "unknown key")


def _sign_in(cognito: Any, pool: str, client: str, user: str, password: str | None = None) -> dict[str, Any]:
    if password is None:
        password = "Aa1!" * 4
        cognito.admin_create_user(UserPoolId=pool, Username=user, MessageAction="SUPPRESS")
        cognito.admin_set_user_password(UserPoolId=pool, Username=user, Password=password, Permanent=True)
    result: dict[str, Any] = cognito.admin_initiate_auth(
        UserPoolId=pool,
        ClientId=client,
        AuthFlow="ADMIN_USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": user, "PASSWORD": password},
    )["AuthenticationResult"]
    return result


# --- the operator endpoint and regctl --------------------------------------------------------


def _post(engine: Any, body: Any) -> tuple[int, Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return operator_endpoints.handle(engine, "POST", TOKEN_PATH, "", raw)


def test_the_endpoint_issues_a_token(engine: LocalEngine, identity: LocalIdentity) -> None:
    status, document = _post(engine, {"userId": "ada", "groups": ["admins"]})
    assert status == 200
    assert identity.verify(document["token"]) == Caller("ada", frozenset({"admins"}))
    status, document = _post(engine, {"userId": "ada"})
    assert status == 200 and identity.verify(document["token"]).groups == frozenset()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "userId"),
        ({"userId": 7}, "userId"),
        ({"userId": ""}, "userId must be 1 to 64"),
        ({"userId": "a" * 65}, "userId must be 1 to 64"),
        ({"userId": "ada lovelace"}, "userId must be 1 to 64"),
        ({"userId": "ada", "groups": "admins"}, "groups"),
        ({"userId": "ada", "groups": [1]}, "groups"),
        ({"userId": "ada", "groups": ["root"]}, "unknown groups root"),
        ([], "JSON object"),
        (b"{", ""),
    ],
)
def test_the_endpoint_refuses_bad_input(engine: LocalEngine, body: Any, message: str) -> None:
    status, document = _post(engine, body)
    assert status == 400 and document["error"] == "BadRequest"
    assert message in document["message"]


def _without_a_pool() -> Any:
    """What the operator endpoints read of an engine whose template has no user pool (a
    second engine would share this module's moto, and its table's name)."""
    engine = stub_engine()
    engine.identity = None
    return engine


def test_without_a_pool_the_endpoint_says_so() -> None:
    status, document = _post(_without_a_pool(), {"userId": "ada"})
    assert status == 404 and document["error"] == "UserPoolNotFound"


def _regctl(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_regctl_token_prints_the_token_alone(engine: LocalEngine, identity: LocalIdentity) -> None:
    with LocalServer(engine, port=0) as server:
        code, out, err = _regctl("token", "ada", "--group", "organizers", "-g", "admins", "--url", server.url)
        assert (code, err) == (0, "")
        assert out.endswith("\n") and out.count("\n") == 1
        assert identity.verify(out.strip()) == Caller("ada", frozenset({"organizers", "admins"}))
        code, out, err = _regctl("token", "ada lovelace", "--url", server.url)
        assert (code, out) == (1, "") and "userId must be" in err
        code, out, err = _regctl("token", "ada", "--group", "root", "--url", server.url)
        assert code == 1 and "unknown groups root" in err


def test_regctl_token_without_a_pool_or_on_aws() -> None:
    with LocalServer(_without_a_pool(), port=0) as server:
        code, out, err = _regctl("token", "ada", "--url", server.url)
    assert (code, out) == (1, "") and "no Cognito user pool" in err
    code, out, err = _regctl("token", "ada", "--aws")
    assert (code, out) == (1, "") and "local stack" in err
