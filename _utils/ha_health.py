"""
The master's health endpoint (engine ``ha_health``): ``GET /health`` and ``GET /metrics``
on tornado (a Salt dependency), for load balancers, keepalived and Prometheus.

``/health`` is 200 only while this master's request server answers an
application-level ping within ``timeout``: the clear ``{"cmd": "ping"}`` a minion's
``status.ping_master`` sends, answered by an MWorker (:func:`ha_probe.probe_endpoint`,
the one probe salt-ha has, pointed at this master's own ``interface`` and
``ret_port``). A frozen or partitioned request server completes TCP handshakes but
answers nothing: 503, with a short JSON body saying why. The probe runs in a thread
of an executor, never on the tornado loop, and every request that arrives while a
probe is in flight shares it; a finished probe is reused for :data:`CACHE_SECONDS`,
so a balancer that asks many times a second costs the master at most two pings a
second.

``/metrics`` is the Prometheus text exposition of the master side, built by the
metric-family providers in :data:`METRIC_PROVIDERS` (one place to add a family).
Every other path is 404; methods other than GET and HEAD are 405. Nothing secret is
read or shown: the probe's outcome, key counts, versions.
"""

import asyncio
import concurrent.futures
import dataclasses
import errno
import ipaddress
import json
import logging
import math
import threading
import time

import salt.version
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_endpoints
import ha_keys
import ha_keystore
import ha_probe
import ha_text
import ha_validate

log = logging.getLogger(__name__)

DEFAULT_HOST = "0.0.0.0"
DEFAULT_PORT = 4510
DEFAULT_TIMEOUT = 2.0
MAX_TIMEOUT = 30  # a health check slower than this is no health check
OPTIONS = ("host", "port", "timeout")
# A finished probe answers the requests of the next CACHE_SECONDS (a balancer that
# checks every 100 ms costs the master two pings a second, not ten).
CACHE_SECONDS = 0.5
# How long a request waits for a probe past its own timeout before calling it lost
# (a probe thread is bounded by the timeout; this only guards against a stuck one).
PROBE_SLACK = 1.0
# Seconds between two attempts to bind a port another process holds.
BIND_RETRY_SECONDS = 10
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"


# --- configuration --------------------------------------------------------------------


def engine_config(options):
    """
    The engine's options validated, with defaults: ``{"host", "port", "timeout"}``.

    ``host``: the address to listen on, an IPv4 or IPv6 literal (default
    ``0.0.0.0``); ``port``: 1-65535 (default 4510); ``timeout``: seconds in (0, 30]
    the request server gets to answer (default 2). Raises ``SaltInvocationError``
    naming the bad option and value; unknown options are refused (a typo would
    silently keep a default).
    """
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise SaltInvocationError(f"ha_health options {ha_text.shown(options)} are not a mapping")
    unknown = sorted(str(key) for key in options if key not in OPTIONS)
    if unknown:
        raise SaltInvocationError(
            f"ha_health option(s) {', '.join(ha_text.shown(key) for key in unknown)} unknown "
            f"(known: {', '.join(OPTIONS)})"
        )
    host = options.get("host", DEFAULT_HOST)
    if not isinstance(host, str):
        raise SaltInvocationError(f"ha_health host {ha_text.shown(host)} is not an IP address")
    try:
        host = str(ipaddress.ip_address(host.strip()))
    except ValueError as err:
        raise SaltInvocationError(
            f"ha_health host {ha_text.shown(host)} is not an IP address (write 0.0.0.0, :: or one of "
            "this master's addresses)"
        ) from err
    return {
        "host": host,
        "port": ha_validate.validate_port(options.get("port", DEFAULT_PORT), "ha_health port"),
        "timeout": ha_validate.validate_timeout(
            options.get("timeout", DEFAULT_TIMEOUT), "ha_health timeout", MAX_TIMEOUT
        ),
    }


def request_server_endpoint(opts):
    """
    Where this master's request server is asked: its ``interface`` (a wildcard is
    asked on loopback, ``0.0.0.0`` as 127.0.0.1, ``::`` as ::1) and ``ret_port``,
    as a :class:`ha_endpoints.MasterEndpoint`.
    """
    interface = str(opts.get("interface") or "0.0.0.0")
    address = WILDCARDS.get(interface, interface)
    ret_port = ha_validate.validate_port(
        ha_endpoints.option_or_default(opts, "ret_port", ha_endpoints.DEFAULT_RET_PORT), "ret_port"
    )
    publish_port = ha_validate.validate_port(
        ha_endpoints.option_or_default(opts, "publish_port", ha_endpoints.DEFAULT_PUBLISH_PORT), "publish_port"
    )
    return ha_endpoints.MasterEndpoint(
        master=opts.get("id") or address, host=address, ret_port=ret_port, publish_port=publish_port
    )


# --- the probe, shared --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HealthResult:
    """One probe of this master's request server: ``up``, ``latency_ms``, ``error``, when (monotonic)."""

    up: bool
    latency_ms: float
    error: str
    checked_at: float


def probe_request_server(endpoint, timeout, transport, context=None):
    """
    One application-level ping of the request server at ``endpoint`` (blocking, at
    most about ``timeout``): :func:`ha_probe.probe_endpoint` without the publish port.
    Returns a :class:`HealthResult`.
    """
    entry = ha_probe.probe_endpoint(endpoint, timeout, transport, context, publish=False)
    return HealthResult(entry["up"], entry["latency_ms"], entry["error"], time.monotonic())


class SharedProbe:
    """
    The health of this master as the endpoint serves it: one probe at a time, shared
    by every request that arrives while it runs, its result reused for
    ``cache_seconds``. The probe runs in ``executor`` (never on the event loop).
    """

    def __init__(self, probe, timeout, executor, cache_seconds=CACHE_SECONDS):
        """``probe()`` returns a :class:`HealthResult` (blocking, bounded by ``timeout``)."""
        self.probe = probe
        self.timeout = timeout
        self.executor = executor
        self.cache_seconds = cache_seconds
        self.latest = None
        self.probes = 0  # how many probes ran (tests and the probe metric count them)
        self._inflight = None

    def fresh(self):
        """The latest result while it is younger than ``cache_seconds``, else None."""
        if self.latest is not None and time.monotonic() - self.latest.checked_at < self.cache_seconds:
            return self.latest
        return None

    async def check(self):
        """The health of the request server (a :class:`HealthResult`); awaits at most ~timeout."""
        cached = self.fresh()
        if cached is not None:
            return cached
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._run())
        return await asyncio.shield(self._inflight)

    async def _run(self):
        loop = asyncio.get_running_loop()
        self.probes += 1
        try:
            result = await asyncio.wait_for(
                loop.run_in_executor(self.executor, self.probe), self.timeout + PROBE_SLACK
            )
        except asyncio.TimeoutError:
            result = HealthResult(False, None, f"no answer within {self.timeout:g} s", time.monotonic())
        except Exception as err:  # pylint: disable=broad-except  (the endpoint answers 503, never a traceback)
            fault = ha_text.log_fault(log, "the health probe of this master", err)
            result = HealthResult(False, None, f"probe failed: {fault}", time.monotonic())
        finally:
            self._inflight = None
        self.latest = result
        return result


def health_body(master, result):
    """``(HTTP status, JSON text)`` of ``/health`` for a :class:`HealthResult`."""
    if result.up:
        body = {"status": "ok", "master": master, "latency_ms": result.latency_ms}
        return 200, json.dumps(body)
    body = {
        "status": "down",
        "master": master,
        "error": f"the request server does not answer (hung or partitioned): {ha_text.printable(result.error)}",
    }
    return 503, json.dumps(body)


# --- metrics ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ScrapeContext:
    """What a metric-family provider sees: the master's ``opts``, its id, the latest health."""

    opts: dict
    master: str
    health: HealthResult
    probes: int


def _gauge(name, documentation, labels=()):
    # pylint: disable-next=import-outside-toplevel  (prometheus_client only where metrics are served)
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, documentation, labels=list(labels))


def health_metrics(ctx):
    """``salt_ha_health_up``, ``salt_ha_health_ping_seconds``, ``salt_ha_health_probes``."""
    up = _gauge("salt_ha_health_up", "1 if this master's request server answered an application-level ping", ["master"])
    up.add_metric([ctx.master], 1 if ctx.health.up else 0)
    latency = _gauge(
        "salt_ha_health_ping_seconds", "Round trip of the ping to this master's request server (NaN when down)",
        ["master"],
    )
    latency.add_metric([ctx.master], math.nan if ctx.health.latency_ms is None else ctx.health.latency_ms / 1000)
    probes = _gauge("salt_ha_health_probes", "Probes the health endpoint has run since it started", ["master"])
    probes.add_metric([ctx.master], ctx.probes)
    return [up, latency, probes]


def key_metrics(ctx):
    """``salt_ha_minion_keys{master, state}``: this master's minion keys by state (``cluster_pki_dir`` on a cluster)."""
    counts = ha_keystore.KeyStore(ctx.opts).counts()
    keys = _gauge("salt_ha_minion_keys", "Minion keys on this master by state", ["master", "state"])
    for state in ha_keys.KEY_STATUSES:
        keys.add_metric([ctx.master, state], counts.get(state, 0))
    return [keys]


def version_metrics(ctx):
    """``salt_ha_build_info{master, salt_version, salt_ha_version}`` (always 1)."""
    import ha_drift  # pylint: disable=import-outside-toplevel  (its version helper; heavy imports)

    info = _gauge(
        "salt_ha_build_info", "Salt and salt-ha versions of this master", ["master", "salt_version", "salt_ha_version"]
    )
    info.add_metric([ctx.master, salt.version.__version__, ha_drift.salt_ha_version()], 1)
    return [info]


def drill_metrics(ctx):
    """``salt_ha_drill_*``: the last drills run from this master (:mod:`ha_drill_history`)."""
    import ha_drill_history  # pylint: disable=import-outside-toplevel  (salt.exceptions and more)

    families = []
    reports = ha_drill_history.history(ctx.opts, 200)
    for name, documentation, label_names, samples in ha_drill_history.metric_families(reports):
        family = _gauge(name, documentation, ["master", *label_names])
        for labels, value in samples:
            family.add_metric([ctx.master, *(labels[label] for label in label_names)], value)
        families.append(family)
    return families


# Every metric family of /metrics comes from one of these, in this order: a provider
# is ``provider(ScrapeContext) -> [metric families]`` (prometheus_client
# ``*MetricFamily`` objects). Add a family by adding a provider here. A provider that raises is logged and reported as
# salt_ha_metrics_provider_ok{provider} 0; the others are still served.
METRIC_PROVIDERS = (health_metrics, key_metrics, version_metrics, drill_metrics)


class _Collector:
    """A prometheus_client collector over the providers, for one scrape."""

    def __init__(self, ctx, providers):
        self.ctx = ctx
        self.providers = providers

    def collect(self):
        status = _gauge("salt_ha_metrics_provider_ok", "1 if the metric provider answered this scrape", ["provider"])
        for provider in self.providers:
            name = getattr(provider, "__name__", repr(provider))
            try:
                families = list(provider(self.ctx))
            except Exception as err:  # pylint: disable=broad-except  (one provider never hides the others)
                ha_text.log_fault(log, f"the metric provider {name!r}", err)
                status.add_metric([name], 0)
                continue
            status.add_metric([name], 1)
            yield from families
        yield status


def metrics_text(ctx, providers=METRIC_PROVIDERS):
    """The Prometheus text exposition of ``providers`` for ``ctx`` (blocking: run it off the loop)."""
    # pylint: disable-next=import-outside-toplevel
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(ctx, providers))
    return generate_latest(registry).decode("utf-8")


# --- the HTTP service -------------------------------------------------------------------


class HealthService:
    """
    The endpoint's state: the master's ``opts``, the validated ``config``, the shared
    probe, the metric providers and the executor their blocking work runs in.
    """

    def __init__(self, opts, config, providers=METRIC_PROVIDERS, probe=None):
        self.opts = opts
        self.config = config
        self.providers = providers
        self.master = str(opts.get("id") or "master")
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="ha-health")
        self._context = None
        if probe is None:
            endpoint = request_server_endpoint(opts)
            transport = opts.get("transport") or "zeromq"
            probe = lambda: probe_request_server(endpoint, config["timeout"], transport, self._zmq_context())  # noqa: E731
        self.shared = SharedProbe(probe, config["timeout"], self.executor)

    def _zmq_context(self):
        if self._context is None:
            import zmq  # pylint: disable=import-outside-toplevel

            self._context = zmq.Context()
        return self._context

    async def health(self):
        """``(status, JSON body)`` of ``/health``."""
        return health_body(self.master, await self.shared.check())

    async def metrics(self):
        """The text of ``/metrics`` (the health from the shared probe, the rest built off the loop)."""
        result = await self.shared.check()
        ctx = ScrapeContext(self.opts, self.master, result, self.shared.probes)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, metrics_text, ctx, self.providers)

    def close(self):
        """Stop the executor (without waiting for a probe in flight) and the ZeroMQ context."""
        self.executor.shutdown(wait=False)
        if self._context is not None:
            self._context.destroy(linger=0)
            self._context = None


def make_application(service):
    """The tornado application: ``/health`` and ``/metrics``; anything else 404."""
    import tornado.web  # pylint: disable=import-outside-toplevel

    class BaseHandler(tornado.web.RequestHandler):  # pylint: disable=abstract-method
        SUPPORTED_METHODS = ("GET", "HEAD")

        def set_default_headers(self):
            self.clear_header("Server")  # no version disclosure
            self.set_header("Cache-Control", "no-store")

        def write_error(self, status_code, **kwargs):
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(f"{status_code} {self._reason}\n")

    class HealthHandler(BaseHandler):  # pylint: disable=abstract-method
        async def get(self):
            status, body = await service.health()
            self.set_status(status)
            self.set_header("Content-Type", JSON_CONTENT_TYPE)
            self.finish(body + "\n")

        async def head(self):
            status, _ = await service.health()
            self.set_status(status)
            self.set_header("Content-Type", JSON_CONTENT_TYPE)
            self.finish()

    class MetricsHandler(BaseHandler):  # pylint: disable=abstract-method
        async def get(self):
            self.set_header("Content-Type", METRICS_CONTENT_TYPE)
            self.finish(await service.metrics())

        async def head(self):
            self.set_header("Content-Type", METRICS_CONTENT_TYPE)
            self.finish()

    class NotFoundHandler(BaseHandler):  # pylint: disable=abstract-method
        SUPPORTED_METHODS = tornado.web.RequestHandler.SUPPORTED_METHODS

        def prepare(self):
            raise tornado.web.HTTPError(404)

    return tornado.web.Application(
        [(r"/health", HealthHandler), (r"/metrics", MetricsHandler)],
        default_handler_class=NotFoundHandler,
        log_function=_log_request,
    )


def _log_request(handler):
    """Requests at debug level (a balancer asks every second; tornado would log each at info)."""
    log.debug(
        "salt-ha health: %s %s -> %s (%.1f ms)",
        handler.request.method, ha_text.printable(handler.request.uri), handler.get_status(),
        1000 * handler.request.request_time(),
    )


def bind(config):
    """
    The listening sockets for ``config`` (tornado's ``bind_sockets``). Raises
    ``CommandExecutionError`` naming the address and port when they cannot be
    bound (taken by another process, not an address of this host, no permission).
    """
    import tornado.netutil  # pylint: disable=import-outside-toplevel

    try:
        return tornado.netutil.bind_sockets(config["port"], address=config["host"])
    except OSError as err:
        where = f"{config['host']} port {config['port']}"
        if err.errno == errno.EADDRINUSE:
            why = "the port is taken by another process (Address already in use)"
        elif err.errno == errno.EADDRNOTAVAIL:
            why = "the address is not one of this host's"
        elif err.errno == errno.EACCES:
            why = "permission denied (a port below 1024 needs root)"
        else:
            why = ha_text.printable(err.strerror or err)
        raise CommandExecutionError(
            f"cannot listen on {where}: {why}; set another port in the engine's options "
            "(engines: [{ha_health: {port: N}}])"
        ) from err


async def _serve(service, sockets, stop):
    import tornado.httpserver  # pylint: disable=import-outside-toplevel

    server = tornado.httpserver.HTTPServer(make_application(service), xheaders=False)
    server.add_sockets(sockets)
    try:
        while stop is None or not stop.is_set():
            await asyncio.sleep(0.2 if stop is not None else 3600)
    finally:
        server.stop()
        await server.close_all_connections()


def serve(opts, config, stop=None, providers=METRIC_PROVIDERS, retry_seconds=BIND_RETRY_SECONDS):
    """
    Serve ``/health`` and ``/metrics`` for this master until ``stop`` (a
    ``threading.Event``; None: forever). ``config`` from :func:`engine_config`.

    When the port cannot be bound, the error is logged once (naming the address,
    the port and why) and binding is tried again every ``retry_seconds`` (quietly)
    until it works or ``stop`` is set: the endpoint never answers for another
    process, and comes up by itself once the port is free.
    """
    sockets = _bind_with_retry(config, stop, retry_seconds)
    if sockets is None:
        return
    service = HealthService(opts, config, providers)
    log.info(
        "salt-ha health: serving /health and /metrics on %s port %s (request server %s, timeout %g s)",
        config["host"], config["port"], _describe_endpoint(opts), config["timeout"],
    )
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(_serve(service, sockets, stop))
    finally:
        service.close()
        for sock in sockets:
            sock.close()
        loop.close()


def _describe_endpoint(opts):
    endpoint = request_server_endpoint(opts)
    return f"{endpoint.host}:{endpoint.ret_port}"


def _bind_with_retry(config, stop, retry_seconds):
    """The bound sockets, or None when ``stop`` was set before the port could be bound."""
    logged = False
    while True:
        try:
            sockets = bind(config)
        except CommandExecutionError as err:
            if not logged:
                log.error("salt-ha health: the ha_health endpoint is not running: %s (retrying every %g s)",
                          err, retry_seconds)
                logged = True
            else:
                log.debug("salt-ha health: still cannot bind: %s", err)
            waiter = stop if stop is not None else threading.Event()
            if waiter.wait(retry_seconds):
                return None
            continue
        if logged:
            log.warning("salt-ha health: %s port %s is free now: serving", config["host"], config["port"])
        return sockets
