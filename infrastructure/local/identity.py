"""Sign-in in the local twin: the template's Cognito user pool, in moto.

:class:`LocalIdentity` creates the pool, its app client and its groups in moto's
cognito-idp (inside the engine's ``mock_aws``), issues ID tokens for any user with the
groups asked for (`regctl token`), and verifies a token as the API's Cognito authorizer
would: an RS256 signature by the pool's key, the pool as issuer, the app client as
audience, an ID token (not an access token), not expired. Every failure is one
:class:`InvalidToken` with the reason, for a 401.

moto signs every pool's tokens with the same key pair (its bundled JWKS), so the issuer
and the audience are what tell one pool or client from another, as they do on AWS.
"""

from __future__ import annotations

import contextlib
import secrets
import string
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import jwt

from infrastructure.local.template_specs import UserPoolSpec

ALGORITHM = "RS256"
SIGN_IN_FLOW = "ADMIN_USER_PASSWORD_AUTH"
REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "token_use"]
JWKS_RESOURCE = "cognitoidp/resources/jwks-public.json"

_REASONS: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
    (jwt.InvalidAudienceError, "the token is for another app client"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.InvalidAlgorithmError, f"the token is not signed with {ALGORITHM}"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
)


class InvalidToken(Exception):
    """A bearer token the API refuses (a 401); ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Caller:
    """Who a verified ID token says is calling."""

    user_id: str
    groups: frozenset[str]


def public_keys() -> jwt.PyJWKSet:
    """The key set moto signs every pool's tokens with (its `/.well-known/jwks.json`)."""
    from moto.utilities.utils import load_resource

    return jwt.PyJWKSet.from_dict(load_resource(JWKS_RESOURCE))


def _password() -> str:
    """A password no policy refuses: long, with every kind of character."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(40)) + "aA1!"


def _create_kwargs(spec: UserPoolSpec) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"PoolName": spec.name, **spec.properties}
    # Users are made here (admin_create_user); nobody signs up alone, as on AWS.
    kwargs.setdefault("AdminCreateUserConfig", {"AllowAdminCreateUserOnly": True})
    return kwargs


class LocalIdentity:
    """The template's user pool in moto: tokens for any user, and their verification.

    Thread-safe: the local server issues and checks tokens from its request threads.
    """

    def __init__(self, spec: UserPoolSpec, client: Any, region: str) -> None:
        """Creates the pool, its app client and its groups (``client``: a cognito-idp
        client of the engine's ``mock_aws``, in its region)."""
        self.spec = spec
        self._cognito = client
        pool = client.create_user_pool(**_create_kwargs(spec))["UserPool"]
        self.pool_id: str = pool["Id"]
        flows = set(spec.client.explicit_auth_flows)
        # moto reads only whether the flow is named; sign-in needs the admin flow.
        flows.add(f"ALLOW_{SIGN_IN_FLOW}")
        app_client = client.create_user_pool_client(
            UserPoolId=self.pool_id,
            ClientName=spec.client.name,
            GenerateSecret=spec.client.generate_secret,
            ExplicitAuthFlows=sorted(flows),
        )["UserPoolClient"]
        self.client_id: str = app_client["ClientId"]
        for group in spec.groups:
            extra: dict[str, Any] = {}
            if group.description is not None:
                extra["Description"] = group.description
            if group.precedence is not None:
                extra["Precedence"] = group.precedence
            client.create_group(UserPoolId=self.pool_id, GroupName=group.name, **extra)
        self.issuer = f"https://cognito-idp.{region}.amazonaws.com/{self.pool_id}"
        self._keys = public_keys()
        self._passwords: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def groups(self) -> frozenset[str]:
        """The pool's groups, by name."""
        return self.spec.group_names

    # Tokens -----------------------------------------------------------------------------

    def token(self, user_id: str, groups: Iterable[str] = ()) -> str:
        """An ID token for ``user_id``, made a member of exactly ``groups`` first (the
        user is created on first use)."""
        wanted = set(groups)
        unknown = wanted - self.groups
        if unknown:
            known = ", ".join(sorted(self.groups)) or "none"
            raise ValueError(f"unknown groups {', '.join(sorted(unknown))}; the pool has: {known}")
        with self._lock:
            password = self._passwords.get(user_id) or self._create_user(user_id)
            self._set_groups(user_id, wanted)
            answer = self._cognito.admin_initiate_auth(
                UserPoolId=self.pool_id,
                ClientId=self.client_id,
                AuthFlow=SIGN_IN_FLOW,
                AuthParameters={"USERNAME": user_id, "PASSWORD": password},
            )
        token: str = answer["AuthenticationResult"]["IdToken"]
        return token

    def _create_user(self, user_id: str) -> str:
        # A user made outside this object keeps its name; its password is replaced below.
        with contextlib.suppress(self._cognito.exceptions.UsernameExistsException):
            self._cognito.admin_create_user(
                UserPoolId=self.pool_id, Username=user_id, MessageAction="SUPPRESS"
            )
        password = _password()
        # A permanent password: the first sign-in asks for no new one.
        self._cognito.admin_set_user_password(
            UserPoolId=self.pool_id, Username=user_id, Password=password, Permanent=True
        )
        self._passwords[user_id] = password
        return password

    def _set_groups(self, user_id: str, wanted: set[str]) -> None:
        listed = self._cognito.admin_list_groups_for_user(UserPoolId=self.pool_id, Username=user_id)
        current = {group["GroupName"] for group in listed["Groups"]}
        for group in sorted(wanted - current):
            self._cognito.admin_add_user_to_group(UserPoolId=self.pool_id, Username=user_id, GroupName=group)
        for group in sorted(current - wanted):
            self._cognito.admin_remove_user_from_group(
                UserPoolId=self.pool_id, Username=user_id, GroupName=group
            )

    # Verification -----------------------------------------------------------------------

    def verify(self, token: str) -> Caller:
        """The caller an ID token of this pool's app client names; :class:`InvalidToken`
        for anything else (another pool or client, an access token, expired, forged)."""
        return self._verified(token)[1]

    def authorizer_claims(self, authorization: str | None) -> dict[str, str]:
        """What API Gateway's Cognito authorizer hands on for an `Authorization` header:
        the verified token's claims, every value a string (a list joined with commas),
        as `$context.authorizer.claims` and a proxy event's
        `requestContext.authorizer.claims` carry them. :class:`InvalidToken` otherwise."""
        claims, _ = self._verified(bearer_token(authorization))
        return {name: _claim_text(value) for name, value in claims.items()}

    def _verified(self, token: str) -> tuple[dict[str, Any], Caller]:
        claims = self._claims(token)
        if claims.get("token_use") != "id":
            raise InvalidToken(f"not an ID token (token_use {claims.get('token_use')!r})")
        user_id = claims.get("cognito:username")
        if not isinstance(user_id, str) or not user_id:
            raise InvalidToken("the token names no user (cognito:username)")
        groups = claims.get("cognito:groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise InvalidToken("the token's cognito:groups is not a list of names")
        return claims, Caller(user_id=user_id, groups=frozenset(groups))

    def _claims(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or not token:
            raise InvalidToken("no token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"not a JWT: {exc}") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidToken(f"the token is not signed with {ALGORITHM} (alg {header.get('alg')!r})")
        try:
            key = self._keys[str(header.get("kid"))].key
        except KeyError:
            raise InvalidToken(f"the token is signed by an unknown key (kid {header.get('kid')!r})") from None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.client_id,
                issuer=self.issuer,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidToken(f"the token has no {exc.claim} claim") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(_reason(exc)) from None
        return claims


def bearer_token(authorization: str | None) -> str:
    """The token of an `Authorization` header: `Bearer <token>` or the bare token, both
    of which a Cognito authorizer takes."""
    if not authorization or not authorization.strip():
        raise InvalidToken("no Authorization header")
    scheme, _, rest = authorization.strip().partition(" ")
    if rest and scheme.lower() == "bearer":
        return rest.strip()
    if rest:
        raise InvalidToken(f"the Authorization header is not a bearer token (scheme {scheme!r})")
    return scheme


def _claim_text(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _reason(exc: jwt.PyJWTError) -> str:
    for kind, reason in _REASONS:
        if isinstance(exc, kind):
            return reason
    return f"the token is malformed: {exc}"
