"""moto's WSGI application, made faster for the hot path: host -> backend lookups memoised, moto's per-request
class introspection cached, and DynamoDB / DynamoDB Streams requests handed straight to moto's handler
(the same call moto's Flask view makes, without Flask's routing and contexts)."""
from __future__ import annotations

import base64
import functools
import logging
import random
import string
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

_speedups_done = False


_ID_CHARS = string.ascii_uppercase + string.digits


def _request_id(headerdict: dict[str, Any] | None = None) -> str:
    req_id = "".join(random.choices(_ID_CHARS, k=52))
    if isinstance(headerdict, dict):
        headerdict["x-amzn-requestid"] = req_id
    return req_id


def _attribute_value(value: dict[str, Any]) -> dict[str, Any]:
    ((kind, inner),) = value.items()
    if kind == "M":
        return {"M": {k: _attribute_value(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [_attribute_value(v) for v in inner]}
    if kind == "B" and isinstance(inner, bytes | bytearray):
        return {"B": base64.b64encode(inner).decode()}
    if kind == "BS":
        return {"BS": [base64.b64encode(b).decode() if isinstance(b, bytes | bytearray) else b for b in inner]}
    return {kind: inner}


def _install_speedups() -> None:
    global _speedups_done
    if _speedups_done:
        return
    import moto.core.responses as responses
    from moto.core import serialize

    # moto lists a handler class's methods with inspect.getmembers on every request; the list never changes.
    responses.method_names_from_class = functools.lru_cache(maxsize=None)(responses.method_names_from_class)
    responses.gen_amzn_requestid_long = _request_id

    class DynamoDBSerializer(serialize.JSONSerializer):
        """Attribute values are already in wire form: copy them instead of walking the union shape."""

        def _serialize_type_structure(self, serialized: Any, value: Any, shape: Any, key: str) -> None:
            if shape.name == "AttributeValue" and isinstance(value, dict) and len(value) == 1:
                try:
                    self._default_serialize(serialized, _attribute_value(value), shape, key)
                    return
                except (AttributeError, TypeError, ValueError):
                    pass
            super()._serialize_type_structure(serialized, value, shape, key)

    for service in ("dynamodb", "dynamodbstreams"):
        serialize.SERVICE_SPECIFIC_SERIALIZERS.setdefault(service, {})["json"] = DynamoDBSerializer
    _speedups_done = True


class MotoApp:
    """A WSGI callable serving every moto backend."""

    def __init__(self) -> None:
        from moto.core.request import Request
        from moto.dynamodb.responses import DynamoHandler
        from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        _install_speedups()
        self._dispatcher = DomainDispatcherApplication(create_backend_app)
        original = self._dispatcher.get_backend_for_host
        cache: dict[str | None, Any] = {}

        def cached(host: str | None) -> Any:
            if host not in cache:
                cache[host] = original(host)
            return cache[host]

        self._dispatcher.get_backend_for_host = cached  # type: ignore[method-assign]

        class ServerRequest(Request):
            from_wsgi_server = True

        self._request_cls = ServerRequest
        self._fast: dict[str, Callable[..., Any]] = {
            "DynamoDB_20120810": DynamoHandler.dispatch,
            "DynamoDBStreams_20120810": DynamoDBStreamsHandler.dispatch,
        }

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        fast = self._fast.get(target.split(".", 1)[0]) if target else None
        if fast is None or environ.get("PATH_INFO", "/") != "/":
            return self._dispatcher(environ, start_response)
        return self._direct(fast, environ, start_response)

    def _direct(self, handler: Callable[..., Any], environ: dict[str, Any], start_response: Any) -> list[bytes]:
        from botocore.exceptions import ClientError

        request = self._request_cls(environ)
        # What request.raw_url computes through werkzeug's URL machinery, for a JSON POST to "/".
        query = environ.get("QUERY_STRING")
        url = f"http://{environ.get('HTTP_HOST', 'localhost')}/" + (f"?{query}" if query else "")
        try:
            result = handler(request, url, dict(request.headers))
        except ClientError as exc:
            result = 400, {}, exc.response["Error"]["Message"]
        if len(result) == 3:
            status, headers, content = result
        else:
            status, headers, content = 200, {}, result
        body = content.encode() if isinstance(content, str) else bytes(content or b"")
        hdrs = [(str(k), str(v)) for k, v in (headers or {}).items() if str(k).lower() != "content-length"]
        if not any(k.lower() == "content-type" for k, _ in hdrs):
            hdrs.append(("Content-Type", "text/html; charset=utf-8"))
        start_response(f"{int(status)} X", hdrs)
        return [body]
