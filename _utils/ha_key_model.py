"""
The two key models of a failover set: which master keys a minion accepts.

A minion fails over only to a master whose public key it accepts (Salt 3008,
``salt.crypt.AsyncAuth.verify_master``):

- :data:`SHARED`, one shared master key: every master has the same
  ``master.pem``. The minion accepts only the master key it cached
  (``minion_master.pub``); a master with another key is refused ("The master key
  has changed") and failover never succeeds.
- :data:`SIGNING`, master pubkey signing: every master keeps its own
  ``master.pem`` and signs its public key with one shared signing key pair
  (``master_sign_pubkey: True``, ``master_sign.pem``/``master_sign.pub`` in its pki
  dir); the minion (``verify_master_pubkey_sign: True``, ``master_sign.pub`` in its
  pki dir) accepts any master key signed by that pair. Measured: failover in
  0.40-0.47 s between masters with different ``master.pem``.

Both sides must agree (``AsyncAuth.check_auth_deps``): a minion that does not
verify refuses a master that signs, and a minion that verifies refuses a master
that does not sign, at every sign-in. :func:`master_key_model` tells the model of a
set of masters from their inventories (:mod:`ha_drift`) and what breaks it;
:func:`minion_key_facts` reads one minion's side from its options and pki dir;
:func:`minion_key_problems` compares the two.
"""

import os

import salt.config
import salt.utils.files
from cryptography.hazmat.primitives.asymmetric import rsa

import ha_keys
import ha_keystore
import ha_text

SHARED = "shared master key"
SIGNING = "signing"
MIXED = "mixed"  # some masters sign their key, others do not
SIGN_KEY_NAME = "master_sign"  # Salt's default master_sign_key_name (master and minion)
CACHED_MASTER_PUB = "minion_master.pub"  # where a minion keeps the key of the last master it accepted

SIGNING_STATES = (
    "ha.master_signing with one signing key pair on every master (then restart them), and "
    "ha.minion_failover with verify_master_pubkey_sign: True and master_sign_pub on the minions"
)


def public_key_problem(pem):
    """
    None when ``pem`` is exactly one PEM RSA public key block (whitespace around it
    at most), else why not. A ``PRIVATE KEY`` block is refused and never echoed.
    """
    problem = ha_keystore.pem_shape_problem(pem)
    if problem:
        return problem
    try:
        key = ha_keys.load_public_key(pem)
    except ValueError as err:
        return f"public key is {err}"
    if not isinstance(key, rsa.RSAPublicKey):
        return "public key is not an RSA key (Salt signs with RSA)"
    return None


def sign_key_name(opts):
    """The signing key pair's base name: ``master_sign_key_name``, Salt's default ``master_sign``."""
    name = opts.get("master_sign_key_name")
    return name if isinstance(name, str) and name.strip() else SIGN_KEY_NAME


def read_key_file(path):
    """``(text, problem)``: the file's text, or None and why it cannot be used ("missing", ...)."""
    try:
        with salt.utils.files.fopen(path, "rb") as handle:
            data = handle.read(ha_keystore.MAX_PEM_BYTES + 1)
    except FileNotFoundError:
        return None, "missing"
    except IsADirectoryError:
        return None, "a directory, not a file"
    except OSError as err:
        return None, f"unreadable here ({err.strerror})"
    try:
        return data.decode("ascii"), None
    except UnicodeDecodeError:
        return None, "not ASCII PEM text"


def resolved_pki_dir(opts):
    """
    ``pki_dir`` as the daemon uses it: Salt prepends ``root_dir``
    (``salt.config.prepend_root_dir``) to the value written in a config file, which
    is what a running minion's options read from its files hold.
    """
    pki_dir = opts.get("pki_dir")
    if not isinstance(pki_dir, str) or not pki_dir:
        return ""
    root_dir = opts.get("root_dir")
    if not isinstance(root_dir, str) or not root_dir:
        return pki_dir
    paths = {"root_dir": root_dir, "pki_dir": pki_dir}
    salt.config.prepend_root_dir(paths, ["pki_dir"])  # in place
    return paths["pki_dir"]


def minion_key_facts(opts):
    """
    One minion's side of the key model, from its options and pki dir:
    ``{"model", "verify", "master_sign_pub", "master_sign_pub_fingerprint",
    "master_sign_pub_problem", "cached_master_pub_fingerprint"}``. ``model`` is
    :data:`SIGNING` when ``verify_master_pubkey_sign`` is on, else :data:`SHARED`;
    ``master_sign_pub`` the path Salt reads the signing public key from
    (``<pki_dir>/<master_sign_key_name>.pub``); its fingerprint (path-based
    sha256) or None, and why it cannot be used (None: usable; ``"missing"``, or the
    reason); the fingerprint of ``minion_master.pub`` (None when there is none).
    """
    pki_dir = resolved_pki_dir(opts)
    verify = opts.get("verify_master_pubkey_sign") is True
    path = os.path.join(pki_dir, f"{sign_key_name(opts)}.pub")
    text, problem = read_key_file(path)
    if text is not None:
        problem = public_key_problem(text)
    fingerprint = ha_keys.fingerprint(text) if text is not None and problem is None else None
    cached, cached_problem = read_key_file(os.path.join(pki_dir, CACHED_MASTER_PUB))
    return {
        "model": SIGNING if verify else SHARED,
        "verify": verify,
        "master_sign_pub": path,
        "master_sign_pub_fingerprint": fingerprint,
        "master_sign_pub_problem": problem,
        "cached_master_pub_fingerprint": ha_keys.fingerprint(cached) if cached_problem is None else None,
    }


# --- the masters' side -----------------------------------------------------------------


def _listed(values):
    """``a fp1, b fp2`` for ``{master: value}`` (sorted by master)."""
    return ", ".join(f"{name} {value}" for name, value in sorted(values.items()))


def _names(names):
    return ", ".join(sorted(names))


def master_key_model(inventories):
    """
    The key model of the masters whose inventories (:func:`ha_drift.master_inventory`)
    are given: ``{"model", "masters": {name: {"signs", "master_pub_fingerprint",
    "master_sign_pub_fingerprint"}}, "master_pub_shared": bool, "signing_key":
    fingerprint or None, "problems": [{"reason", "fix"}]}``.

    ``model``: :data:`SIGNING` when every master signs (``master_sign_pubkey``),
    :data:`SHARED` when none does, :data:`MIXED` otherwise. ``signing_key``: the
    one signing public key of every signing master (None when they have none or
    several). ``problems`` is empty when the model works: one ``master.pub`` on
    every master (shared), or one ``master_sign.pub`` on every master (signing).
    """
    masters = {
        name: {
            "signs": bool(inv.get("master_sign_pubkey")),
            "master_pub_fingerprint": inv.get("master_pub_fingerprint"),
            "master_sign_pub_fingerprint": inv.get("master_sign_pub_fingerprint"),
        }
        for name, inv in inventories.items()
    }
    signing = {name for name, facts in masters.items() if facts["signs"]}
    plain = set(masters) - signing
    master_pubs = {name: facts["master_pub_fingerprint"] for name, facts in masters.items()}
    sign_pubs = {name: masters[name]["master_sign_pub_fingerprint"] for name in signing}
    problems = []
    if signing and plain:
        model = MIXED
        problems.append({
            "reason": f"{_names(signing)} sign their public key (master_sign_pubkey: True), {_names(plain)} "
            "do not: a minion that verifies signatures refuses the masters that do not sign, one that "
            "does not verify refuses the masters that sign (Salt's check_auth_deps)",
            "fix": f"ha.master_signing on {_names(plain)} with the signing key pair of {_names(signing)} "
            "(then restart them), or no master_sign_pubkey anywhere and one shared master.pem",
        })
    elif signing:
        model = SIGNING
    else:
        model = SHARED
        if len(set(master_pubs.values())) > 1:
            problems.append({
                "reason": "the masters have different master.pub keys and none signs it: a minion accepts "
                f"only the master key it cached and refuses the next master ({_listed(master_pubs)})",
                "fix": "give every master the same master.pem/master.pub (state ha.master_keypair), or "
                f"set up master pubkey signing: {SIGNING_STATES}",
            })
    unsigned = sorted(name for name, fingerprint in sign_pubs.items() if fingerprint is None)
    if unsigned:
        problems.append({
            "reason": f"{_names(unsigned)} set master_sign_pubkey but hold no master_sign.pub in the pki dir "
            "(a salt-master started so generates a signing key pair of its own, which no minion trusts)",
            "fix": f"ha.master_signing on {_names(unsigned)} with the signing key pair of the other masters, "
            "then restart them",
        })
    known = {name: fingerprint for name, fingerprint in sign_pubs.items() if fingerprint is not None}
    if len(set(known.values())) > 1:
        problems.append({
            "reason": "the masters sign with different signing keys: a minion trusts one master_sign.pub and "
            f"refuses the masters signed by another ({_listed(known)})",
            "fix": "ha.master_signing with one signing key pair on every master, then restart them; give the "
            "minions its master_sign.pub (ha.minion_failover master_sign_pub)",
        })
    distinct = set(known.values())
    signing_key = next(iter(distinct)) if model == SIGNING and len(distinct) == 1 and not unsigned else None
    return {
        "model": model,
        "masters": masters,
        "master_pub_shared": len(set(master_pubs.values())) == 1,
        "signing_key": signing_key,
        "problems": problems,
    }


def summary(model):
    """
    What ``ha.readiness``, ``ha.drift`` and ``ha.status`` report about the masters'
    keys: ``{"model", "master_pub_shared", "signing_key", "signing": [masters that
    sign], "problems": [{"reason", "fix"}]}`` of a :func:`master_key_model`.
    """
    return {
        "model": model["model"],
        "master_pub_shared": model["master_pub_shared"],
        "signing_key": model["signing_key"],
        "signing": sorted(name for name, facts in model["masters"].items() if facts["signs"]),
        "problems": model["problems"],
    }


def minion_key_problems(model, facts):
    """
    Why a minion whose key facts are ``facts`` (:func:`minion_key_facts`, as its
    ``ha.lint`` reports them) would not accept the masters of ``model``
    (:func:`master_key_model`): ``[{"reason", "fix"}]``. A minion without usable
    facts, or masters of a :data:`MIXED` model (reported once for every minion),
    give none here.
    """
    if not isinstance(facts, dict) or model["model"] == MIXED:
        return []
    verify = facts.get("verify") is True
    if model["model"] == SIGNING and not verify:
        return [{
            "reason": "the masters sign their public key (master_sign_pubkey) but this minion does not verify "
            "it (verify_master_pubkey_sign is False): Salt refuses every signing master at its next sign-in",
            "fix": "ha.minion_failover with verify_master_pubkey_sign: True and master_sign_pub (the masters' "
            "master_sign.pub), then restart the minion",
        }]
    if model["model"] == SHARED and verify:
        return [{
            "reason": "this minion verifies the master's signature (verify_master_pubkey_sign) but no master "
            "signs its key: Salt refuses every master at its next sign-in",
            "fix": f"{SIGNING_STATES}; or verify_master_pubkey_sign: False on the minion",
        }]
    minion_key = facts.get("master_sign_pub_fingerprint")
    if model["model"] == SIGNING and model["signing_key"] and minion_key and minion_key != model["signing_key"]:
        return [{
            "reason": f"the minion's master_sign.pub ({ha_text.printable(minion_key)}) is not the masters' "
            f"signing key ({model['signing_key']}): it refuses every master whose key it has not cached",
            "fix": "ha.minion_failover with master_sign_pub: the masters' master_sign.pub, then restart the minion",
        }]
    return []
