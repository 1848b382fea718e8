"""The Toxiproxy v2 HTTP API over asyncio streams (HTTP/1.1, keep-alive): routes, JSON shapes, status codes
and error bodies as Toxiproxy answers them."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote, urlsplit

from harness.proxy.listener import DEFAULT_HOST, Proxy, ProxyCollection, ProxyInput
from harness.proxy.toxics import STREAMS, TYPES, ApiError, ToxicSpec, bad_body, check_toxicity, make_toxic

logger = logging.getLogger(__name__)

VERSION = "2.12.0-dbdrill"
MAX_HEAD = 64 * 1024
MAX_BODY = 16 * 1024 * 1024
IDLE_TIMEOUT = 60.0
READ_TIMEOUT = 15.0

Response = tuple[int, bytes, str]
JSON_TYPE = "application/json"


def _json(status: int, obj: Any) -> Response:
    return status, json.dumps(obj, separators=(",", ":")).encode(), JSON_TYPE


def _no_constants(name: str) -> Any:
    raise ValueError(f"invalid number {name}")


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise bad_body("EOF")
    try:
        return json.loads(body, parse_constant=_no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_body(str(exc)) from None


def _field(obj: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = obj.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise bad_body(f"field {key} must be a {kind.__name__}, got {value!r}")
    return value


def _object(body: bytes) -> dict[str, Any]:
    obj = parse_json(body)
    if not isinstance(obj, dict):
        raise bad_body(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def proxy_input(obj: Any, where: str = "") -> ProxyInput:
    if not isinstance(obj, dict):
        raise bad_body(f"expected a JSON object{where}, got {type(obj).__name__}")
    name = _field(obj, "name", str, "")
    upstream = _field(obj, "upstream", str, "")
    listen = _field(obj, "listen", str, "")
    enabled = _field(obj, "enabled", bool, True)
    if not name:
        raise ApiError(f"missing required field: name{where}", 400)
    if not upstream:
        raise ApiError(f"missing required field: upstream{where}", 400)
    return ProxyInput(name=name, listen=listen, upstream=upstream, enabled=enabled)


class Api:
    """Request handlers over one ProxyCollection; every handler runs under the collection's lock, so
    requests apply one at a time and in order."""

    def __init__(self, proxies: ProxyCollection) -> None:
        self.proxies = proxies

    async def dispatch(self, method: str, path: str, body: bytes) -> Response:
        parts = [unquote(p) for p in path.split("/")[1:]]
        route = self._route(parts)
        if route is None:
            return 404, b"404 page not found\n", "text/plain; charset=utf-8"
        handlers, args = route
        if method == "PATCH" and len(parts) in (2, 4):
            method = "POST"  # PATCH is the newer spelling of a proxy or toxic update
        handler = handlers.get(method)
        if handler is None:
            return 405, b"", "text/plain; charset=utf-8"
        try:
            async with self.proxies.lock:
                return await handler(*args, body)
        except ApiError as exc:
            return self.error(exc)
        except Exception as exc:
            # As Toxiproxy: an error without a status is a 500; the server goes on.
            logger.exception("%s %s failed", method, path)
            return self.error(ApiError(f"{type(exc).__name__}: {exc}", 500))

    @staticmethod
    def error(exc: ApiError) -> Response:
        body = json.dumps({"error": exc.message, "status": exc.status}, separators=(",", ":")) + "\n"
        return exc.status, body.encode(), "text/plain; charset=utf-8"

    def _route(self, p: list[str]) -> tuple[dict[str, Callable[..., Awaitable[Response]]], list[str]] | None:
        if p == ["version"]:
            return {"GET": self.version}, []
        if p == ["reset"]:
            return {"POST": self.reset}, []
        if p == ["populate"]:
            return {"POST": self.populate}, []
        if p == ["proxies"]:
            return {"GET": self.proxy_index, "POST": self.proxy_create}, []
        if len(p) == 2 and p[0] == "proxies" and p[1]:
            return {"GET": self.proxy_show, "POST": self.proxy_update, "DELETE": self.proxy_delete}, p[1:]
        if len(p) == 3 and p[0] == "proxies" and p[1] and p[2] == "toxics":
            return {"GET": self.toxic_index, "POST": self.toxic_create}, p[1:2]
        if len(p) == 4 and p[0] == "proxies" and p[1] and p[2] == "toxics" and p[3]:
            return {"GET": self.toxic_show, "POST": self.toxic_update, "DELETE": self.toxic_delete}, [p[1], p[3]]
        return None

    # -- handlers ----------------------------------------------------------------------------------
    async def version(self, body: bytes) -> Response:
        return 200, f'{{"version": "{VERSION}"}}\n'.encode(), "application/json;charset=utf-8"

    async def reset(self, body: bytes) -> Response:
        await self.proxies.reset()
        return 204, b"", ""

    async def proxy_index(self, body: bytes) -> Response:
        return _json(200, {name: p.to_json() for name, p in sorted(self.proxies.proxies.items())})

    async def proxy_create(self, body: bytes) -> Response:
        proxy = await self.proxies.create(proxy_input(_object(body)))
        return _json(201, proxy.to_json())

    async def populate(self, body: bytes) -> Response:
        items = parse_json(body)
        if not isinstance(items, list):
            raise bad_body(f"expected a JSON array of proxies, got {type(items).__name__}")
        inputs = [proxy_input(item, f" at proxy {i + 1}") for i, item in enumerate(items)]
        done, err = await self.proxies.populate(inputs)
        out: dict[str, Any] = {"proxies": [p.to_json() for p in done]}
        if err is not None:
            return _json(err.status, {"error": err.message, "status": err.status, **out})
        return _json(201, out)

    async def proxy_show(self, name: str, body: bytes) -> Response:
        return _json(200, self.proxies.get(name).to_json())

    async def proxy_update(self, name: str, body: bytes) -> Response:
        proxy = self.proxies.get(name)
        obj = _object(body)
        listen = _field(obj, "listen", str, proxy.listen) or f"{DEFAULT_HOST}:0"
        upstream = _field(obj, "upstream", str, proxy.upstream)
        enabled = _field(obj, "enabled", bool, proxy.enabled)
        await self.proxies.update(proxy, listen, upstream, enabled)
        return _json(200, proxy.to_json())

    async def proxy_delete(self, name: str, body: bytes) -> Response:
        self.proxies.delete(name)
        return 204, b"", ""

    async def toxic_index(self, name: str, body: bytes) -> Response:
        return _json(200, [t.to_json() for t in self.proxies.get(name).toxics()])

    async def toxic_create(self, name: str, body: bytes) -> Response:
        proxy: Proxy = self.proxies.get(name)
        obj = _object(body)
        stream = _field(obj, "stream", str, "downstream").lower()
        if stream not in STREAMS:
            raise ApiError("stream was invalid, can be either upstream or downstream", 400)
        toxic_type = _field(obj, "type", str, "")
        toxic_name = _field(obj, "name", str, "") or f"{toxic_type}_{stream}"
        toxicity = check_toxicity(obj.get("toxicity", 1.0))
        if toxic_type not in TYPES:
            raise ApiError("invalid toxic type", 400)
        if any(t.name == toxic_name for t in proxy.toxics()):
            raise ApiError("toxic already exists", 409)
        toxic = make_toxic(toxic_type, obj.get("attributes"))
        spec = ToxicSpec(name=toxic_name, stream=stream, toxicity=toxicity, toxic=toxic)
        proxy.add_toxic(spec)
        return _json(200, spec.to_json())

    async def toxic_show(self, name: str, toxic: str, body: bytes) -> Response:
        return _json(200, self.proxies.get(name).find_toxic(toxic).to_json())

    async def toxic_update(self, name: str, toxic: str, body: bytes) -> Response:
        proxy = self.proxies.get(name)
        spec = proxy.find_toxic(toxic)
        obj = _object(body)
        new_toxic = make_toxic(spec.type, obj.get("attributes"), base=spec.toxic.attrs)
        toxicity = check_toxicity(obj["toxicity"]) if "toxicity" in obj else spec.toxicity
        spec.toxic, spec.toxicity = new_toxic, toxicity
        proxy.update_toxic(spec)
        return _json(200, spec.to_json())

    async def toxic_delete(self, name: str, toxic: str, body: bytes) -> Response:
        proxy = self.proxies.get(name)
        proxy.remove_toxic(proxy.find_toxic(toxic))
        return 204, b"", ""


class HttpServer:
    """A small HTTP/1.1 server for the API; tracks its connections so stop() can close them."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        self.server = await asyncio.start_server(self._serve, host, port, reuse_address=True, limit=MAX_HEAD)
        addr = self.server.sockets[0].getsockname()
        return addr[0], addr[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        tasks = list(self._tasks)
        for writer in list(self._writers):
            writer.transport.abort()
        # Handlers end on the aborted connections; a cancelled handler would be logged as an error.
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            while await self._one(reader, writer):
                pass
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, ValueError):
            pass
        finally:
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection should end."""
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
        lines = head.decode("latin-1").split("\r\n")
        try:
            method, target, version = lines[0].split(" ", 2)
        except ValueError:
            await self._write(writer, 400, b"400 Bad Request", "text/plain; charset=utf-8", close=True)
            return False
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                key, value = line.split(":", 1)
                headers[key.strip().lower()] = value.strip()
        body = await self._body(reader, headers)
        if body is None:
            await self._write(writer, 413, b"request body too large", "text/plain; charset=utf-8", close=True)
            return False
        conn_hdr = headers.get("connection", "").lower()
        close = conn_hdr == "close" or (version == "HTTP/1.0" and conn_hdr != "keep-alive")
        if headers.get("user-agent", "").startswith("Mozilla/"):
            # As Toxiproxy: a web page must not be able to drive the proxy from a browser.
            status, payload, ctype = 403, b"User agent not allowed\n", "text/plain; charset=utf-8"
        else:
            status, payload, ctype = await self.api.dispatch(method, urlsplit(target).path, body)
        await self._write(writer, status, payload, ctype, close=close)
        return not close

    async def _body(self, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes | None:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            size = 0
            while True:
                line = await asyncio.wait_for(reader.readuntil(b"\r\n"), READ_TIMEOUT)
                n = int(line.split(b";")[0].strip(), 16)
                size += n
                if size > MAX_BODY:
                    return None
                if n == 0:
                    await asyncio.wait_for(reader.readuntil(b"\r\n"), READ_TIMEOUT)
                    return b"".join(parts)
                parts.append(await asyncio.wait_for(reader.readexactly(n + 2), READ_TIMEOUT))
                parts[-1] = parts[-1][:-2]
        length = int(headers.get("content-length", "0") or 0)
        if length > MAX_BODY:
            return None
        return await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT) if length else b""

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str, *, close: bool) -> None:
        reason = HTTPStatus(status).phrase
        head = [f"HTTP/1.1 {status} {reason}"]
        if ctype:
            head.append(f"Content-Type: {ctype}")
        if ctype.startswith("text/plain") and status >= 400:
            head.append("X-Content-Type-Options: nosniff")
        if status != 204:
            head.append(f"Content-Length: {len(body)}")
        if close:
            head.append("Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
