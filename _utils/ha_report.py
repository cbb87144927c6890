"""
Shape probe results into what ``ha.status``, ``ha.check`` and ``ha.metrics`` return.

Pure functions over plain data: the ``masters`` entries from ``ha_probe`` (with
``connected`` set by ``ha_connection``) and the findings from ``ha_lint``.
"""

import math

from prometheus_client import CollectorRegistry, Gauge, generate_latest

import ha_lint
from ha_lint import finding, sort_findings

SEVERITIES = tuple(ha_lint.SEVERITY_ORDER)
NAGIOS_CODES = {"OK": 0, "WARNING": 1, "CRITICAL": 2, "UNKNOWN": 3}


def probe_findings(masters, connected):
    """Findings that only a live probe can tell: masters down, a hung connected master."""
    found = []
    for entry in masters:
        if entry["up"]:
            continue
        if entry["connected"]:
            found.append(
                finding(
                    "error",
                    "master",
                    f"the minion is connected to {entry['master']}, which does not answer: "
                    f"{entry['error']} (a hung master keeps its TCP connection; stock Salt never leaves it)",
                    "investigate the master; the salt-ha beacon moves the minion off a hung master",
                )
            )
        else:
            found.append(
                finding(
                    "warning",
                    "master",
                    f"master {entry['master']} is down: {entry['error']}",
                    "bring it back or remove it from the master list",
                )
            )
    if connected is None:
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


def build_status(masters, connected, lint_findings):
    """The ``ha.status`` return."""
    findings = sort_findings(probe_findings(masters, connected) + list(lint_findings))
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
        return "CRITICAL", f"connected master {connected['master']} does not answer"
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
    return NAGIOS_CODES[state], f"SALT-HA {state} - {message} | {perfdata(status, warn, crit)}"


def unknown_line(error):
    """The plugin line when the check itself could not run."""
    return NAGIOS_CODES["UNKNOWN"], f"SALT-HA UNKNOWN - {error}"


def prometheus_text(status):
    """Prometheus text exposition of a ``ha.status`` return (prometheus_client)."""
    registry = CollectorRegistry()
    up = Gauge("salt_ha_master_up", "1 if the master answers an application-level ping", ["master"], registry=registry)
    latency = Gauge("salt_ha_master_latency_seconds", "Ping round trip to the master", ["master"], registry=registry)
    connected = Gauge("salt_ha_master_connected", "1 if the minion daemon is connected to the master", ["master"], registry=registry)
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
