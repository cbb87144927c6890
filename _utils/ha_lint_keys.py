"""
Lint rules HA6xx: the master keys a failover minion accepts (:mod:`ha_key_model`).

A minion fails over only to a master whose public key it accepts: one shared
``master.pem`` on every master, or master pubkey signing (the masters sign their
own keys with one shared ``master_sign.pem``, the minion verifies with
``master_sign.pub`` in its pki dir). Read in Salt 3008's ``salt/crypt.py``
(``AsyncAuth.verify_master``, ``check_auth_deps``, ``verify_pubkey_sig``, the
``master_finger`` check of ``sign_in``).

The rules that read the minion's pki dir run for a running minion's options only
(``__role`` present): a config file alone does not say where its pki dir is.
Each rule takes a :class:`ha_lint_context.LintContext` and returns a list of
findings with the ids it declares (:func:`ha_lint_findings.produces`).
"""

import ha_key_model
import ha_text
from ha_lint_findings import lint_finding, produces

VERIFY = "verify_master_pubkey_sign"
SIGNING_SETUP = (
    "ha.master_signing on every master (one signing key pair), ha.minion_failover with "
    "verify_master_pubkey_sign: True and master_sign_pub on the minions"
)


def verifies(ctx):
    """The minion verifies the master's signature (``verify_master_pubkey_sign`` is True)."""
    return ctx.effective_options.get(VERIFY) is True


def fails_over(ctx):
    """A failover minion with at least two masters."""
    return ctx.failover and len(ctx.endpoints) >= 2


def model_finding(facts):
    """HA601: the key model this running minion uses, with its facts under ``key_model``."""
    if facts["model"] == ha_key_model.SIGNING:
        fingerprint = facts["master_sign_pub_fingerprint"] or f"none: {facts['master_sign_pub_problem']}"
        message = (
            "key model: master pubkey signing. The minion accepts any master whose public key is "
            f"signed by the key in {ha_text.printable(facts['master_sign_pub'])} (fingerprint "
            f"{fingerprint}): every master needs master_sign_pubkey: True and that same signing key "
            "pair; a master that does not sign is refused"
        )
        suggestion = "salt-run ha.readiness on a master compares this key with the masters' master_sign.pub"
    else:
        cached = facts["cached_master_pub_fingerprint"] or "none cached yet"
        message = (
            "key model: one shared master key. The minion accepts only the master key it cached "
            f"({ha_key_model.CACHED_MASTER_PUB}, fingerprint {cached}): every master needs the same "
            "master.pem; a master with another key, or one that signs its key (master_sign_pubkey), is refused"
        )
        suggestion = (
            "keep one master.pem on every master (ha.master_keypair; salt-run ha.readiness checks it), or "
            f"switch to master pubkey signing: {SIGNING_SETUP}"
        )
    finding = lint_finding("HA601", "info", VERIFY, message, suggestion)
    finding["key_model"] = facts
    return finding


@produces("HA601", "HA602", "HA603", "HA605")
def check_signing_key_file(ctx):
    """
    HA601-HA603, HA605, for a running minion: the key model it uses (info, failover
    only, with ``key_model``: :func:`ha_key_model.minion_key_facts`); with
    ``verify_master_pubkey_sign``, a signing public key that is missing (error:
    ``verify_pubkey_sig`` logs "Verification public key ... does not exist" and
    the minion refuses every master whose key it has not cached, so failover to a
    master with another ``master.pem`` fails) or that Salt cannot use (error); a
    signing public key in the pki dir of a failover minion that does not verify
    (warning: half a signing setup, and the minion refuses masters that sign).
    """
    if not ctx.running_minion:
        return []
    facts = ha_key_model.minion_key_facts(ctx.effective_options)
    path = ha_text.printable(facts["master_sign_pub"])
    problem = facts["master_sign_pub_problem"]
    findings = [model_finding(facts)] if fails_over(ctx) else []
    if verifies(ctx) and problem == "missing":
        findings.append(
            lint_finding(
                "HA602", "error", VERIFY,
                f"verify_master_pubkey_sign is True but the signing public key {path} is missing: the "
                "minion refuses every master whose key it has not cached, so failing over to a master "
                "with another master.pem fails",
                "ha.minion_failover with verify_master_pubkey_sign: True and master_sign_pub (the masters' "
                "master_sign.pub)",
            )
        )
    elif verifies(ctx) and problem:
        findings.append(
            lint_finding(
                "HA603", "error", VERIFY,
                f"the signing public key {path} cannot be used ({ha_text.printable(problem)}): the minion "
                "refuses every master whose key it has not cached",
                "ha.minion_failover with master_sign_pub: the text of the masters' master_sign.pub",
            )
        )
    elif not verifies(ctx) and problem is None and fails_over(ctx):
        findings.append(
            lint_finding(
                "HA605", "warning", VERIFY,
                f"a signing public key is in the pki dir ({path}) but verify_master_pubkey_sign is not True: "
                "the minion ignores it, accepts only the master key it cached, and refuses masters that "
                "sign their key (master_sign_pubkey)",
                "ha.minion_failover with verify_master_pubkey_sign: True and master_sign_pub when the masters "
                "sign; else remove the file",
            )
        )
    return findings


@produces("HA604", "HA606")
def check_signing_options(ctx):
    """
    HA604, HA606: ``master_finger`` with ``verify_master_pubkey_sign`` on a failover
    minion (warning: the fingerprint pins one master's key, and with signing the
    masters may have different ``master.pem``; after failing over to one of those
    the minion logs the fingerprint mismatch and exits with code 42);
    ``always_verify_signature`` without ``verify_master_pubkey_sign`` (error: a
    sign-in to a master whose key the minion cached raises ``'pub_sig'`` from a
    master that does not sign, and ``check_auth_deps`` refuses one that signs).
    """
    findings = []
    finger = ctx.effective_options.get("master_finger")
    if verifies(ctx) and finger and fails_over(ctx):
        findings.append(
            lint_finding(
                "HA604", "warning", "master_finger",
                f"master_finger {ha_text.shown(finger)} pins one master's public key while "
                "verify_master_pubkey_sign lets masters keep their own master.pem: after failing over to a "
                "master with another key the minion exits (code 42, fingerprint mismatch)",
                "remove master_finger (the signature check replaces it), or keep one master.pem on every master",
            )
        )
    if ctx.effective_options.get("always_verify_signature") and not verifies(ctx):
        findings.append(
            lint_finding(
                "HA606", "error", "always_verify_signature",
                "always_verify_signature is True but verify_master_pubkey_sign is not: every sign-in to a "
                "master whose key the minion cached fails (Salt raises 'pub_sig' for a master that does not "
                "sign, and refuses one that signs)",
                f"always_verify_signature: False, or master pubkey signing: {SIGNING_SETUP}",
            )
        )
    return findings
