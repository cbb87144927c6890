"""
salt-ha execution module: the truth about every configured master.

``salt-call ha.status`` probes every master in the minion's ``master`` option at
the application level (a clear ping answered by a master worker), concurrently,
finds the master the running salt-minion daemon is connected to, and lints the
failover settings. ``ha.check`` and ``ha.metrics`` turn that into a Nagios plugin
line and Prometheus metrics.

Works inside the daemon (``salt <id> ha.status``), from ``salt-call`` and from
``salt-call --local``.
"""

import logging
import time

import psutil
import salt.utils.event
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_config_file
import ha_conncheck
import ha_connection
import ha_endpoints
import ha_files
import ha_lint
import ha_minion_config
import ha_probe
import ha_report
import ha_returns
import ha_text
import ha_validate
import ha_watch

log = logging.getLogger(__name__)

__virtualname__ = "ha"


def __virtual__():
    return __virtualname__


def _endpoints():
    try:
        return ha_endpoints.master_endpoints(__opts__)
    except SaltInvocationError as err:
        raise CommandExecutionError(f"{err}; run ha.lint for the details") from err


def _probe_all(endpoints, timeout):
    """``(masters, connected, why the connected master is unknown or None)``."""
    masters = ha_probe.probe_endpoints(endpoints, timeout, __opts__.get("transport", "zeromq"))
    try:
        connected = ha_connection.mark_connected(masters, __opts__.get("pidfile"))
    except ha_connection.DaemonUnreadable as err:
        log.warning("salt-ha: cannot tell which master the salt-minion daemon is connected to: %s", err)
        return masters, None, str(err)
    return masters, connected, None


def _lint_running(resolver):
    # The daemon's view, also from a salt-call process (whose -t sets auth_timeout):
    # the files the daemon reads (include and default_include followed) over __opts__.
    written = ha_minion_config.read_minion_config(__opts__.get("conf_file"))
    return ha_lint.lint_options(
        ha_minion_config.daemon_options(__opts__, written.options),
        written_keys=set(written.options),
        resolver=resolver,
        config_problems=written.problems,
    )


def _resolver_from(masters):
    known = {entry["host"]: entry["addresses"] for entry in masters}
    return lambda hosts: {host: known.get(host, []) for host in hosts}


def _latency_limit(value, what):
    if value is None:
        return None
    try:
        limit = float(value)
    except (TypeError, ValueError) as err:
        raise SaltInvocationError(f"{what} {value!r} is not a number of milliseconds") from err
    if limit < 0:
        raise SaltInvocationError(f"{what} {value!r} is negative")
    return limit


def status(timeout=2):
    """
    Probe every configured master concurrently and lint the failover settings.

    A master is ``up`` only when it answers an application-level ping on its ret
    port within ``timeout`` seconds: a frozen master that still accepts TCP is
    down. ``connected`` is the master the running salt-minion daemon has
    ESTABLISHED connections to (read from its sockets, so it is right after a
    failover even from a separate ``salt-call``). Wall time is about one
    ``timeout`` however many masters are down.

    timeout
        Seconds to wait for each master (all are probed at once). Default 2.

    Returns ``masters`` (one entry per master: ``master``, ``host``,
    ``ret_port``, ``publish_port``, ``addresses``, ``up``, ``latency_ms``,
    ``error``, ``connected``, ``publish_port_open``), ``connected``, ``up``,
    ``total``, ``failover_ready`` and ``findings``. When the daemon's pidfile or
    sockets cannot be read (permission denied), ``connected`` is None and a
    warning finding says why.

    CLI Example:

    .. code-block:: bash

        salt-call ha.status
        salt-call ha.status timeout=5
        salt '*' ha.status
    """
    timeout = ha_validate.validate_timeout(timeout)
    masters, connected, unknown = _probe_all(_endpoints(), timeout)
    return ha_report.build_status(masters, connected, _lint_running(_resolver_from(masters)), unknown)


def probe(master, timeout=2):
    """
    Probe one master: DNS, publish port, application-level ping on the ret port.

    master
        A master entry as the minion's ``master`` option takes it: ``host``,
        ``host:port``, ``[v6]:port`` or a bare IPv6 address. Ports default to the
        minion's ``master_port`` and ``publish_port``.

    timeout
        Seconds to wait for the answer. Default 2.

    Returns one entry of ``ha.status``'s ``masters``.

    CLI Example:

    .. code-block:: bash

        salt-call ha.probe salt1.example.com
        salt-call ha.probe 10.0.0.2:4506 timeout=1
    """
    timeout = ha_validate.validate_timeout(timeout)
    endpoint = ha_endpoints.endpoint_for(master, __opts__)
    masters, _, _ = _probe_all([endpoint], timeout)
    return masters[0]


def lint(config=None):
    """
    Lint the failover settings of this minion, or of a minion config file.

    Each finding is ``{"id", "severity": "error"|"warning"|"info", "option",
    "message", "suggestion"}``, errors first; ``id`` is stable (``HA104``; the
    README's ``ha.lint`` table lists them all). The last finding (``HA901``) states
    the estimated worst-case time to fail over for these settings.

    For the running minion the options are read as the salt-minion daemon reads
    them: its config file, the files ``default_include`` matches (``minion.d/*.conf``)
    and those ``include`` names, merged by Salt, over the daemon's options (so
    ``salt-call -t`` does not leak into ``auth_timeout``). A file among them that
    Salt cannot use is a finding (HA405-HA410).

    config
        Path of a minion YAML config file to lint instead of the running
        minion's options (e.g. a drop-in you are about to deploy); only that
        file is read, and a file Salt cannot use raises the problem.

    CLI Example:

    .. code-block:: bash

        salt-call ha.lint
        salt-call ha.lint config=/etc/salt/minion.d/failover.conf
    """
    resolver = lambda hosts: ha_probe.resolve_many(hosts, 2)  # noqa: E731
    if config is None:
        return _lint_running(resolver)
    return ha_lint.lint_options(ha_config_file.load_config_file(config), resolver=resolver)


def check(timeout=2, warn=None, crit=None):
    """
    Nagios plugin check of this minion's masters.

    Prints one plugin line ``SALT-HA OK|WARNING|CRITICAL|UNKNOWN - ... | perfdata``
    and sets the exit code 0/1/2/3 for ``salt-call --retcode-passthrough``:
    CRITICAL when no master answers or the connected master does not (hung or
    partitioned), WARNING when a master is down or failover is not ready, UNKNOWN (with what
    happened) when the check cannot run, whatever the error. Use it unchanged
    from Nagios/Icinga (``check_by_ssh`` or NRPE), a Zabbix ``UserParameter`` or
    keepalived's ``track_script``.

    timeout
        Seconds to wait for each master. Default 2.

    warn, crit
        Latency thresholds in milliseconds for the slowest master that answers.

    CLI Example:

    .. code-block:: bash

        salt-call --retcode-passthrough --out=txt ha.check
        salt-call --retcode-passthrough ha.check warn=50 crit=200
    """
    try:
        warn = _latency_limit(warn, "warn")
        crit = _latency_limit(crit, "crit")
        code, line = ha_report.nagios_line(status(timeout), warn, crit)
    except (SaltInvocationError, CommandExecutionError) as err:
        code, line = ha_report.unknown_line(err)
    except Exception as err:  # pylint: disable=broad-except  (a check answers UNKNOWN, never a traceback)
        ha_text.log_fault(log, "ha.check", err)
        code, line = ha_report.unknown_line(err)
    __context__["retcode"] = code
    return line


def metrics(path=None, timeout=2):
    """
    Prometheus metrics of this minion's masters (text exposition format).

    Families: ``salt_ha_master_up{master}``, ``salt_ha_master_latency_seconds{master}``,
    ``salt_ha_master_connected{master}``, ``salt_ha_findings{severity}``,
    ``salt_ha_failover_ready``.

    path
        Also write them to this file atomically, for node_exporter's textfile
        collector (e.g. ``/var/lib/node_exporter/textfile/salt_ha.prom``).

    timeout
        Seconds to wait for each master. Default 2.

    CLI Example:

    .. code-block:: bash

        salt-call --out=txt ha.metrics
        salt-call ha.metrics path=/var/lib/node_exporter/textfile/salt_ha.prom
    """
    text = ha_report.prometheus_text(status(timeout))
    if path is not None:
        try:
            ha_files.atomic_write(str(path), text, mode=0o644, backup=False)
        except OSError as err:
            raise CommandExecutionError(f"cannot write metrics to {path!r}: {err}") from err
    return text


def watch(config=None, memory=None, connected=None, confirm=False, name=None):
    """
    One tick of the ``ha`` beacon: the masters' latest probe results compared
    with ``memory``.

    Returns ``{"memory", "events", "leave", "errors", "probed"}``: the memory to
    pass to the next call, the transition events (``connected``, ``failover``,
    ``failback``, ``lost``, ``degraded``, ``recovered``, ``flapping``; each with
    ``tag``, ``transition``, ``from``, ``to``, ``up``, ``total``, ``down``,
    ``since``), the master the minion should leave because it has answered no
    probe for ``hang_ticks`` x ``probe_interval`` seconds while another answers
    (``leave``, else None), ``errors``: ``{master: why}`` for each master that
    did not answer (no address, refused, no answer within the timeout, a stale
    result, or the probe's own exception by type and message, which is also
    logged and leaves that master's memory as it was), and ``probed``: when the
    probe results used ended (ISO 8601 UTC; None when there are none yet).
    Without ``memory`` it is the first tick: ``connected`` fires, and
    ``degraded``/``lost`` when a master is already down.

    config
        The beacon's configuration (list of one-key dicts or a dict):
        ``timeout``, ``probe_interval``, ``hang_ticks``, ``failover_on_hang``,
        ``flap_count``, ``flap_window``; see the beacon's documentation.

    memory
        The ``memory`` a previous call returned.

    connected
        The master the minion daemon is connected to (the beacon passes the
        daemon's live ``master`` option; ``""`` for none). Default: read from the
        daemon's sockets, as ``ha.status`` does (an error saying why when they
        cannot be read).

    confirm
        With ``connected``, from inside the daemon (the beacon): count a change
        of master only once this process has an ESTABLISHED connection to the
        new master's publish port (Salt sets ``master`` to each candidate while
        it is still signing in), or once Salt kept it for 3 ticks. Default False.

    name
        The beacon's name (the beacon passes it): the call never waits on the
        network. A background thread of this process (one per name) probes the
        masters every ``probe_interval`` seconds and the call reads its latest
        results; the first call starts it and reports nothing yet. The memory
        is kept under this name for the life of the process too (a call without
        ``memory`` continues from it): Salt re-creates the beacon module on every
        pillar or module refresh. Without ``name`` the call probes the masters
        now, waiting up to ``timeout``.

    ``leave`` is only ever the master given in ``connected``: the hung master,
    or the master whose name now resolves to addresses the daemon's publish
    connection does not go to (with ``confirm``: a DNS name switched to another
    master; leaving it makes Salt resolve it again).

    With ``confirm`` and ``name`` (the beacon, inside the daemon): from the
    connected master's first failed probe until it has answered again for 3 s
    (``memory["suspect"]``; also for 3 s after its address's ARP entry changed
    host, as when a VIP moves without a failed probe), this process's
    connections to its publish and ret ports get short TCP keepalive
    (``ha_conncheck``), so a connection the host behind the address no longer
    holds (a VIP that moved) is reset at once and Salt reconnects; Salt's values
    are put back afterwards.

    CLI Example:

    .. code-block:: bash

        salt-call ha.watch
        salt-call ha.watch config='{"timeout": 1}'
    """
    try:
        settings = ha_watch.settings_from(config or [])
    except ValueError as err:
        raise SaltInvocationError(str(err)) from err
    endpoints = _endpoints()
    transport = __opts__.get("transport", "zeromq")
    round_ended = None  # probes taken for this call
    if name is None:
        masters, probed = ha_watch.tick_probe(endpoints, settings["timeout"], transport), time.time()
    else:
        masters, probed = ha_watch.worker_results(name, endpoints, settings, transport)
        round_ended = probed
        if memory is None:
            memory = ha_watch.MEMORY.get(name)
    if masters is None:
        return {"memory": memory or ha_watch.new_memory(), "events": [], "leave": None, "errors": {}, "probed": None}
    if connected is None:
        connected = ha_connection.mark_connected(masters, __opts__.get("pidfile"))
    remotes = (lambda: ha_connection.established_remotes([psutil.Process()])) if confirm else None
    memory, events, leave = ha_watch.tick(
        memory,
        masters,
        ha_watch.configured_entry(connected, endpoints),
        endpoints[0].master,
        time.time(),
        settings,
        remotes,
        ha_conncheck.neighbours if confirm else None,
        round_ended,
    )
    if name is not None:
        ha_watch.MEMORY[name] = memory
        if confirm:
            # The probe thread leaves a hung master through the same function as a tick.
            ha_watch.follow_connection(name, memory["connected"], memory["flapping"], __salt__["ha.leave_master"])
            ports = memory["suspect"] and _ports_of(memory["suspect"]["master"], endpoints)
            ha_conncheck.follow(name, ports, hold=ha_watch.VERIFY_SECONDS)
    errors = {entry["master"]: entry["error"] for entry in masters if entry["error"] and not entry["up"]}
    return {"memory": memory, "events": events, "leave": leave, "errors": errors, "probed": ha_watch.iso(probed)}


def _ports_of(master, endpoints):
    """The publish and ret ports of the configured entry ``master`` (None when it is not configured)."""
    endpoint = next((ep for ep in endpoints if ep.master == master), None)
    return (endpoint.publish_port, endpoint.ret_port) if endpoint else None


def validate_beacon(config):
    """
    Check a configuration of the ``ha`` beacon.

    Returns ``{"valid": bool, "message": str}``; the message names the bad
    option and value.

    config
        The beacon configuration: a list of one-key dicts, as under
        ``beacons: {ha: [...]}``.

    CLI Example:

    .. code-block:: bash

        salt-call ha.validate_beacon '[{"interval": 1}, {"timeout": 1}]'
    """
    valid, message = ha_watch.validate(config)
    return {"valid": valid, "message": message}


def stop_watch(name="ha"):
    """
    Stop the background probe thread of the ``ha`` beacon ``name`` in this
    process (the beacon's ``close``; Salt calls it when the beacon is deleted,
    disabled or refreshed), and put Salt's TCP keepalive values back on the
    master connections the beacon was checking. A later tick starts it again.

    Returns ``{"name": name, "stopped": bool}`` (False when none was running).

    CLI Example:

    .. code-block:: bash

        salt '*' ha.stop_watch
    """
    ha_conncheck.follow(name, None)
    return {"name": name, "stopped": ha_watch.stop_worker(name)}


def leave_master(master=None, not_after=None):
    """
    Make the running minion daemon leave ``master`` for the next master in its
    failover list, as Salt does when the connection closes: fires
    ``__master_disconnected`` with ``{"master": master}`` on the minion's event
    bus. The daemon ignores it unless ``master`` is its current master; use it
    for a master that hangs (keeps its TCP connection but does not answer),
    which Salt never leaves by itself.

    master
        The daemon's current master, as its ``master`` option holds it (the host
        of a ``host:port`` entry). Default: the master the daemon's sockets are
        connected to.

    not_after
        A POSIX time: when the job runs later than that, do nothing and say so
        (``ha.drill`` sets it so that a minion that was stuck does not leave
        after the drill has moved on).

    Returns ``{"master": master, "fired": bool}`` (``"late": True`` instead of
    firing when ``not_after`` has passed).

    CLI Example:

    .. code-block:: bash

        salt-call ha.leave_master
        salt-call ha.leave_master 10.0.0.1
    """
    if not_after is not None:
        deadline = ha_validate.validate_timeout(not_after, what="not_after", maximum=float("inf"))
        if time.time() > deadline:
            log.warning("salt-ha: not leaving the master: the request expired at %.3f", deadline)
            return {"master": master, "fired": False, "late": True}
    if master is None and isinstance(__opts__.get("master"), str):
        # In the daemon's job processes the master option is the current master
        # (Salt sets it when it signs in); a failover list means another process.
        master = __opts__["master"]
    if master is None:
        masters = ha_probe.probe_endpoints(_endpoints(), 1, __opts__.get("transport", "zeromq"))
        connected = ha_connection.mark_connected(masters, __opts__.get("pidfile"))
        if connected is None:
            raise CommandExecutionError("no running salt-minion daemon is connected to a configured master")
        master = ha_endpoints.endpoint_for(connected, __opts__).host
    with salt.utils.event.get_event("minion", opts=__opts__, listen=False) as event:
        fired = bool(event.fire_event({"master": master}, "__master_disconnected"))
    log.warning("salt-ha: asked the minion to leave master %r (fired: %s)", master, fired)
    return {"master": master, "fired": fired}


def returns():
    """
    This minion's return ledger (the ``ha_returns`` engine): job returns a failover
    kept from their master, pending delivery, and the last ones replayed or dropped.

    Returns ``{"enabled": bool (the engine is in the minion's engines option),
    "config_error": the engine's bad option or None, "directory": the ledger,
    "pending": [{"jid", "fun", "master" (published by), "why", "seen", "attempts",
    "bytes"}], "replayed": [{"jid", "fun", "master", "to", "at", "answer_seconds",
    ...}], "dropped": [{"jid", "fun", "master", "reason", "at", ...}], "counts":
    {"pending", "replayed", "dropped"}, "findings": [{"path", "reason"}]}`` (files in
    the ledger that are skipped: corrupt, not a salt-ha return, another minion's).
    Return data is never shown.

    CLI Example:

    .. code-block:: bash

        salt-call ha.returns
    """
    return ha_returns.ledger_report(__opts__)
