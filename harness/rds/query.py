"""The RDS query protocol for the operations dbdrill answers itself (moto lacks them, or dbdrill's answer must
differ): request parameters parsed into nested values and results serialised, both by moto's own parser and
serialiser against botocore's RDS model, so the answers have exactly the shapes boto3 expects."""
from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from harness.aws.server import HttpResponse
from harness.aws.wire import new_request_id

if TYPE_CHECKING:
    from harness.aws.middleware import Call


def params(call: Call) -> dict[str, Any]:
    """The request's parameters as the operation's input shape has them: lists, nested structures, ints, bools."""
    from moto.core.parse import PROTOCOL_PARSERS
    from moto.core.responses import get_service_model

    operation = get_service_model("rds").operation_model(str(call.info.operation))
    flat = {k: v[0] for k, v in call.info.params.items() if v}
    parser = PROTOCOL_PARSERS["query"](operation, map_type=dict)
    request: Any = {"method": "POST", "values": flat, "headers": {}, "body": b"", "url_path": "/", "url_params": {}}
    parsed: dict[str, Any] = parser.parse(request)
    return parsed


def respond(operation: str, result: Any) -> HttpResponse:
    """A 200 answer of ``operation`` carrying ``result`` (dicts keyed by the model's member names, or objects
    with the snake_case attributes moto uses)."""
    from moto.core.responses import get_service_model
    from moto.core.serialize import XFormedAttributePicker, get_serializer_class

    model = get_service_model("rds").operation_model(operation)
    serializer = get_serializer_class("rds", "query")(operation_model=model, pretty_print=False,
                                                      value_picker=XFormedAttributePicker())
    out = serializer.serialize(result)
    body = str(out["body"]).replace("<RequestId>request-id</RequestId>", f"<RequestId>{new_request_id()}</RequestId>")
    return HttpResponse(200, [("Content-Type", "text/xml")], body.encode())


def now() -> datetime:
    return datetime.now(UTC)
