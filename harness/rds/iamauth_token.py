"""IAM database auth tokens: what ``rds.generate_db_auth_token`` makes (a SigV4-presigned ``connect`` URL for the
``rds-db`` service, without its scheme) and the check an RDS endpoint makes before it lets the user in."""
from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlsplit

SERVICE = "rds-db"
ALGORITHM = "AWS4-HMAC-SHA256"
MAX_AGE = 900  # seconds: a token is valid for 15 minutes after X-Amz-Date
CLOCK_SKEW = 300  # a token dated this far in the future is still accepted (SigV4's usual allowance)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()  # the SDKs sign the presigned GET with an empty body
PAM_LIMIT = 511  # bytes of a password PAM passes on (PAM_MAX_RESP_SIZE - 1): longer tokens arrive cut
_REQUIRED = ("Action", "DBUser", "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
             "X-Amz-SignedHeaders", "X-Amz-Signature")


class TokenRejected(Exception):
    """The token does not let this user in; ``reason`` says why (kept short: it goes to logs and tests)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class AuthToken:
    """A parsed token. ``host`` is ``name:port`` as signed; ``issued`` epoch seconds of X-Amz-Date."""

    host: str
    params: tuple[tuple[str, str], ...]
    user: str
    access_key: str
    scope_date: str
    region: str
    service: str
    amz_date: str
    issued: float
    expires: int
    signature: str

    @property
    def valid_until(self) -> float:
        return self.issued + min(self.expires, MAX_AGE)


def parse_token(token: str) -> AuthToken:
    """Split a token into its parts; TokenRejected when it is not one (e.g. a plain password)."""
    token = token.strip().rstrip("\x00")
    if "/?" not in token or "X-Amz-Signature=" not in token:
        if len(token.encode()) >= PAM_LIMIT and "X-Amz-" in token:
            raise TokenRejected(f"token cut at {PAM_LIMIT} bytes by PAM (a token with a session token is too "
                                "long for dbdrill's PAM check: sign with long-term keys)")
        raise TokenRejected("not an IAM auth token (a password was given to an IAM login)")
    split = urlsplit("https://" + token)
    pairs = parse_qsl(split.query, keep_blank_values=True, strict_parsing=False)
    params = dict(pairs)
    missing = [k for k in _REQUIRED if k not in params]
    if missing or split.path != "/":
        raise TokenRejected(f"malformed token (missing {', '.join(missing) or 'path /'})")
    if params["Action"] != "connect":
        raise TokenRejected(f"token action {params['Action']!r} is not connect")
    if params["X-Amz-Algorithm"] != ALGORITHM:
        raise TokenRejected(f"token algorithm {params['X-Amz-Algorithm']!r} is not {ALGORITHM}")
    cred = params["X-Amz-Credential"].split("/")
    if len(cred) != 5 or cred[4] != "aws4_request":
        raise TokenRejected("malformed X-Amz-Credential")
    try:
        issued = float(calendar.timegm(time.strptime(params["X-Amz-Date"], "%Y%m%dT%H%M%SZ")))
        expires = int(params["X-Amz-Expires"])
    except ValueError as exc:
        raise TokenRejected(f"malformed token date or expiry: {exc}") from None
    return AuthToken(host=split.netloc, params=tuple(pairs), user=params["DBUser"], access_key=cred[0],
                     scope_date=cred[1], region=cred[2], service=cred[3], amz_date=params["X-Amz-Date"],
                     issued=issued, expires=expires, signature=params["X-Amz-Signature"])


def _encode(value: str) -> str:
    return quote(value, safe="-_.~")


def signature(tok: AuthToken, secret_key: str) -> str:
    """The SigV4 signature of ``tok``'s presigned GET as ``secret_key`` would make it."""
    query = "&".join(f"{_encode(k)}={_encode(v)}" for k, v in sorted(tok.params) if k != "X-Amz-Signature")
    canonical = "\n".join(["GET", "/", query, f"host:{tok.host}", "", "host", EMPTY_SHA256])
    scope = f"{tok.scope_date}/{tok.region}/{tok.service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, tok.amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret_key).encode()
    for part in (tok.scope_date, tok.region, tok.service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify_token(token: str, *, host: str, port: int, user: str, region: str, credentials: Mapping[str, str],
                 now: float, aliases: Sequence[str] = ()) -> AuthToken:
    """Check ``token`` as RDS does for a login of ``user`` at ``host:port`` in ``region`` at emulated epoch ``now``:
    signed for that endpoint (or one of its ``aliases``, other names of the same server), user and region by a
    known access key (``credentials``: key id -> secret), and not older than 15 minutes. Returns the parsed
    token; TokenRejected with the reason otherwise."""
    tok = parse_token(token)
    if tok.user != user:
        raise TokenRejected(f"token is for user {tok.user!r}, not {user!r}")
    if tok.host.lower() not in {f"{name}:{port}".lower() for name in (host, *aliases)}:
        raise TokenRejected(f"token is for {tok.host!r}, not {host}:{port}")
    if tok.service != SERVICE:
        raise TokenRejected(f"token is signed for service {tok.service!r}, not {SERVICE}")
    if tok.region != region:
        raise TokenRejected(f"token is signed for region {tok.region!r}, not {region}")
    if tok.scope_date != tok.amz_date[:8]:
        raise TokenRejected("token credential date does not match X-Amz-Date")
    secret = credentials.get(tok.access_key)
    if secret is None:
        raise TokenRejected(f"unknown access key {tok.access_key!r}")
    if not hmac.compare_digest(signature(tok, secret), tok.signature.lower()):
        raise TokenRejected("signature does not match")
    if now > tok.valid_until:
        raise TokenRejected(f"token expired {now - tok.valid_until:.0f} s ago (valid {MAX_AGE} s after X-Amz-Date)")
    if tok.issued > now + CLOCK_SKEW:
        raise TokenRejected(f"token is dated {tok.issued - now:.0f} s in the future")
    return tok
