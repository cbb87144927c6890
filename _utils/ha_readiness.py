"""
Would failover work for a minion now? The readiness of ``ha.readiness``.

A minion is ready when its key is accepted with one fingerprint on every master,
the masters share one master key or all sign with one signing key (the key model,
:mod:`ha_key_model`), the minion's side matches that model (it verifies signatures
exactly when the masters sign, with their signing key), and its own ``ha.lint``
reports no error. :func:`readiness` gathers the masters' inventories
(:mod:`ha_sync`), asks the minions accepted here for their ``ha.lint``
(:func:`lint_minions`), and gives each minion that is not ready its reasons, each
with a fix (:func:`minion_readiness`).
"""

import fnmatch
import logging
import typing

import salt.client
from salt.exceptions import SaltClientError

import ha_key_model
import ha_keys
import ha_sync

log = logging.getLogger(__name__)

LINT_TIMEOUT = 5
LINT_GATHER_TIMEOUT = 2


class LintUnavailable(typing.NamedTuple):
    """Why a minion's ``ha.lint`` findings are not there, and what to do about it."""

    reason: str
    fix: str


def minion_key_facts(lint_findings):
    """The key facts the minion's ``ha.lint`` reports (HA601's ``key_model``), or None."""
    if not isinstance(lint_findings, list):
        return None
    return next(
        (item.get("key_model") for item in lint_findings if isinstance(item, dict) and item.get("id") == "HA601"),
        None,
    )


def minion_readiness(minion_id, inventories, source, lint_findings, master_problem, key_model=None):
    """
    The reasons ``minion_id`` would not fail over: ``[{"reason", "fix"}]`` (empty:
    ready). ``lint_findings`` is the minion's ``ha.lint`` answer (a list of
    findings, or the error text it returned) or a :class:`LintUnavailable`.
    ``master_problem``: one ``{"reason", "fix"}`` or a list of them, the masters'
    key problems; ``key_model`` (:func:`ha_key_model.master_key_model`): the
    minion's own key facts (its ``ha.lint`` HA601) are checked against it.
    """
    reasons = []
    seen = {}
    for name, inv in sorted(inventories.items()):
        keys = inv.get("keys") or {}
        seen[name] = next(
            ((status, keys[status][minion_id]) for status in ha_keys.KEY_STATUSES
             if minion_id in keys.get(status, {})),
            (None, None),
        )
    accepted = {name: fp for name, (status, fp) in seen.items() if status == "accepted"}
    source_fp = accepted.get(source) or next(iter(accepted.values()), None)
    for name, (status, fp) in sorted(seen.items()):
        if status == "accepted" and fp == source_fp:
            continue
        if status in ("rejected", "denied"):
            reasons.append({"reason": f"key is {status} on {name}",
                            "fix": f"salt-key -a {minion_id} --include-rejected --include-denied on {name}"
                                   " if the minion is legitimate"})
        elif status in ("accepted", "pending") and fp != source_fp:
            reasons.append({"reason": f"key {status} on {name} differs from the one accepted on the other masters",
                            "fix": f"find out which key is genuine; delete the other one (salt-key -d {minion_id})"
                                   " and run salt-run ha.sync_keys"})
        else:
            what = "pending" if status == "pending" else "missing"
            holder = source if source in accepted else next(iter(sorted(accepted)), None)
            fix = (f"salt-run ha.sync_keys on {holder}" if holder else
                   f"accept the key on one master (salt-key -a {minion_id}), then run salt-run ha.sync_keys there")
            reasons.append({"reason": f"key {what} on {name}", "fix": fix})
    if isinstance(master_problem, dict):
        reasons.append(master_problem)
    elif master_problem:
        reasons.extend(master_problem)
    if key_model is not None:
        reasons.extend(ha_key_model.minion_key_problems(key_model, minion_key_facts(lint_findings)))
    if isinstance(lint_findings, LintUnavailable):
        reasons.append({"reason": lint_findings.reason, "fix": lint_findings.fix})
    elif not isinstance(lint_findings, list):
        reasons.append({"reason": f"ha.lint failed on the minion: {str(lint_findings)[:200]!r}",
                        "fix": "sync the pack to the minion (saltutil.sync_all) and retry"})
    else:
        for finding in lint_findings:
            if isinstance(finding, dict) and finding.get("severity") == "error":
                reasons.append({"reason": f"ha.lint: {finding.get('option')}: {finding.get('message')}",
                                "fix": finding.get("suggestion") or "see salt-call ha.lint on the minion"})
    return reasons


def lint_minions(opts, minion_ids):
    """``({minion_id: findings or error text}, None)``, or ``({}, why)`` when no minion could be asked."""
    if not minion_ids:
        return {}, None
    try:
        with salt.client.get_local_client(opts["conf_file"]) as client:
            answers = client.cmd(
                list(minion_ids), "ha.lint", tgt_type="list",
                timeout=LINT_TIMEOUT, gather_job_timeout=LINT_GATHER_TIMEOUT,
            )
    except SaltClientError as err:
        log.warning("ha.readiness: cannot run ha.lint on the minions: %s", err)
        return {}, f"{opts.get('id')} cannot publish to its minions: {err}"
    return answers, None


def lint_of(source, minion_id, accepted_here, lint, lint_error):
    """What :func:`minion_readiness` gets for one minion: its findings or a :class:`LintUnavailable`."""
    if minion_id not in accepted_here:
        return LintUnavailable(
            f"ha.lint not run: the key is not accepted on {source}, where ha.readiness ran",
            "run ha.readiness on a master where the key is accepted, or salt-run ha.sync_keys there",
        )
    if lint_error:
        return LintUnavailable(f"ha.lint not run: {lint_error}", f"check the salt-master on {source}")
    if minion_id not in lint:
        return LintUnavailable(
            f"the minion did not answer ha.lint within {LINT_TIMEOUT} s",
            "check that the minion runs and has the ha module (saltutil.sync_all)",
        )
    return lint[minion_id]


def readiness(opts, peers, progress, tgt="*"):
    """The ``ha.readiness`` report for the minions whose id matches the glob ``tgt``."""
    inventories, unreachable = ha_sync.inventories(opts, peers, progress, trees=False, keys=True)
    source = opts.get("id")
    known = set()
    for inv in inventories.values():
        for ids in (inv.get("keys") or {}).values():
            known.update(ids)
    minion_ids = sorted(minion_id for minion_id in known if fnmatch.fnmatch(minion_id, str(tgt)))
    progress(f"ha.readiness: {len(minion_ids)} minions, {len(inventories)} masters")
    accepted_here = set((inventories[source].get("keys") or {}).get("accepted", {}))
    lint, lint_error = lint_minions(opts, [minion_id for minion_id in minion_ids if minion_id in accepted_here])
    key_model = ha_key_model.master_key_model(inventories)
    ready, not_ready = [], []
    for minion_id in minion_ids:
        findings = lint_of(source, minion_id, accepted_here, lint, lint_error)
        reasons = minion_readiness(minion_id, inventories, source, findings, key_model["problems"], key_model)
        if unreachable:
            reasons.append({"reason": f"masters not checked: {', '.join(sorted(unreachable))}",
                            "fix": "bring their salt-api back and rerun ha.readiness"})
        if reasons:
            not_ready.append({"minion": minion_id, "reasons": reasons})
        else:
            ready.append(minion_id)
    return {
        "masters": sorted(inventories),
        "unreachable": unreachable,
        "key_model": ha_key_model.summary(key_model),
        "ready": ready,
        "not_ready": not_ready,
    }

