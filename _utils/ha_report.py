"""
Shape probe results into what ``ha.status``, ``ha.check`` and ``ha.metrics`` return.

Pure functions over plain data: the ``masters`` entries from ``ha_probe`` (with
``connected`` set by ``ha_connection``) and the findings from ``ha_lint``.
"""

import math

from salt.exceptions import CommandExecutionError, SaltException

import ha_keepalive
import ha_lint
import ha_text
from ha_lint import finding, sort_findings

SEVERITIES = tuple(ha_lint.SEVERITY_ORDER)
NAGIOS_CODES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def probe_findings(masters, connected, connection_error=None):
    """
    Findings that only a live probe can tell: masters down, a connected master
    that does not answer (hung or partitioned), no daemon connected, or (``connection_error``: why) no way to tell
    which master the daemon is connected to.
    """
    found = []
    for entry in masters:
        if entry["up"]:
            continue
        error = ha_text.printable(entry["error"])
        if entry["connected"]:
            found.append(
                finding(
                    "error",
                    "master",
                    f"the minion is connected to {entry['master']!r}, which does not answer (hung or "
                    f"partitioned): {error} (its TCP connection stays up: stock Salt never leaves a hung "
                    "master, and a partitioned one only when TCP keepalive aborts the connection)",
                    "investigate the master; the salt-ha beacon moves the minion off it (beacons: {ha: []}), "
                    f"and for partitions {ha_keepalive.suggestion()}",
                )
            )
        else:
            found.append(
                finding(
                    "warning",
                    "master",
                    f"master {entry['master']!r} is down: {error}",
                    "bring it back or remove it from the master list",
                )
            )
    if connection_error is not None:
        found.append(
            finding(
                "warning",
                "master",
                "cannot tell which master the salt-minion daemon is connected to: "
                f"{ha_text.printable(connection_error)}",
                "run this as root (or as the salt-minion's user), which can read the "
                "daemon's pidfile and sockets",
            )
        )
    elif connected is None:
        found.append(
            finding(
                "info",
                "master",
                "no running salt-minion daemon is connected to any configured master",
                "start the salt-minion service (or ignore this for salt-call --local)",
            )
        )
    return found


def is_failover_ready(masters, connected, findings):
    """A minion can fail over when another master is up and no finding is an error."""
    others_up = [m for m in masters if m["up"] and m["master"] != connected]
    errors = [f for f in findings if f["severity"] == "error"]
    return len(masters) >= 2 and bool(others_up) and not errors


def build_status(masters, connected, lint_findings, connection_error=None):
    """The ``ha.status`` return (``connection_error``: see :func:`probe_findings`)."""
    findings = sort_findings(probe_findings(masters, connected, connection_error) + list(lint_findings))
    return {
        "masters": masters,
        "connected": connected,
        "up": sum(1 for m in masters if m["up"]),
        "total": len(masters),
        "failover_ready": is_failover_ready(masters, connected, findings),
        "findings": findings,
    }


def perf_label(text):
    """A Nagios perfdata label, quoted as the plugin guidelines require."""
    return "'" + str(text).replace("'", "''") + "'"


def perfdata(status, warn, crit):
    """``up=..`` ``total=..`` and one latency figure per master, in Nagios syntax."""
    fields = [f"up={status['up']};;;0;{status['total']}", f"total={status['total']}"]
    limits = f"{'' if warn is None else f'{warn:g}'};{'' if crit is None else f'{crit:g}'}"
    for entry in status["masters"]:
        value = "U" if entry["latency_ms"] is None else f"{entry['latency_ms']:g}ms"
        fields.append(f"{perf_label('latency_' + entry['master'])}={value};{limits};0")
    return " ".join(fields)


def nagios_state(status, warn, crit):
    """``(state word, reason)`` from the status and latency thresholds in milliseconds."""
    connected = next((m for m in status["masters"] if m["connected"]), None)
    latencies = [m["latency_ms"] for m in status["masters"] if m["up"]]
    worst = max(latencies) if latencies else None
    if status["up"] == 0:
        return "CRITICAL", "no master answers"
    if connected is not None and not connected["up"]:
        return "CRITICAL", f"connected master {connected['master']} does not answer (hung or partitioned)"
    # Nagios plugin guidelines: alert when the value is *above* the threshold.
    if crit is not None and worst is not None and worst > crit:
        return "CRITICAL", f"latency {worst:g} ms > {crit:g} ms"
    if status["up"] < status["total"]:
        return "WARNING", "a master is down"
    if not status["failover_ready"]:
        return "WARNING", "failover not ready"
    if warn is not None and worst is not None and worst > warn:
        return "WARNING", f"latency {worst:g} ms > {warn:g} ms"
    return "OK", "all masters answer"


def nagios_line(status, warn=None, crit=None):
    """``(retcode, plugin line)`` for Nagios/Icinga, Zabbix and keepalived."""
    state, reason = nagios_state(status, warn, crit)
    down = [m["master"] for m in status["masters"] if not m["up"]]
    message = (
        f"{reason}: {status['up']}/{status['total']} masters up, "
        f"connected {status['connected'] or 'none'}"
    )
    if down:
        message += f", down: {', '.join(down)}"
    errors = sum(1 for f in status["findings"] if f["severity"] == "error")
    if errors:
        message += f", {errors} config error(s)"
    line = f"SALT-HA {state} - {message} | {perfdata(status, warn, crit)}"
    return NAGIOS_CODES[state], ha_text.printable(line)  # one line, whatever the master names hold


def unknown_line(error):
    """
    The plugin line when the check itself could not run: a Salt error by its
    message, any other exception as ``TypeName: message``; always one line.
    """
    if isinstance(error, Exception) and not isinstance(error, SaltException):
        text = ha_text.describe_error(error)
    else:
        text = ha_text.printable(error)
    return NAGIOS_CODES["UNKNOWN"], f"SALT-HA UNKNOWN - {text}"


def prometheus_text(status):
    """
    Prometheus text exposition of a ``ha.status`` return (prometheus_client).

    Raises ``CommandExecutionError`` saying so when prometheus_client is not
    installed (imported here, so that the rest of the module works without it).
    """
    try:
        # pylint: disable-next=import-outside-toplevel
        from prometheus_client import CollectorRegistry, Gauge, generate_latest
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name == "prometheus_client":
            raise CommandExecutionError(
                "prometheus_client is not installed; ha.metrics needs it: pip install prometheus_client "
                "(salt-pip install prometheus_client for onedir Salt)"
            ) from err
        raise CommandExecutionError(
            f"prometheus_client cannot be imported ({ha_text.describe_error(err)}); ha.metrics "
            "needs it: pip install --force-reinstall prometheus_client"
        ) from err
    registry = CollectorRegistry()
    up = Gauge("salt_ha_master_up", "1 if the master answers an application-level ping", ["master"], registry=registry)
    latency = Gauge("salt_ha_master_latency_seconds", "Ping round trip to the master", ["master"], registry=registry)
    connected = Gauge(
        "salt_ha_master_connected", "1 if the minion daemon is connected to the master", ["master"], registry=registry
    )
    findings = Gauge("salt_ha_findings", "Failover findings by severity", ["severity"], registry=registry)
    ready = Gauge("salt_ha_failover_ready", "1 if the minion can fail over now", registry=registry)
    for entry in status["masters"]:
        up.labels(master=entry["master"]).set(1 if entry["up"] else 0)
        seconds = math.nan if entry["latency_ms"] is None else entry["latency_ms"] / 1000
        latency.labels(master=entry["master"]).set(seconds)
        connected.labels(master=entry["master"]).set(1 if entry["connected"] else 0)
    for severity in SEVERITIES:
        count = sum(1 for f in status["findings"] if f["severity"] == severity)
        findings.labels(severity=severity).set(count)
    ready.set(1 if status["failover_ready"] else 0)
    return generate_latest(registry).decode("utf-8")
