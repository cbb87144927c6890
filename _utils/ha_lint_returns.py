"""
Lint rules HA5xx: job returns across a failover. Salt 3008's minion sends a job's
return only to the master that published the job, and only while that master is
its current one: a return on its way when the minion fails over is dropped. The
``ha_returns`` engine (:mod:`ha_returns`) delivers those returns to the new master.

Each rule takes a :class:`ha_lint_context.LintContext` and returns a list of findings
with the ids it declares (:func:`ha_lint_findings.produces`).
"""

from salt.exceptions import SaltInvocationError

import ha_returns
import ha_text
from ha_lint_findings import lint_finding, produces

ENGINE = "ha_returns"


def engine_options(options):
    """
    ``(options of the ha_returns entry of engines or None, why they cannot be read or
    None)``; ``ha_returns.configured_options`` raises on entries that are no mapping.
    """
    try:
        return ha_returns.configured_options(options), None
    except (TypeError, ValueError) as err:
        engines = options.get("engines")
        what = "is not a list of engines" if not isinstance(engines, (list, dict)) else (
            f"holds {ENGINE} options that are not a mapping"
        )
        return None, f"the engines option {ha_text.shown(engines)} {what} ({err})"


def option_names():
    """The ha_returns options, for the suggestion."""
    return ", ".join(sorted(ha_returns.DEFAULTS) + ["directory"])


@produces("HA501", "HA502")
def check_returns_engine(ctx):
    """
    HA501, HA502: a failover minion without the ``ha_returns`` engine loses the
    returns of jobs that end while it changes master (info, only for a running
    minion's options: one file does not say what the minion's other files
    configure); ``ha_returns`` options that ``ha_returns.engine_config`` refuses
    make the engine log the error and guard nothing (error).
    """
    options, unreadable = engine_options(ctx.effective_options)
    if unreadable is None and options is not None:
        try:
            ha_returns.engine_config(options, ctx.effective_options)
        except SaltInvocationError as err:
            unreadable = str(err)
    if unreadable is not None:
        return [
            lint_finding(
                "HA502", "error", "engines",
                f"the {ENGINE} engine cannot run: {ha_text.printable(unreadable)}; it logs that error "
                "and guards no job return",
                f"give {ENGINE} a mapping of its options ({option_names()}), or "
                f"{ENGINE}: {{}} for the defaults",
            )
        ]
    if options is not None or not ctx.running_minion or not ctx.failover or len(ctx.endpoints) < 2:
        return []
    return [
        lint_finding(
            "HA501", "info", "engines",
            f"the {ENGINE} engine is not configured: the return of a job that ends while the "
            "minion fails over is dropped (Salt sends a return only to the master that "
            "published the job, and only while it is the minion's current master)",
            f"ha.minion_failover with returns_engine: True (or engines: [{{{ENGINE}: {{}}}}] in "
            "a minion.d/*.conf drop-in)",
        )
    ]
