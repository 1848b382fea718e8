"""moto's WSGI application, made faster for the hot path: host -> backend lookups memoised, moto's per-request
class introspection cached, and DynamoDB / DynamoDB Streams requests handed straight to moto's handler
(the same call moto's Flask view makes, without Flask's routing and contexts)."""
from __future__ import annotations

import base64
import functools
import logging
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

logger = logging.getLogger(__name__)

_speedups_lock = threading.Lock()
_installed = 0
_saved: list[tuple[Any, str, Any]] = []


def _request_id(headerdict: dict[str, Any] | None = None) -> str:
    req_id = base64.b32encode(os.urandom(35)).decode()[:52]  # 52 of A-Z2-7, as moto's are A-Z0-9
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


_generation = 0


def backends_generation() -> int:
    """Changes whenever moto's backends are reset (cached backend objects are stale then)."""
    return _generation


_ATTRIBUTE_KINDS = frozenset({"S", "N", "B", "SS", "NS", "BS", "M", "L", "NULL", "BOOL"})


def _parse_attribute_value(value: dict[str, Any]) -> dict[str, Any]:
    """What moto's shape-walking parser makes of one AttributeValue: binaries base64-decoded, the rest as is."""
    ((kind, inner),) = value.items()
    if kind not in _ATTRIBUTE_KINDS:
        raise ValueError(kind)
    if kind == "M":
        return {"M": {k: _parse_attribute_value(v) for k, v in inner.items()}}
    if kind == "L":
        return {"L": [_parse_attribute_value(v) for v in inner]}
    if kind == "B":
        return {"B": base64.b64decode(inner)}
    if kind == "BS":
        return {"BS": [base64.b64decode(b) for b in inner]}
    return {kind: inner}


def _json_parser_class() -> Any:
    from moto.core.parse import JSONParser

    class DynamoDBParser(JSONParser):
        """Attribute values parsed by their one-letter type instead of walking the union shape."""

        def _parse_structure(self, shape: Any, value: Any) -> Any:
            if shape.name == "AttributeValue" and isinstance(value, dict) and len(value) == 1:
                try:
                    return _parse_attribute_value(value)
                except (AttributeError, TypeError, ValueError):
                    pass
            return super()._parse_structure(shape, value)

    return DynamoDBParser


def install_speedups() -> None:
    """Patch moto for speed while an endpoint runs (counted; the last ``uninstall_speedups`` restores moto)."""
    global _installed
    import moto.core.responses as responses
    from moto.core import serialize
    from moto.core.base_backend import BackendDict

    with _speedups_lock:
        _installed += 1
        if _installed > 1:
            return
        original_reset = BackendDict.reset.__func__  # type: ignore[attr-defined]

        def reset(cls: Any) -> None:
            global _generation
            _generation += 1
            original_reset(cls)

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

        _saved.append((BackendDict, "reset", BackendDict.__dict__["reset"]))
        BackendDict.reset = classmethod(reset)  # type: ignore[assignment,method-assign]
        # moto lists a handler class's methods with inspect.getmembers on every request; they never change.
        _saved.append((responses, "method_names_from_class", responses.method_names_from_class))
        responses.method_names_from_class = functools.lru_cache(maxsize=None)(responses.method_names_from_class)
        _saved.append((responses, "gen_amzn_requestid_long", responses.gen_amzn_requestid_long))
        responses.gen_amzn_requestid_long = _request_id
        for service in ("dynamodb", "dynamodbstreams"):
            table = serialize.SERVICE_SPECIFIC_SERIALIZERS.setdefault(service, {})
            _saved.append((table, "json", table.get("json")))
            table["json"] = DynamoDBSerializer


def uninstall_speedups() -> None:
    global _installed
    with _speedups_lock:
        if _installed == 0:
            return
        _installed -= 1
        if _installed:
            return
        for owner, name, original in reversed(_saved):
            if isinstance(owner, dict):
                if original is None:
                    owner.pop(name, None)
                else:
                    owner[name] = original
            else:
                setattr(owner, name, original)
        _saved.clear()


def _lean_handler(handler_cls: Any) -> Any:
    """``handler_cls`` whose per-request setup skips what a JSON POST to "/" cannot use (form parsing,
    query-string guesses over the JSON body); anything else goes through moto's own setup."""
    from collections import OrderedDict
    from urllib.parse import urlparse

    from moto.core.utils import get_service_model
    from moto.iam.models import mark_account_as_visited
    from moto.utilities.utils import get_partition

    parser_cls = _json_parser_class()

    def parse_parameters(self: Any, request: Any) -> None:
        operation_model = get_service_model(self.boto3_service_name).operation_model(self._get_action())
        parser = parser_cls(operation_model, map_type=self.PROTOCOL_PARSER_MAP_TYPE)
        self.params = parser.parse({"method": request.method, "values": {}, "headers": request.headers,
                                    "body": self.raw_body, "url_path": request.path, "url_params": self.uri_match})

    def setup_class(self: Any, request: Any, full_url: str | None = None, headers: Any = None,
                    use_raw_body: bool | None = None) -> None:
        if use_raw_body or self.use_raw_body or full_url is None or request.content_encoding:
            handler_cls.setup_class(self, request, full_url, headers, use_raw_body)
            return
        self.is_werkzeug_request = True
        self.normalized_request = request
        self.parsed_url = urlparse(full_url)
        self.raw_body = request.get_data()
        self.body = self.raw_body.decode("utf-8")
        self.form_data = {}
        self.uri = full_url
        self.path = self.raw_path = self.parsed_url.path
        self.querystring = self.data = OrderedDict()
        self.method = request.method
        self.region = self.get_region_from_url(request, full_url)
        self.partition = get_partition(self.region)
        self.uri_match = {}
        self.headers = request.headers
        self.response_headers = {"server": "amazon.com"}
        if self.automated_parameter_parsing and self._get_action():
            parse_parameters(self, request)
        self.access_key = self.get_access_key()
        self.current_account = self.get_current_account()
        mark_account_as_visited(account_id=self.current_account, access_key=self.access_key,
                                service=self.service_name, region=self.region)

    return type(f"Lean{handler_cls.__name__}", (handler_cls,), {"setup_class": setup_class})


class MotoApp:
    """A WSGI callable serving every moto backend."""

    def __init__(self) -> None:
        from moto.core.request import Request
        from moto.dynamodb.responses import DynamoHandler
        from moto.dynamodbstreams.responses import DynamoDBStreamsHandler
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

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
            "DynamoDB_20120810": _lean_handler(DynamoHandler).dispatch,
            "DynamoDBStreams_20120810": _lean_handler(DynamoDBStreamsHandler).dispatch,
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
            result = handler(request, url, environ.get("dbdrill.headers") or dict(request.headers))
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
