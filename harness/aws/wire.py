"""AWS wire details: who a request is for (service, region, operation from the SigV4 scope, X-Amz-Target or
Action) and errors rendered in each protocol's real format, so botocore parses the code and retries as on AWS."""
from __future__ import annotations

import difflib
import functools
import json
import re
import threading
import uuid
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from harness.aws.server import HttpRequest, HttpResponse
from harness.errors import HarnessError

_SCOPE_RE = re.compile(r"Credential=[^/,\s]+/\d{8}/([^/,\s]+)/([^/,\s]+)/aws4_request")
_XMLNS = {
    "query": "http://{service}.amazonaws.com/doc/{version}/",
    "rest-xml": "https://{service}.amazonaws.com/doc/{version}/",
}

# code -> HTTP status, for codes a fault may name without a status.
KNOWN_CODES: dict[str, int] = {
    "ProvisionedThroughputExceededException": 400,
    "ThrottlingException": 400,
    "Throttling": 400,
    "RequestLimitExceeded": 503,
    "RequestThrottled": 403,
    "RequestThrottledException": 400,
    "TooManyRequestsException": 429,
    "SlowDown": 503,
    "LimitExceededException": 400,
    "InternalServerError": 500,
    "InternalFailure": 500,
    "InternalError": 500,
    "ServiceUnavailable": 503,
    "ServiceUnavailableException": 503,
    "RequestTimeout": 408,
    "RequestTimeoutException": 408,
    "ValidationException": 400,
    "AccessDeniedException": 400,
    "AccessDenied": 403,
    "ResourceNotFoundException": 400,
    "ConditionalCheckFailedException": 400,
    "TransactionConflictException": 400,
}

# Data-plane DynamoDB operations throttle with ProvisionedThroughputExceededException; the control plane
# (CreateTable, UpdateTable...) with ThrottlingException / LimitExceededException.
DYNAMODB_DATA_OPS = frozenset({
    "GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan", "BatchGetItem", "BatchWriteItem",
    "TransactGetItems", "TransactWriteItems", "ExecuteStatement", "BatchExecuteStatement", "ExecuteTransaction",
})


class UnknownServiceError(HarnessError):
    """A service or operation name botocore does not know."""


@dataclass
class RequestInfo:
    """What an incoming request is: signing service and region from the SigV4 scope, the JSON target
    ("DynamoDB_20120810.PutItem") or the query Action, and the form/query parameters if any."""

    signing_name: str | None
    region: str | None
    target: str | None
    action: str | None
    params: dict[str, list[str]] = field(default_factory=dict)

    @property
    def target_prefix(self) -> str | None:
        return self.target.split(".", 1)[0] if self.target else None

    @property
    def operation(self) -> str | None:
        """The operation when the wire says it (JSON target or query Action); REST needs a ServiceSpec."""
        if self.target and "." in self.target:
            return self.target.split(".", 1)[1]
        return self.action


def identify(request: HttpRequest) -> RequestInfo:
    signing = region = None
    auth = request.header("authorization")
    scope = auth or request.query
    if scope:
        m = _SCOPE_RE.search(scope) or _SCOPE_RE.search(scope.replace("%2F", "/"))
        if m:
            region, signing = m.group(1), m.group(2).lower()
    target = request.header("x-amz-target") or None
    action = None
    params: dict[str, list[str]] = {}
    if not target:
        if request.query:
            params = parse_qs(request.query)
        if request.header("content-type").startswith("application/x-www-form-urlencoded") and request.body:
            params.update(parse_qs(request.body.decode("utf-8", "replace")))
        action = params.get("Action", [None])[0]
    return RequestInfo(signing, region, target, action, params)


@functools.lru_cache(maxsize=1)
def _botocore_session() -> Any:
    import botocore.session

    return botocore.session.get_session()


_spec_lock = threading.Lock()
_specs: dict[str, ServiceSpec] = {}


@dataclass
class ServiceSpec:
    """What botocore's model says of one service: enough to recognise its requests and answer errors."""

    name: str
    signing_name: str
    protocol: str
    target_prefix: str | None
    json_version: str
    api_version: str
    endpoint_prefix: str
    query_compatible: bool
    operations: frozenset[str]
    _rest: list[tuple[str, re.Pattern[str], str]] = field(default_factory=list, repr=False)

    def matches(self, info: RequestInfo) -> bool:
        if info.signing_name != self.signing_name:
            return False
        if self.target_prefix is not None:
            return info.target_prefix == self.target_prefix
        return True

    def operation_of(self, info: RequestInfo, request: HttpRequest) -> str | None:
        op = info.operation
        if op is not None or self.protocol not in ("rest-json", "rest-xml"):
            return op
        path = request.path
        for method, pattern, name in self._rest:
            if method == request.method and pattern.fullmatch(path):
                return name
        return None

    def canonical_operation(self, name: str) -> str:
        """'put_item' or 'PutItem' -> 'PutItem'; UnknownServiceError naming close matches otherwise."""
        if name in self.operations:
            return name
        from botocore import xform_name

        by_snake = {xform_name(o): o for o in self.operations}
        if name in by_snake:
            return by_snake[name]
        close = difflib.get_close_matches(name, sorted(self.operations), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownServiceError(f"{self.name} has no operation {name!r}.{hint} "
                                  f"(botocore's model lists {len(self.operations)} operations)")


def _rest_pattern(uri: str) -> re.Pattern[str]:
    path = uri.split("?", 1)[0].rstrip("/") or "/"
    out = []
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{"):
            out.append(".+" if part.endswith("+}") else "[^/]+")
        else:
            out.append(re.escape(part))
    return re.compile("".join(out) + "/?")


def service_spec(name: str) -> ServiceSpec:
    """The spec of botocore service ``name`` ("dynamodb", "rds", "sqs"...), cached."""
    with _spec_lock:
        if name in _specs:
            return _specs[name]
    session = _botocore_session()
    available = session.get_available_services()
    if name not in available:
        close = difflib.get_close_matches(name, available, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownServiceError(f"unknown AWS service {name!r}.{hint} Use botocore's service names "
                                  "(as in boto3.client(NAME)).")
    model = session.get_service_model(name)
    meta = model.metadata
    rest: list[tuple[str, re.Pattern[str], str]] = []
    if model.protocol in ("rest-json", "rest-xml"):
        for op_name in model.operation_names:
            http = model.operation_model(op_name).http
            rest.append((http.get("method", "POST"), _rest_pattern(http.get("requestUri", "/")), op_name))
        # Longest literal prefix first so /hostedzone/{Id}/rrset wins over /hostedzone/{Id}.
        rest.sort(key=lambda r: -len(r[1].pattern))
    spec = ServiceSpec(
        name=name, signing_name=(model.signing_name or meta.get("endpointPrefix", name)).lower(),
        protocol=model.protocol, target_prefix=meta.get("targetPrefix"),
        json_version=meta.get("jsonVersion", "1.0"), api_version=meta.get("apiVersion", ""),
        endpoint_prefix=meta.get("endpointPrefix", name), query_compatible="awsQueryCompatible" in meta,
        operations=frozenset(model.operation_names), _rest=rest,
    )
    with _spec_lock:
        _specs[name] = spec
    return spec


def guess_protocol(info: RequestInfo, request: HttpRequest) -> str:
    """The protocol a request speaks, from its shape alone (used when no service model is at hand)."""
    if info.target:
        return "json"
    if info.action:
        return "ec2" if info.signing_name == "ec2" else "query"
    ctype = request.header("content-type")
    return "rest-json" if "json" in ctype or "json" in request.header("accept") else "rest-xml"


def new_request_id() -> str:
    return str(uuid.uuid4())


def json_response(status: int, payload: dict[str, Any], *, json_version: str = "1.0",
                  crc32: bool = False, headers: list[tuple[str, str]] | None = None) -> HttpResponse:
    body = json.dumps(payload, separators=(",", ":")).encode()
    hdrs = [("Content-Type", f"application/x-amz-json-{json_version}"), ("x-amzn-RequestId", new_request_id())]
    if crc32:
        hdrs.append(("x-amz-crc32", str(zlib.crc32(body) & 0xFFFFFFFF)))
    return HttpResponse(status, hdrs + (headers or []), body)


def error_response(protocol: str, code: str, message: str, status: int, *, spec: ServiceSpec | None = None,
                   signing_name: str | None = None, json_version: str | None = None) -> HttpResponse:
    """An AWS error as ``protocol`` ("json", "query", "ec2", "rest-xml", "rest-json") puts it on the wire."""
    request_id = new_request_id()
    sender = "Receiver" if status >= 500 else "Sender"
    service = (spec.endpoint_prefix if spec else signing_name) or "aws"
    version = spec.api_version if spec else ""
    if protocol == "json":
        jv = json_version or (spec.json_version if spec else "1.0")
        namespace = f"com.amazonaws.{service}.v{version.replace('-', '')}#" if version else ""
        extra = [("x-amzn-query-error", f"{code};{sender}")] if spec is not None and spec.query_compatible else []
        return json_response(status, {"__type": f"{namespace}{code}", "message": message}, json_version=jv,
                             crc32=service == "dynamodb", headers=extra)
    if protocol == "rest-json":
        body = json.dumps({"__type": code, "message": message}).encode()
        return HttpResponse(status, [("Content-Type", "application/json"), ("x-amzn-ErrorType", code),
                                     ("x-amzn-RequestId", request_id)], body)
    if protocol == "ec2":
        xml = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{escape(code)}</Code>"
               f"<Message>{escape(message)}</Message></Error></Errors><RequestID>{request_id}</RequestID></Response>")
        return HttpResponse(status, [("Content-Type", "text/xml")], xml.encode())
    if protocol == "rest-xml" and service == "s3":
        xml = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{escape(code)}</Code><Message>"
               f"{escape(message)}</Message><RequestId>{request_id}</RequestId></Error>")
        return HttpResponse(status, [("Content-Type", "application/xml"), ("x-amz-request-id", request_id)],
                            xml.encode())
    ns = _XMLNS.get(protocol, _XMLNS["query"]).format(service=service, version=version or "2010-01-01")
    xml = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ErrorResponse xmlns=\"{ns}\"><Error><Type>{sender}</Type>"
           f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
           f"<RequestId>{request_id}</RequestId></ErrorResponse>")
    return HttpResponse(status, [("Content-Type", "text/xml"), ("x-amzn-RequestId", request_id)], xml.encode())


def throttle_code(spec: ServiceSpec, operation: str | None) -> tuple[str, int]:
    """The throttling error this service really answers for ``operation``."""
    if spec.name == "dynamodb" and (operation is None or operation in DYNAMODB_DATA_OPS):
        return "ProvisionedThroughputExceededException", 400
    if spec.name == "s3":
        return "SlowDown", 503
    if spec.protocol == "ec2":
        return "RequestLimitExceeded", 503
    if spec.name == "sqs":
        return "RequestThrottled", 403
    if spec.protocol in ("json", "rest-json"):
        return "ThrottlingException", 400
    return "Throttling", 400


def internal_code(spec: ServiceSpec) -> tuple[str, int]:
    if spec.name in ("dynamodb", "dynamodbstreams"):
        return "InternalServerError", 500
    if spec.name == "s3":
        return "InternalError", 500
    return "InternalFailure", 500


def unavailable_code(spec: ServiceSpec) -> tuple[str, int]:
    if spec.name == "s3":
        return "ServiceUnavailable", 503
    if spec.protocol in ("json", "rest-json"):
        return "ServiceUnavailableException" if spec.name != "dynamodb" else "ServiceUnavailable", 503
    return "ServiceUnavailable", 503
