"""Client of a Toxiproxy(-compatible) server: toxiproxy-python 0.1.1, wrapped and patched to fix its gaps.

toxiproxy-python is the mandated client; what this module changes, and why:

* Its server address lives in class attributes (``APIConsumer.host/port``): one server per process, global.
  ``APIConsumer.get/post/delete`` are replaced (once, on import) by versions that send to the server of the
  ``ToxiproxyClient`` making the call (held in a context variable, so threads and clients do not mix);
  called from elsewhere they behave as before.
* It sends ``requests`` calls without a timeout: a hung server would hang the test. The replacements pass
  a timeout (the client's, 5 s by default; also for direct callers that give none) and reuse one
  keep-alive ``requests.Session`` per client and thread.
* ``validate_response`` raises its own exceptions for 404/409/400 but lets a 500 pass (a busy listen address
  then "creates" a proxy from an error body). Every error here is a ``ToxiproxyError`` with the status and
  the parsed body.
* ``Toxiproxy.create`` lists all proxies first (an extra request, racy), ``Proxy.add_toxic`` returns
  nothing, ``Toxiproxy.version`` probes the class-level address, and there is no toxic update: those go to
  the API through ``APIConsumer`` directly; ``Proxy.destroy``/``destroy_toxic`` are used as they are.

Several pytest-xdist workers may share one external server: a client made with ``prefix`` stores its proxies
under ``prefix + name`` (callers keep using plain names) and ``reset()`` touches only its own proxies.
"""
from __future__ import annotations

import contextvars
import json
import logging
import os
import threading
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from toxiproxy.api import APIConsumer, validate_response
from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists
from toxiproxy.proxy import Proxy as _TpProxy

from harness.errors import HarnessError

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
_STATUS = {ProxyExists: 409, NotFound: 404, InvalidToxic: 400}
_HINTS = {
    404: " (check the name: proxies and toxics are made per test and deleted after it)",
    409: " (the name is taken: pick another, or delete the old one first)",
    400: " (the request was refused as given: see the message)",
    500: " (a listen address in use? pick another address or port 0)",
}
_current: contextvars.ContextVar[ToxiproxyClient | None] = contextvars.ContextVar("dbdrill_toxiproxy", default=None)


class ToxiproxyError(HarnessError):
    """The Toxiproxy API answered an error (``status`` 400/404/409/500, ``body`` its JSON), or could not be
    reached (``status`` 0)."""

    def __init__(self, message: str, *, status: int, body: Any = None, obj: Any = None) -> None:
        super().__init__(message, obj=obj)
        self.status = status
        self.body = body


def _patched(method: str, original: Any) -> classmethod[Any, Any, Any]:
    def call(cls: type, url: str, **kwargs: Any) -> Any:
        client = _current.get()
        if client is None:
            kwargs.setdefault("timeout", DEFAULT_TIMEOUT)
            return original.__func__(cls, url, **kwargs)
        response = client._session().request(method.upper(), client.url + url, timeout=client.timeout, **kwargs)
        return validate_response(response)

    call.__name__ = method
    return classmethod(call)


def _install_patch() -> None:
    if getattr(APIConsumer, "_dbdrill_patched", False):
        return
    for method in ("get", "post", "delete"):
        setattr(APIConsumer, method, _patched(method, APIConsumer.__dict__[method]))
    APIConsumer._dbdrill_patched = True


_install_patch()


def _path(*parts: str) -> str:
    return "".join("/" + quote(p, safe="") for p in parts)


class ToxiproxyClient:
    """One Toxiproxy server. Names given to and returned by this client are without its ``prefix``."""

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT, *, prefix: str = "") -> None:
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname or not parts.port:
            raise HarnessError(f"bad Toxiproxy URL {url!r}: expected http://HOST:PORT, e.g. http://127.0.0.1:8474")
        self.url = f"{parts.scheme}://{parts.netloc}"
        self.timeout = timeout
        self.prefix = prefix
        self._local = threading.local()
        self._lock = threading.Lock()
        self._created: set[str] = set()

    def __repr__(self) -> str:
        return f"<ToxiproxyClient {self.url} prefix={self.prefix!r}>"

    # -- plumbing --------------------------------------------------------------------------------------
    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        """One API call through toxiproxy-python's APIConsumer; the answer's JSON (None when empty)."""
        token = _current.set(self)
        try:
            if method == "get":
                response = APIConsumer.get(path)
            elif method == "delete":
                response = APIConsumer.delete(path)
            else:
                response = APIConsumer.post(path, json=payload)
        except (ProxyExists, NotFound, InvalidToxic) as exc:
            raw = exc.args[0] if exc.args else b""
            raise self._error(method, path, _STATUS[type(exc)], raw) from None
        except requests.RequestException as exc:
            raise ToxiproxyError(f"cannot reach Toxiproxy at {self.url} ({method.upper()} {path}): {exc}. "
                                 "Is the server running? (dbdrill proxy serve, or unset DBDRILL_TOXIPROXY_URL "
                                 "to use the embedded one)", status=0, obj=self) from exc
        finally:
            _current.reset(token)
        if response.status_code >= 400:
            raise self._error(method, path, response.status_code, response.content)
        return response.json() if response.content.strip() else None

    def _error(self, method: str, path: str, status: int, raw: Any) -> ToxiproxyError:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
        body: Any = text
        message = text.strip()
        try:
            body = json.loads(text)
            message = body.get("error", message) if isinstance(body, dict) else message
        except ValueError:
            pass
        return ToxiproxyError(f"Toxiproxy {method.upper()} {path}: {message} (HTTP {status})"
                              f"{_HINTS.get(status, '')}", status=status, body=body, obj=self)

    def _own(self, name: str) -> str:
        return self.prefix + name

    def _strip(self, proxy: dict[str, Any]) -> dict[str, Any]:
        name = proxy.get("name", "")
        if self.prefix and isinstance(name, str) and name.startswith(self.prefix):
            proxy = {**proxy, "name": name[len(self.prefix):]}
        return proxy

    # -- server ----------------------------------------------------------------------------------------
    def version(self) -> str:
        data = self._call("get", "/version")
        return str(data["version"]) if isinstance(data, dict) else str(data)

    def reset_all(self) -> None:
        """POST /reset: every proxy on the server enabled, every toxic removed (other workers' too)."""
        self._call("post", "/reset")

    def reset(self) -> None:
        """Remove the toxics of the proxies this client created and enable them again; other proxies on
        the server are left alone. Proxies deleted meanwhile are forgotten."""
        with self._lock:
            own = set(self._created)
        if not own:
            return
        current = self._call("get", "/proxies") or {}
        with self._lock:
            self._created.intersection_update(current)
        for full in sorted(own & set(current)):
            proxy = current[full]
            try:
                for toxic in proxy.get("toxics") or []:
                    self._call("delete", _path("proxies", full, "toxics", toxic["name"]))
                if not proxy.get("enabled", True):
                    self._call("post", _path("proxies", full), {"enabled": True})
            except ToxiproxyError as exc:
                if exc.status != 404:
                    raise

    def populate(self, proxies: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Create or replace several proxies at once (unchanged ones are kept, toxics and all)."""
        payload = [{**p, "name": self._own(p["name"])} for p in proxies]
        data = self._call("post", "/populate", payload) or {}
        out = [self._strip(p) for p in data.get("proxies") or []]
        with self._lock:
            self._created.update(p["name"] for p in payload)
        return out

    # -- proxies ---------------------------------------------------------------------------------------
    def create_proxy(self, name: str, listen: str, upstream: str, enabled: bool = True) -> dict[str, Any]:
        """A new proxy; the answer has ``listen`` with the real port when port 0 was asked."""
        full = self._own(name)
        data = self._call("post", "/proxies", {"name": full, "listen": listen, "upstream": upstream,
                                               "enabled": enabled})
        with self._lock:
            self._created.add(full)
        return self._strip(data)

    def get_proxy(self, name: str) -> dict[str, Any]:
        return self._strip(self._call("get", _path("proxies", self._own(name))))

    def proxies(self) -> dict[str, dict[str, Any]]:
        """The proxies on the server (only this client's prefix, names without it, when it has one)."""
        data = self._call("get", "/proxies") or {}
        out = {}
        for full, proxy in data.items():
            if full.startswith(self.prefix):
                out[full[len(self.prefix):]] = self._strip(proxy)
        return out

    def update_proxy(self, name: str, *, enabled: bool | None = None, listen: str | None = None,
                     upstream: str | None = None) -> dict[str, Any]:
        changes = {k: v for k, v in (("enabled", enabled), ("listen", listen), ("upstream", upstream))
                   if v is not None}
        return self._strip(self._call("post", _path("proxies", self._own(name)), changes))

    def delete_proxy(self, name: str) -> None:
        full = self._own(name)
        token = _current.set(self)
        try:
            _TpProxy(name=full, upstream="", enabled=True, listen="").destroy()
        except NotFound as exc:
            raise self._error("delete", _path("proxies", full), 404, exc.args[0] if exc.args else b"") from None
        except requests.RequestException as exc:
            raise ToxiproxyError(f"cannot reach Toxiproxy at {self.url}: {exc}", status=0, obj=self) from exc
        finally:
            _current.reset(token)
        with self._lock:
            self._created.discard(full)

    # -- toxics ----------------------------------------------------------------------------------------
    def add_toxic(self, proxy: str, type: str, attributes: dict[str, Any] | None = None, *,
                  stream: str = "downstream", toxicity: float = 1.0, name: str | None = None) -> dict[str, Any]:
        """A toxic on ``proxy``; its name defaults to ``<type>_<stream>``. Returns the toxic as stored."""
        payload = {"name": name or f"{type}_{stream}", "type": type, "stream": stream, "toxicity": toxicity,
                   "attributes": attributes or {}}
        data: dict[str, Any] = self._call("post", _path("proxies", self._own(proxy), "toxics"), payload)
        return data

    def update_toxic(self, proxy: str, name: str, *, attributes: dict[str, Any] | None = None,
                     toxicity: float | None = None) -> dict[str, Any]:
        """Change some attributes and/or the toxicity; live connections pick the change up at once."""
        payload: dict[str, Any] = {}
        if attributes is not None:
            payload["attributes"] = attributes
        if toxicity is not None:
            payload["toxicity"] = toxicity
        data: dict[str, Any] = self._call("post", _path("proxies", self._own(proxy), "toxics", name), payload)
        return data

    def remove_toxic(self, proxy: str, name: str) -> None:
        full = self._own(proxy)
        token = _current.set(self)
        try:
            ok = _TpProxy(name=full, upstream="", enabled=True, listen="").destroy_toxic(name)
        except NotFound as exc:
            raise self._error("delete", _path("proxies", full, "toxics", name), 404,
                              exc.args[0] if exc.args else b"") from None
        except requests.RequestException as exc:
            raise ToxiproxyError(f"cannot reach Toxiproxy at {self.url}: {exc}", status=0, obj=self) from exc
        finally:
            _current.reset(token)
        if not ok:
            raise ToxiproxyError(f"Toxiproxy DELETE toxic {name} of {proxy} failed", status=500, obj=self)

    def toxics(self, proxy: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self._call("get", _path("proxies", self._own(proxy), "toxics")) or []
        return data

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None


_default: ToxiproxyClient | None = None


def worker_prefix() -> str:
    """``gw0-`` in pytest-xdist worker gw0, else empty: keeps workers' proxies apart on a shared server."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return f"{worker}-" if worker else ""


def set_default_client(client: ToxiproxyClient | None) -> None:
    """The client faults use when none is given (the plugin sets the stack's)."""
    global _default
    _default = client


_pushed: list[ToxiproxyClient] = []


def push_default_client(client: ToxiproxyClient) -> None:
    """Make ``client`` the default until ``pop_default_client(client)``; stacks nest (a stack started inside a
    test, a pytester run in the same process) and the outer default comes back when the inner one ends."""
    _pushed.append(client)
    set_default_client(client)


def pop_default_client(client: ToxiproxyClient) -> None:
    """Forget ``client`` as a default; the newest one still pushed (or none) becomes the default again."""
    if client in _pushed:
        _pushed.remove(client)
    if _default is client:
        set_default_client(_pushed[-1] if _pushed else None)


def current_default() -> ToxiproxyClient | None:
    """The default client if one was set (None otherwise): for cleanup that must not start anything."""
    return _default


def default_client() -> ToxiproxyClient:
    if _default is None:
        raise HarnessError("no Toxiproxy client: use the `toxiproxy` fixture (or Stack.toxiproxy) first, pass "
                           "client=, or call harness.toxiproxy.set_default_client(ToxiproxyClient(url))")
    return _default
