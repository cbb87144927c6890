"""
Master-side lint rules for salt-ha's ``ha:peers`` (HA75x) and what the peers answer
(HA76x), and the question the runner asks them.

A peer is asked ``ha.local_inventory keys=False trees=False`` over its salt-api (the
runner function every peer account already has): ``master`` (its id),
``salt_version`` and ``config`` (its ``cluster_id``). A peer that does not answer is
reported, never fatal.
"""

import collections.abc
import ipaddress
import logging
import urllib.parse

from salt.exceptions import SaltInvocationError

import ha_peers
import ha_sync
import ha_text
from ha_lint_findings import lint_finding, produces

log = logging.getLogger(__name__)

DEFAULT_API_PORT = 8000  # rest_cherrypy's port when none is given (salt/netapi/rest_cherrypy)


def peer_section(opts):
    """``ha:peers`` as written (a mapping; ``{}`` when unset), or None when ``ha`` or ``ha:peers`` is not a mapping."""
    section = opts.get("ha") or {}
    if not isinstance(section, collections.abc.Mapping):
        return None
    peers = section.get("peers") or {}
    return peers if isinstance(peers, collections.abc.Mapping) else None


def usable_peers(opts, resolve_secret=None):
    """The :class:`ha_peers.PeerConfig` of every valid ``ha:peers`` entry (HA751 names the others)."""
    usable = []
    for name, entry in sorted((peer_section(opts) or {}).items()):
        try:
            usable.append(ha_peers.peer_config(name, entry, resolve_secret))
        except SaltInvocationError as err:
            log.debug("ha.lint: peer %s is not usable: %s", name, err)
    return usable


def ask_peers(peers, progress):
    """
    ``{peer name: {"answered", "error", "master", "salt_version", "cluster_id"}}``: what
    every peer answers to ``ha.local_inventory keys=False trees=False``, all at once.
    """

    def ask(client):
        answer = ha_sync.checked(
            client.runner("ha.local_inventory", keys=False, trees=False),
            ("master", "salt_version"), "ha.local_inventory",
        )
        config = answer.get("config") if isinstance(answer.get("config"), dict) else {}
        return {
            "master": answer["master"], "salt_version": answer["salt_version"], "cluster_id": config.get("cluster_id"),
        }

    answers = {}
    for name, (answer, error) in ha_sync.for_each_peer(peers, ask, progress).items():
        if error:
            answers[name] = {
                "answered": False, "error": error, "master": None, "salt_version": None, "cluster_id": None,
            }
        else:
            answers[name] = {"answered": True, "error": None, **answer}
    return answers


# --- HA75x: ha:peers ---------------------------------------------------------------------


@produces("HA751", "HA752", "HA753", "HA754")
def check_peer_entries(ctx):
    """
    Each ``ha:peers`` entry as ``ha_peers.peer_config`` validates it (what every
    runner function refuses), then what it would do at use: ``verify: False`` (no
    TLS check), a CA bundle that does not exist (``PeerClient`` raises), ``http://``
    (the password travels in clear in the login request).
    """
    section = peer_section(ctx.opts)
    if section is None:
        return [lint_finding(
            "HA751", "error", "ha:peers",
            "ha or ha:peers is not a mapping of peer name to settings (its value is not shown: it may hold "
            "a password): every ha runner function that talks to peers refuses it",
            "ha: {peers: {master2: {url: 'https://master2.example.com:8000', username: ha-sync, password: ...}}}",
        )]
    findings = []
    for name, entry in sorted(section.items()):
        shown = ha_text.printable(name)
        try:
            peer = ha_peers.peer_config(name, entry)  # sdb:// passwords are not resolved here
        except SaltInvocationError as err:
            findings.append(lint_finding(
                "HA751", "error", f"ha:peers:{shown}", f"{ha_text.printable(err)}: the ha runner refuses every "
                "call that talks to peers", "see examples/master.d/ha.conf",
            ))
            continue
        if peer.verify is False:
            findings.append(lint_finding(
                "HA752", "warning", f"ha:peers:{shown}:verify",
                f"peer {shown} has verify: False: its certificate is not checked, so anyone in the path can "
                "read the peer password and the keys sent",
                f"verify: /etc/pki/tls/certs/ha-ca.crt   (the CA that signed {shown}'s salt-api certificate)",
            ))
        elif isinstance(peer.verify, str) and not ctx.path_exists(peer.verify):
            findings.append(lint_finding(
                "HA753", "error", f"ha:peers:{shown}:verify",
                f"peer {shown}: CA bundle {ha_text.printable(peer.verify)} does not exist: every call to it fails",
                "verify: <the path of the CA bundle on this master>",
            ))
        if urllib.parse.urlsplit(peer.url).scheme == "http":
            findings.append(lint_finding(
                "HA754", "warning", f"ha:peers:{shown}:url",
                f"peer {shown} is reached over plain http ({ha_text.printable(peer.url)}): the password and the "
                "keys travel in clear",
                "url: https://...   (give the peer's rest_cherrypy ssl_crt and ssl_key)",
            ))
    return findings


def api_port(opts):
    """This master's salt-api port (``rest_cherrypy:port``), or None when it runs none."""
    api = opts.get("rest_cherrypy")
    if not isinstance(api, collections.abc.Mapping):
        return None
    try:
        return int(api.get("port", DEFAULT_API_PORT))
    except (TypeError, ValueError):
        return None


def url_port(parsed):
    try:
        return parsed.port or (443 if parsed.scheme == "https" else 80)
    except ValueError:
        return None


@produces("HA755", "HA756")
def check_peer_targets(ctx):
    """
    A peer whose URL is this master's own salt-api (its host is this master's id,
    ``interface`` or ``localhost``, or resolves to a loopback or this master's
    ``interface`` address, on this master's ``rest_cherrypy`` port): a sync with
    itself compares a master to itself and hides the real peer. Two entries with
    one URL: one master counted twice.
    """
    findings, seen = [], {}
    own_port = api_port(ctx.opts)
    own_hosts = {str(ctx.opts.get("id") or ""), "localhost", str(ctx.opts.get("interface") or "")} - {""}
    for peer in ctx.usable_peers:
        parsed = urllib.parse.urlsplit(peer.url)
        key = (parsed.scheme, (parsed.hostname or "").lower(), url_port(parsed))
        if key in seen:
            findings.append(lint_finding(
                "HA756", "warning", f"ha:peers:{ha_text.printable(peer.name)}:url",
                f"peers {ha_text.printable(seen[key])} and {ha_text.printable(peer.name)} have one URL "
                f"{ha_text.printable(peer.url)}: one master is synced and counted twice",
                "ha:peers: one entry per other master",
            ))
        seen.setdefault(key, peer.name)
        if own_port is None or url_port(parsed) != own_port or not parsed.hostname:
            continue
        if parsed.hostname in own_hosts or self_address(ctx, parsed.hostname):
            findings.append(lint_finding(
                "HA755", "error", f"ha:peers:{ha_text.printable(peer.name)}:url",
                f"peer {ha_text.printable(peer.name)} ({ha_text.printable(peer.url)}) is this master's own salt-api "
                f"(port {own_port}): ha.sync_keys and ha.drift would compare this master with itself",
                "ha:peers: the other masters only",
            ))
    return findings


def self_address(ctx, host):
    """True when ``host`` resolves to a loopback address or to this master's ``interface``."""
    interface = str(ctx.opts.get("interface") or "")
    addresses = ctx.resolve([host]).get(host) or []
    for address in addresses:
        try:
            if ipaddress.ip_address(address).is_loopback and _api_listens_on(ctx.opts, address):
                return True
        except ValueError:
            continue
        if address == interface:
            return True
    return False


def _api_listens_on(opts, address):
    """rest_cherrypy binds ``host`` (default 0.0.0.0): does it take connections to ``address``?"""
    host = str((opts.get("rest_cherrypy") or {}).get("host", "0.0.0.0"))
    return host in ("0.0.0.0", "::", "") or host == address


# --- HA76x: what the peers answer ----------------------------------------------------------


@produces("HA761", "HA762")
def check_peer_versions(ctx):
    """
    Every answering peer runs this master's Salt version (``salt_version`` of its
    ``ha.local_inventory``); a peer that does not answer is named (not compared).
    """
    findings = []
    for name, answer in sorted((ctx.peers or {}).items()):
        shown = ha_text.printable(name)
        if not answer.get("answered"):
            findings.append(lint_finding(
                "HA762", "info", f"ha:peers:{shown}",
                f"peer {shown} did not answer, so its Salt version and cluster were not compared: "
                f"{ha_text.printable(answer.get('error'))}",
                "salt-run ha.status   shows why a peer does not answer",
            ))
        elif answer.get("salt_version") != ctx.salt_version:
            findings.append(lint_finding(
                "HA761", "warning", f"ha:peers:{shown}",
                f"peer {shown} runs Salt {ha_text.printable(answer.get('salt_version'))}, this master "
                f"{ha_text.printable(ctx.salt_version)}: masters of one failover set or cluster should run one "
                "version (the cluster protocol and the job and key stores change between releases)",
                f"install Salt {ha_text.printable(ctx.salt_version)} on {shown} (or upgrade every master)",
            ))
    return findings

