"""
Key fingerprints and key-pair checks.

salt-ha uses one fingerprint everywhere: the *path-based* one of
``salt.utils.crypt.pem_finger(path=...)``, which hashes the PEM body (the lines
between the BEGIN/END lines, blank lines dropped). That is what ``salt-key -f``
prints for the master (``key.finger_master``) and what a minion's
``master_finger`` option holds. Salt's ``Key.finger`` (``salt-key -F`` for minion
keys, wheel ``key.finger``) hashes the PEM text differently, so its values never
compare equal to these; salt-ha never mixes the two.
"""

import hashlib

import salt.utils.files
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

DEFAULT_HASH = "sha256"
# The statuses of a minion key, in the order Salt lists them (one tuple for every module).
KEY_STATUSES = ("accepted", "pending", "rejected", "denied")


def pem_body(pem):
    """The bytes ``pem_finger(path=...)`` hashes: non-blank lines minus the first and last."""
    if isinstance(pem, str):
        pem = pem.encode("utf-8")
    lines = [line for line in pem.replace(b"\r\n", b"\n").splitlines(keepends=True) if line.strip()]
    return b"".join(lines[1:-1])


def colon_hex(digest_hex):
    """``abcd…`` -> ``ab:cd:…``, Salt's fingerprint notation."""
    return ":".join(digest_hex[i : i + 2] for i in range(0, len(digest_hex), 2))


def fingerprint(pem, hash_type=DEFAULT_HASH):
    """Fingerprint of a PEM text, equal to ``pem_finger(path=<file holding it>)``."""
    try:
        digest = hashlib.new(hash_type, pem_body(pem)).hexdigest()
    except ValueError as err:
        raise ValueError(f"unknown hash_type {hash_type!r}") from err
    return colon_hex(digest)


def fingerprint_file(path, hash_type=DEFAULT_HASH):
    """Fingerprint of a PEM file, or None when it does not exist."""
    try:
        with salt.utils.files.fopen(path, "rb") as handle:
            return fingerprint(handle.read(), hash_type)
    except FileNotFoundError:
        return None


def load_public_key(pem):
    """Parse a PEM public key (SubjectPublicKeyInfo or PKCS#1); ValueError if it is not one."""
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    try:
        return serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as err:
        raise ValueError("not a PEM public key") from err


def load_private_key(pem):
    """Parse an unencrypted PEM RSA private key; ValueError (without key material) otherwise."""
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # No chaining: nothing about the key material may reach a log or a return.
        raise ValueError("not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key (Salt uses RSA)")
    return key


def public_pem_of(private_pem):
    """The SubjectPublicKeyInfo PEM (as Salt writes ``master.pub``) of a private key."""
    key = load_private_key(private_pem)
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def is_pair(private_pem, public_pem):
    """True when ``public_pem`` is the public half of ``private_pem``."""
    private = load_private_key(private_pem)
    public = load_public_key(public_pem)
    return private.public_key().public_numbers() == public.public_numbers()
