"""Network faults on fault proxies (Toxiproxy toxics, enable/disable), driven through the Toxiproxy HTTP API:
latency, partition, blackhole, bandwidth, slow close, reset, timeout, data limit, slicing, any toxic."""
from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from typing import Any

from faults.base import Fault, FaultError
from harness.errors import HarnessError
from harness.proxy.toxics import STREAMS, TYPES, ApiError, check_toxicity, make_toxic
from harness.toxiproxy import ToxiproxyClient, ToxiproxyError, default_client

Proxies = str | Sequence[str]
STREAM_CHOICES = (*STREAMS, "both")


def _names(proxies: Proxies, kind: str) -> list[str]:
    names = [proxies] if isinstance(proxies, str) else list(proxies)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise FaultError(f"{kind}: give a proxy name or a list of proxy names, got {proxies!r}")
    return names


def _streams(stream: str, kind: str) -> tuple[str, ...]:
    if stream not in STREAM_CHOICES:
        raise FaultError(f"{kind}: stream must be one of {', '.join(STREAM_CHOICES)}, got {stream!r}")
    return STREAMS if stream == "both" else (stream,)


def _whole(kind: str, what: str, value: Any, unit: str, minimum: int = 0) -> int:
    """A non-negative (or positive) whole number, as Toxiproxy's integer attributes need."""
    ok = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if not ok or float(value) != int(value):
        raise FaultError(f"{kind}: {what} must be a whole number of {unit}, got {value!r}")
    if value < minimum:
        bound = "> 0" if minimum == 1 else f">= {minimum}"
        raise FaultError(f"{kind}: {what} must be {bound} ({unit}), got {value!r}")
    return int(value)


class ProxyFault(Fault):
    """A fault on one or more proxies of a Toxiproxy server (``client``, else the default client)."""

    kind = "network"

    def __init__(self, proxies: Proxies, *, client: ToxiproxyClient | None = None, name: str | None = None) -> None:
        super().__init__(name=name)
        self.proxies = _names(proxies, self.kind)
        self._client = client

    def client(self) -> ToxiproxyClient:
        if self._client is None:
            try:
                self._client = default_client()
            except HarnessError as exc:
                raise FaultError(f"{self.kind}: {exc}", fault=self) from exc
        return self._client

    def _check_proxies(self) -> ToxiproxyClient:
        """Every target exists, before anything changes."""
        client = self.client()
        for proxy in self.proxies:
            try:
                client.get_proxy(proxy)
            except ToxiproxyError as exc:
                if exc.status == 404:
                    known = ", ".join(sorted(client.proxies())) or "none"
                    raise FaultError(f"{self.kind}: no proxy named {proxy!r} (known: {known})", fault=self) from exc
                raise FaultError(f"{self.kind}: {exc}", fault=self) from exc
        return client

    def target_label(self) -> str:
        return ",".join(self.proxies)


class ToxicFault(ProxyFault):
    """Toxics of one type on each proxy and stream while active. Each gets a unique name, and healing
    removes exactly those (a proxy or toxic already gone counts as healed)."""

    kind = "toxic"

    def __init__(self, proxies: Proxies, toxic_type: str, attributes: dict[str, Any] | None = None, *,
                 stream: str = "downstream", toxicity: float = 1.0, client: ToxiproxyClient | None = None,
                 name: str | None = None) -> None:
        super().__init__(proxies, client=client, name=name)
        if toxic_type not in TYPES:
            raise FaultError(f"{self.kind}: unknown toxic type {toxic_type!r}; known: {', '.join(sorted(TYPES))}",
                             fault=self)
        try:
            toxic = make_toxic(toxic_type, attributes or {})
            self.toxicity = check_toxicity(toxicity)
        except ApiError as exc:
            raise FaultError(f"{self.kind}: {exc.message.removeprefix('invalid toxic attributes: ')}",
                             fault=self) from exc
        self.toxic_type = toxic_type
        self.attributes = dict(toxic.attrs)
        self.streams = _streams(stream, self.kind)
        self.added: list[tuple[str, str]] = []

    def _inject(self) -> None:
        client = self._check_proxies()
        tag = uuid.uuid4().hex[:8]
        for proxy in self.proxies:
            for stream in self.streams:
                toxic_name = f"dbdrill-{self.kind}-{stream}-{tag}"
                try:
                    client.add_toxic(proxy, self.toxic_type, self.attributes, stream=stream,
                                     toxicity=self.toxicity, name=toxic_name)
                except ToxiproxyError as exc:
                    raise FaultError(f"{self.kind} on proxy {proxy!r}: {exc}", fault=self) from exc
                self.added.append((proxy, toxic_name))

    def _heal(self) -> None:
        client = self.client()
        errors = []
        while self.added:
            proxy, toxic_name = self.added.pop()
            try:
                client.remove_toxic(proxy, toxic_name)
            except ToxiproxyError as exc:
                if exc.status != 404:
                    errors.append(f"{proxy}/{toxic_name}: {exc}")
        if errors:
            raise FaultError(f"{self.kind}: could not remove {len(errors)} toxic(s): {'; '.join(errors)}", fault=self)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"proxies": self.proxies, "type": self.toxic_type, **self.attributes,
                               "stream": "both" if len(self.streams) == 2 else self.streams[0]}
        if self.toxicity < 1.0:
            out["toxicity"] = self.toxicity
        return out


class Latency(ToxicFault):
    kind = "network-latency"


class Blackhole(ToxicFault):
    kind = "network-blackhole"


class Bandwidth(ToxicFault):
    kind = "network-bandwidth"


class SlowClose(ToxicFault):
    kind = "network-slow-close"


class ResetPeer(ToxicFault):
    kind = "network-reset-peer"


class Timeout(ToxicFault):
    kind = "network-timeout"


class LimitData(ToxicFault):
    kind = "network-limit-data"


class Slicer(ToxicFault):
    kind = "network-slicer"


class SlowConnect(ToxicFault):
    kind = "network-slow-connect"


class Drop(ToxicFault):
    kind = "network-drop"


class Partition(ProxyFault):
    """The proxies disabled: new connections are refused and open ones dropped. Healing enables the ones this
    fault disabled (same address and port)."""

    kind = "network-partition"

    def __init__(self, proxies: Proxies, *, client: ToxiproxyClient | None = None, name: str | None = None) -> None:
        super().__init__(proxies, client=client, name=name)
        self.disabled: list[str] = []

    def _inject(self) -> None:
        client = self._check_proxies()
        for proxy in self.proxies:
            try:
                if client.get_proxy(proxy).get("enabled", True):
                    client.update_proxy(proxy, enabled=False)
                    self.disabled.append(proxy)
            except ToxiproxyError as exc:
                raise FaultError(f"{self.kind} of proxy {proxy!r}: {exc}", fault=self) from exc

    def _heal(self) -> None:
        client = self.client()
        errors = []
        while self.disabled:
            proxy = self.disabled.pop()
            try:
                client.update_proxy(proxy, enabled=True)
            except ToxiproxyError as exc:
                if exc.status != 404:
                    errors.append(f"{proxy}: {exc}")
        if errors:
            raise FaultError(f"{self.kind}: could not enable {len(errors)} proxy(ies): {'; '.join(errors)}",
                             fault=self)

    def describe(self) -> dict[str, Any]:
        return {"proxies": self.proxies}


def latency(proxy: Proxies, ms: float, jitter: float = 0, stream: str = "downstream", *, toxicity: float = 1.0,
            client: ToxiproxyClient | None = None) -> Latency:
    """Every chunk delayed ``ms`` (+- ``jitter``) milliseconds; ``stream`` upstream, downstream or both."""
    attrs = {"latency": _whole(Latency.kind, "ms", ms, "milliseconds"),
             "jitter": _whole(Latency.kind, "jitter", jitter, "milliseconds")}
    return Latency(proxy, "latency", attrs, stream=stream, toxicity=toxicity, client=client)


def partition(proxy: Proxies, *, client: ToxiproxyClient | None = None) -> Partition:
    """Connections refused and existing ones dropped (the proxies disabled)."""
    return Partition(proxy, client=client)


def blackhole(proxy: Proxies, *, client: ToxiproxyClient | None = None) -> Blackhole:
    """Connections accepted, nothing ever answered or delivered (a timeout toxic of 0 on both streams)."""
    return Blackhole(proxy, "timeout", {"timeout": 0}, stream="both", client=client)


def bandwidth(proxy: Proxies, kbps: float, stream: str = "downstream", *,
              client: ToxiproxyClient | None = None) -> Bandwidth:
    """At most ``kbps`` KB/s (KB = 1000 bytes), as Toxiproxy's bandwidth toxic."""
    rate = _whole(Bandwidth.kind, "kbps", kbps, "KB/s", minimum=1)
    return Bandwidth(proxy, "bandwidth", {"rate": rate}, stream=stream, client=client)


def slow_close(proxy: Proxies, ms: float, stream: str = "downstream", *,
               client: ToxiproxyClient | None = None) -> SlowClose:
    """The close (or half-close) of a connection reaches the peer ``ms`` milliseconds late."""
    delay = _whole(SlowClose.kind, "ms", ms, "milliseconds")
    return SlowClose(proxy, "slow_close", {"delay": delay}, stream=stream, client=client)


def reset_peer(proxy: Proxies, timeout_ms: float = 0, stream: str = "downstream", *,
               client: ToxiproxyClient | None = None) -> ResetPeer:
    """Connections reset (RST, the client sees ECONNRESET) ``timeout_ms`` after their first data."""
    timeout_attr = _whole(ResetPeer.kind, "timeout_ms", timeout_ms, "milliseconds")
    return ResetPeer(proxy, "reset_peer", {"timeout": timeout_attr}, stream=stream, client=client)


def timeout(proxy: Proxies, ms: float, stream: str = "downstream", *,
            client: ToxiproxyClient | None = None) -> Timeout:
    """Data swallowed; the connection closed ``ms`` after the last data (0: held open forever)."""
    timeout_attr = _whole(Timeout.kind, "ms", ms, "milliseconds")
    return Timeout(proxy, "timeout", {"timeout": timeout_attr}, stream=stream, client=client)


def limit_data(proxy: Proxies, nbytes: int, stream: str = "downstream", *,
               client: ToxiproxyClient | None = None) -> LimitData:
    """Each connection passes ``nbytes`` bytes in ``stream``, then is closed."""
    limit = _whole(LimitData.kind, "nbytes", nbytes, "bytes")
    return LimitData(proxy, "limit_data", {"bytes": limit}, stream=stream, client=client)


def slicer(proxy: Proxies, average_size: int, size_variation: int = 0, delay_us: int = 0,
           stream: str = "downstream", *, client: ToxiproxyClient | None = None) -> Slicer:
    """Data cut into slices of about ``average_size`` bytes, ``delay_us`` microseconds apart."""
    attrs = {"average_size": _whole(Slicer.kind, "average_size", average_size, "bytes", minimum=1),
             "size_variation": _whole(Slicer.kind, "size_variation", size_variation, "bytes"),
             "delay": _whole(Slicer.kind, "delay_us", delay_us, "microseconds")}
    return Slicer(proxy, "slicer", attrs, stream=stream, client=client)


def slow_connect(proxy: Proxies, ms: float, *, client: ToxiproxyClient | None = None) -> SlowConnect:
    """New connections are accepted but reach the upstream ``ms`` late (dbdrill's proxy only: Toxiproxy has
    no such toxic)."""
    delay = _whole(SlowConnect.kind, "ms", ms, "milliseconds")
    return SlowConnect(proxy, "slow_connect", {"delay": delay}, stream="upstream", client=client)


def drop(proxy: Proxies, percent: float, rto_ms: float = 200, stream: str = "downstream", *,
         client: ToxiproxyClient | None = None) -> Drop:
    """Packet loss as TCP lives it: ``percent`` % of chunks arrive a retransmission timeout (``rto_ms``, doubling
    on repeated loss) late; nothing is lost or reordered (dbdrill's proxy only)."""
    attrs = {"percent": _whole(Drop.kind, "percent", percent, "percent"),
             "rto": _whole(Drop.kind, "rto_ms", rto_ms, "milliseconds", minimum=1)}
    if attrs["percent"] > 100:
        raise FaultError(f"{Drop.kind}: percent must be between 0 and 100, got {percent!r}")
    return Drop(proxy, "drop", attrs, stream=stream, client=client)


def toxic(proxy: Proxies, type: str, *, stream: str = "downstream", toxicity: float = 1.0,
          client: ToxiproxyClient | None = None, **attributes: Any) -> ToxicFault:
    """Any Toxiproxy toxic by type and attributes, e.g. ``toxic("db", "latency", latency=100)``."""
    return ToxicFault(proxy, type, attributes, stream=stream, toxicity=toxicity, client=client)
