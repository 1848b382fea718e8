"""The emulated AWS endpoint: moto's backends served in this process by dbdrill's HTTP server, one loopback
address per region behind its own fault proxy, API fault rules, region cuts and the DynamoDB behaviours."""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from harness.aws import guard
from harness.aws.dynamodb import patches
from harness.aws.dynamodb.streams import StreamMapping
from harness.aws.dynamodb.ttl import default_ttl_delay
from harness.aws.fis_api import DEFAULT_TIME_SCALE, FisExperiments
from harness.aws.middleware import AwsApp, FaultRule, make_rule
from harness.aws.server import HttpServer
from harness.errors import HarnessError, ServiceError
from harness.wait import wait_until

if TYPE_CHECKING:
    from harness.aws.dynamodb.service import DynamoDBBehaviours
    from harness.stack import Stack

logger = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"
DUMMY_KEY = "testing"
DEFAULT_LAG = {"fast": 0.0, "aws": 1.0}
# Variables that could point a client elsewhere or pull real credentials in; the environment drops them.
ENV_UNSET = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT", "AWS_CA_BUNDLE",
)

# Endpoints running in this process, newest last (a pytester run inside a test starts a second one).
_running: list[AwsEndpoint] = []


def current_endpoint() -> AwsEndpoint:
    """The running endpoint (the default for faults); HarnessError if none runs."""
    endpoint = running_endpoint()
    if endpoint is None:
        raise HarnessError("no emulated AWS endpoint is running: use the `aws` fixture (or Stack().aws) first, "
                           "or pass endpoint= explicitly")
    return endpoint


def running_endpoint() -> AwsEndpoint | None:
    """The newest running endpoint, or None."""
    return _running[-1] if _running else None


def env_unset(environ: dict[str, str] | os._Environ[str] | None = None) -> list[str]:
    """Names to remove from ``environ`` (default os.environ) before applying ``env()``."""
    environ = os.environ if environ is None else environ
    return sorted(set(ENV_UNSET) | {k for k in environ if k.startswith("AWS_ENDPOINT_URL_")})


class AwsEndpoint:
    """Constructed by ``Stack.aws``; ``start()`` serves every configured region."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.settings = stack.settings
        self.clock = stack.clock
        self.regions: tuple[str, ...] = tuple(stack.settings.regions)
        # moto answers for MOTO_ACCOUNT_ID when set; the harness must look in the same account.
        self.account_id = os.environ.get("MOTO_ACCOUNT_ID", ACCOUNT_ID)
        self.lock = threading.RLock()
        self.server: HttpServer | None = None
        self.app: AwsApp | None = None
        self._dynamodb: DynamoDBBehaviours | None = None
        self._fis: FisExperiments | None = None
        self._proxies: dict[str, str] = {}
        self._session: Any = None
        self._session_lock = threading.Lock()
        self._backend_dicts: dict[str, Any] = {}
        self._backend_cache: dict[tuple[str, str], tuple[int, Any]] = {}
        self.started_in: float | None = None
        self._patched = False

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> AwsEndpoint:
        if not self.regions:
            raise HarnessError("no AWS regions configured: set --dbdrill-regions (e.g. us-east-1,eu-west-1)")
        t0 = time.perf_counter()
        from harness.aws.dynamodb.service import DynamoDBBehaviours
        from harness.aws.motoapp import MotoApp

        profile = self.settings.time_profile
        ttl_delay = self.settings.ttl_delay if self.settings.ttl_delay is not None else default_ttl_delay(profile)
        from harness.aws import motoapp

        motoapp.install_speedups()
        patches.install()
        patches.set_clock(self.clock.time)
        guard.install()
        self._patched = True
        try:
            self.app = AwsApp(MotoApp(), self.lock)
            self._dynamodb = DynamoDBBehaviours(
                self, capacity=self.settings.dynamodb_capacity, ttl_delay=ttl_delay,
                replication_lag=DEFAULT_LAG.get(profile, 0.0), known_regions=self.regions).start()
            self.app.interceptors.append(self._dynamodb)
            scale = self.settings.fis_time_scale or DEFAULT_TIME_SCALE.get(profile, 1.0)
            self._fis = FisExperiments(self, scale)
            self.app.interceptors.append(self._fis)
            host = self.stack.hosts.allocate("aws")
            self.server = HttpServer(self.app, host, 0, name="aws").start()
            self.app.stopping = self.server.stopping
            upstream = f"{self.server.address[0]}:{self.server.address[1]}"
            for region in self.regions:
                listen = f"{self.stack.hosts.allocate(f'aws-{region}')}:0"
                proxy = self.stack.toxiproxy.create_proxy(f"aws-{region}", listen=listen, upstream=upstream)
                self._proxies[region] = proxy["listen"]
        except BaseException:
            self.stop()
            raise
        self.started_in = time.perf_counter() - t0
        _running.append(self)
        logger.info("AWS endpoint on %s, regions %s, started in %.0f ms", self.url,
                    ", ".join(f"{r}={a}" for r, a in self._proxies.items()), self.started_in * 1000)
        return self

    def stop(self) -> None:
        if self in _running:
            _running.remove(self)
            if _running:  # stream records take their time from the endpoint still running
                patches.set_clock(_running[-1].clock.time)
        for region in list(self._proxies):
            with contextlib.suppress(Exception):
                self.stack.toxiproxy.delete_proxy(f"aws-{region}")
            del self._proxies[region]
        if self._fis is not None:  # first: healing an experiment's actions may need the API
            self._fis.stop_all()
            self._fis = None
        if self.server is not None:
            self.server.stop()
            self.server = None
        if self._dynamodb is not None:
            self._dynamodb.stop()
            self._dynamodb = None
        if self._patched:
            from harness.aws import motoapp

            self._patched = False
            guard.uninstall()
            patches.uninstall()
            motoapp.uninstall_speedups()

    def reset(self) -> None:
        """Forget all AWS state, fault rules, region cuts and DynamoDB behaviour state (between tests)."""
        from moto.core.base_backend import BackendDict
        from moto.core.model_instances import reset_model_data

        if self._fis is not None:
            self._fis.stop_all()
        if self._dynamodb is not None:
            self._dynamodb.reset()
        with self.lock:
            BackendDict.reset()
            reset_model_data()
        if self.app is not None:
            self.clear_faults()

    def __enter__(self) -> AwsEndpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The server itself: one URL for all regions (the region comes from the request signature)."""
        if self.server is None:
            raise ServiceError("the AWS endpoint is not running: start() it (or use stack.aws)", obj=self)
        return self.server.url

    @property
    def default_region(self) -> str:
        return self.regions[0]

    def check_region(self, region: str | None) -> str:
        region = region or self.default_region
        if region not in self.regions:
            close = difflib.get_close_matches(region, self.regions, n=1)
            hint = f" Did you mean {close[0]}?" if close else ""
            raise HarnessError(f"unknown region {region!r}: the emulator serves {', '.join(self.regions)}.{hint} "
                               "Add it with --dbdrill-regions.", obj=self)
        return region

    def endpoint_url(self, region: str | None = None) -> str:
        """The region's own endpoint (its loopback address, behind its fault proxy)."""
        region = self.check_region(region)
        if region not in self._proxies:
            raise ServiceError("the AWS endpoint is not running: start() it (or use stack.aws)", obj=self)
        return f"http://{self._proxies[region]}"

    def proxy_name(self, region: str) -> str:
        return f"aws-{self.check_region(region)}"

    # -- clients --------------------------------------------------------------------------------------
    def session(self) -> Any:
        """A boto3 session with dummy credentials that reads no shared config or credentials file."""
        with self._session_lock:
            if self._session is None:
                import boto3
                import botocore.session

                core = botocore.session.Session()
                for name, value in (("config_file", os.devnull), ("credentials_file", os.devnull),
                                    ("profile", None), ("account_id_endpoint_mode", "disabled")):
                    core.set_config_variable(name, value)
                core.set_credentials(DUMMY_KEY, DUMMY_KEY)
                self._session = boto3.session.Session(botocore_session=core, region_name=self.default_region)
            return self._session

    def client(self, service: str, region: str | None = None, **kwargs: Any) -> Any:
        """A boto3 client for ``service`` on ``region``'s proxied endpoint (dummy credentials)."""
        region = self.check_region(region)
        url = guard.check_endpoint_url(kwargs.pop("endpoint_url", None) or self.endpoint_url(region))
        return self.session().client(service, region_name=region, endpoint_url=url, **kwargs)

    def resource(self, service: str, region: str | None = None, **kwargs: Any) -> Any:
        region = self.check_region(region)
        url = guard.check_endpoint_url(kwargs.pop("endpoint_url", None) or self.endpoint_url(region))
        return self.session().resource(service, region_name=region, endpoint_url=url, **kwargs)

    def env(self, region: str | None = None) -> dict[str, str]:
        """Environment for code that builds its own clients: ``boto3.client("dynamodb")`` then reaches the
        emulator. Remove the names in ``env_unset()`` too (profiles, tokens, per-service endpoints)."""
        region = self.check_region(region)
        out = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": DUMMY_KEY,
            "AWS_SECRET_ACCESS_KEY": DUMMY_KEY,
            "AWS_DEFAULT_REGION": region,
            "AWS_REGION": region,
            "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }
        for r in self.regions:
            out[f"DBDRILL_AWS_ENDPOINT_{r.upper().replace('-', '_')}"] = self.endpoint_url(r)
        return out

    @contextlib.contextmanager
    def applied_env(self, region: str | None = None) -> Iterator[dict[str, str]]:
        """Apply ``env()`` to os.environ (and drop boto3's cached default session), restoring both after."""
        import boto3

        values = self.env(region)
        saved = {k: os.environ.get(k) for k in [*values, *env_unset()]}
        saved_session = boto3.DEFAULT_SESSION
        try:
            for k in env_unset():
                os.environ.pop(k, None)
            os.environ.update(values)
            boto3.DEFAULT_SESSION = None
            yield values
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            boto3.DEFAULT_SESSION = saved_session

    # -- moto state -------------------------------------------------------------------------------------
    def backend(self, service: str, region: str | None = None) -> Any:
        """moto's backend object for ``service`` in ``region`` (global services: their partition backend).
        Hold ``lock`` while touching it: request threads use it too."""
        from harness.aws.motoapp import backends_generation

        region = region or self.default_region
        generation = backends_generation()
        cached = self._backend_cache.get((service, region))
        if cached is not None and cached[0] == generation:
            return cached[1]
        backends = self._backend_dicts.get(service)
        if backends is None:
            from moto.backends import get_backend

            try:
                backends = self._backend_dicts[service] = get_backend(service)  # type: ignore[call-overload]
            except (KeyError, ModuleNotFoundError, ValueError) as exc:
                raise HarnessError(f"moto has no backend {service!r}: use moto's service names (dynamodb, rds, "
                                   "sqs, route53...)", obj=self) from exc
        account = backends[self.account_id]
        if region in account.regions or region in account:
            backend = account[region]
        else:
            backend = next((account[p] for p in ("aws", "global") if p in account), None) or account[region]
        self._backend_cache[(service, region)] = (generation, backend)
        return backend

    # -- faults ------------------------------------------------------------------------------------------
    def _app(self) -> AwsApp:
        if self.app is None:
            raise ServiceError("the AWS endpoint is not running: start() it (or use stack.aws)", obj=self)
        return self.app

    def add_fault_rule(self, service: str | FaultRule, kind: str = "error", **options: Any) -> FaultRule:
        """Add an API fault rule: a ready ``FaultRule``, or one made by ``make_rule(service, kind, **options)``
        (HarnessError for bad input, nothing added then)."""
        rule = service if isinstance(service, FaultRule) else make_rule(service, kind, known_regions=self.regions,
                                                                        **options)
        self._app().add_rule(rule)
        return rule

    def remove_fault_rule(self, rule: FaultRule | str) -> None:
        self._app().remove_rule(rule if isinstance(rule, str) else rule.id)

    def fault_rules(self) -> list[FaultRule]:
        return self._app().rules()

    def clear_faults(self) -> None:
        """Drop every API fault rule and region cut (the fault objects themselves are healed by heal_all)."""
        self._app().clear_rules()
        self._app().clear_cuts()

    def cut_region(self, region: str, mode: str = "refuse") -> int:
        """Make the server itself refuse (RST) or blackhole every request signed for ``region``."""
        return self._app().cut_region(self.check_region(region), mode)

    def heal_cut(self, token: int) -> None:
        self._app().heal_cut(token)

    def region_up(self, region: str) -> bool:
        return self.app is None or self.app.cut_mode(region) is None

    # -- DynamoDB ----------------------------------------------------------------------------------------
    @property
    def dynamodb(self) -> DynamoDBBehaviours:
        if self._dynamodb is None:
            raise ServiceError("the AWS endpoint is not running: start() it (or use stack.aws)", obj=self)
        return self._dynamodb

    def dynamodb_stream_handler(self, table: str, handler: Any, *, region: str | None = None,
                                **options: Any) -> StreamMapping:
        """Feed ``table``'s stream to ``handler(event[, context])`` like a Lambda event source mapping.
        Options: batch_size, bisect_on_error, max_retries, max_record_age, on_failure (SQS queue URL or
        ARN), starting_position, function_name."""
        return self.dynamodb.subscribe(table, handler, region=self.check_region(region), **options)

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Block until global-table replication has shipped everything it can (deadline-bound)."""
        wait_until(self.dynamodb.global_tables.caught_up, timeout, what="global table replication to catch up")
