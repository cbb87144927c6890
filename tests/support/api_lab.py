"""
Masters with salt-api (rest_cherrypy) on loopback, peered through ``ha:peers``.

Builds on :mod:`tests.support.lab`: masters on 127.0.0.1/.2/.3 with identical ports
and one shared master key pair; each master also runs a salt-api on 127.0.0.1 with
its own port, the runner and wheel netapi clients, and ``sharedsecret`` eauth for
the ``ha-sync`` user, allowed the two runner functions peers call. Every master lists every other one under ``ha:peers``. One
peer can be served over TLS with a certificate signed by a CA made here.
"""

import datetime
import ipaddress
import pathlib
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support import lab as lablib

LOOPBACK_C = "127.0.0.3"
API_HOST = "127.0.0.1"
SYNC_USER = "ha-sync"


def random_public_pem():
    """
    A distinct, valid PEM RSA public key (2048-bit random modulus, no private half):
    microseconds each, so tests and benches can make thousands of minion keys.
    """
    modulus = secrets.randbits(2048) | (1 << 2047) | 1
    key = rsa.RSAPublicNumbers(65537, modulus).public_key()
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def random_private_pem():
    """A fresh unencrypted RSA private key, PEM (what must never travel as a minion key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


def write_minion_keys(pki_dir, keys, state_dir="minions"):
    """Write ``{minion_id: pem}`` into ``<pki_dir>/<state_dir>`` as Salt's key store lays them out."""
    folder = pathlib.Path(pki_dir) / state_dir
    folder.mkdir(parents=True, exist_ok=True)
    for minion_id, pem in keys.items():
        (folder / minion_id).write_text(pem)


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(path, key):
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)


def make_ca(folder, common_name="salt-ha test CA"):
    """A self-signed CA in ``folder``: ``(ca.crt path, (certificate, key))``."""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    path = folder / "ca.crt"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, (cert, key)


def make_server_cert(folder, ca, ip=API_HOST):
    """A server certificate for ``ip`` signed by ``ca``: ``(crt path, key path)``."""
    folder = pathlib.Path(folder)
    ca_cert, ca_key = ca
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(ip))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    crt, key_path = folder / "api.crt", folder / "api.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return crt, key_path


class ApiLab(lablib.Lab):
    """Masters with salt-api, each one a peer of the others (names are the master ids)."""

    def __init__(self, factories, root, names_ips, tls=(), peer_timeout=10, extra_master_overrides=None):
        """``extra_master_overrides``: ``{name: {option: value}}`` laid over one master's options."""
        super().__init__(factories, root, ips=tuple(ip for _, ip in names_ips))
        self.names_ips = list(names_ips)
        self.password = "ha-" + secrets.token_hex(16)
        self.api_ports = {name: lablib.free_port([API_HOST]) for name, _ in self.names_ips}
        self.ca_path, self.ca = make_ca(self.root / "ca")
        self.tls = set(tls)
        self.apis = {}
        for name, ip in self.names_ips:
            self.add_master(name, ip, overrides=self._overrides(name, peer_timeout, extra_master_overrides))

    def url(self, name):
        scheme = "https" if name in self.tls else "http"
        return f"{scheme}://{API_HOST}:{self.api_ports[name]}"

    def master_id(self, name):
        return f"ha-master-{name}"

    def peer_entry(self, name, **changes):
        entry = {
            "url": self.url(name),
            "eauth": "sharedsecret",
            "username": SYNC_USER,
            "password": self.password,
            "verify": str(self.ca_path) if name in self.tls else True,
            "timeout": 15,
        }
        entry.update(changes)
        return entry

    def _overrides(self, name, peer_timeout, extra):
        api = {"port": self.api_ports[name], "host": API_HOST}
        if name in self.tls:
            folder = self.root / f"tls-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            crt, key = make_server_cert(folder, self.ca)
            api.update({"ssl_crt": str(crt), "ssl_key": str(key)})
        else:
            api["disable_ssl"] = True
        peers = {
            self.master_id(other): {**self.peer_entry(other), "timeout": peer_timeout}
            for other, _ in self.names_ips
            if other != name
        }
        overrides = {
            "rest_cherrypy": api,
            "netapi_enable_clients": ["runner", "wheel"],
            # Only what peers need (as examples/master.d/ha.conf recommends).
            "external_auth": {
                "sharedsecret": {SYNC_USER: [{"@runner": ["ha.local_inventory", "ha.receive_keys", "ha.local_jobs"]}]}
            },
            "sharedsecret": self.password,
            "ha": {"peers": peers},
        }
        overrides.update((extra or {}).get(name, {}))
        return overrides

    def add_api(self, name):
        """Configure (not start) the salt-api of master ``name``."""
        self.apis[name] = self.masters[name].salt_api_daemon()
        return self.apis[name]


def three_master_lab(factories, root, tls=("c",), minion_id=None, **kwargs):
    """Masters a, b, c (127.0.0.1/.2/.3) with salt-api (c over TLS) and one failover minion [a, b]."""
    lab = ApiLab(
        factories,
        root,
        [("a", lablib.LOOPBACK_A), ("b", lablib.LOOPBACK_B), ("c", LOOPBACK_C)],
        tls=tls,
        **kwargs,
    )
    for name in lab.masters:
        lab.add_api(name)
    if minion_id:
        factory = lab.masters["a"].salt_minion_daemon(
            minion_id,
            overrides=lablib.minion_failover_overrides((lablib.LOOPBACK_A, lablib.LOOPBACK_B), lab.ports, 2),
        )
        lab.keys.allow(lab.masters["a"].id, minion_id)  # accepted on A only
        lab.minions[minion_id] = factory
    return lab


def daemons(lab):
    """Start order: masters, their salt-apis, minions."""
    return [*lab.masters.values(), *lab.apis.values(), *lab.minions.values()]
