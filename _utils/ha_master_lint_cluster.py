"""
Master-side lint rules for Salt's master cluster (``cluster_id``), HA70x-HA72x.

Every rule cites the Salt 3008.4 code it relies on (paths under ``salt/``). The
cluster in one paragraph, as that code runs it: each master binds a TCP "pool"
puller on ``interface``:``cluster_pool_port`` and pushes its events to every
``cluster_peers`` entry (``host`` or ``host:port``) on that port
(``channel/server.py`` ``MasterPubServerChannel._publish_daemon``); peers name each
other by those entries and by their bare ``id`` (``id`` minus the ``_master``
suffix Salt appends when ``id`` is not set); minion keys and ``cluster.pem`` live in
``cluster_pki_dir``; a new master joins through ``cluster/peer/discover`` and
``cluster/peer/join`` and receives the cluster's keys over the wire; Raft decides
membership. Minions reach the masters through a TCP balancer on the publish and
ret ports.
"""

import ipaddress
import os

import ha_text
from ha_lint_findings import fmt_seconds, lint_finding, produces

# The options that only mean something with cluster_id (salt/config/__init__.py
# VALID_OPTS); apply_master_config resets cluster_peers and cluster_pki_dir without it.
CLUSTER_OPTIONS = (
    "cluster_peers", "cluster_pki_dir", "cluster_secret", "cluster_isolated_filesystem",
    "cluster_pool_port", "cluster_pub_fingerprint",
)
WILDCARD_INTERFACES = ("0.0.0.0", "::", "")
# Filesystems one host holds alone: a folder on one of them is shared with no other host.
LOCAL_FILESYSTEMS = frozenset((
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "reiserfs", "tmpfs", "ramfs",
    "overlay", "vfat", "exfat", "ntfs", "ntfs3", "hfsplus", "apfs", "squashfs",
))
MOUNTINFO = "/proc/self/mountinfo"
DEFAULT_HEALTH_PORT = 4510  # salt-ha's ha_health engine (DESIGN.md)


def bare_id(master_id):
    """The id peers use: Salt 3008.4 strips the ``_master`` suffix (``crypt.py`` ``MasterKeys.master_id``)."""
    return str(master_id or "").removesuffix("_master")


def peer_host(entry):
    """The host of a ``cluster_peers`` entry (Salt splits ``host:port`` at the last colon)."""
    return entry.rsplit(":", 1)[0] if ":" in entry else entry


def is_wildcard(interface):
    return str(interface or "").strip() in WILDCARD_INTERFACES


def clustered(ctx):
    return bool(ctx.opts.get("cluster_id"))


def filesystem_of(path, mountinfo=MOUNTINFO):
    """
    ``(fstype, mount point)`` of the filesystem holding ``path`` (symlinks resolved;
    the path need not exist yet), from ``/proc/self/mountinfo``; None where that
    cannot be read.
    """
    path = os.path.realpath(path)
    try:
        with open(mountinfo, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return None
    best = None
    for line in lines:
        fields, _, rest = line.partition(" - ")
        parts, tail = fields.split(), rest.split()
        if len(parts) < 5 or not tail:
            continue
        mount = parts[4].replace("\\040", " ")
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) >= len(best[1])):
            best = (tail[0], mount)
    return best


# --- HA70x: membership and identity --------------------------------------------------


@produces("HA701")
def check_peers_required(ctx):
    """
    ``cluster_id`` without ``cluster_peers``: ``salt/master.py`` ``Master._pre_flight``
    adds the critical error "cluster_id is set but cluster_peers is empty" and exits.
    """
    if not clustered(ctx) or ctx.opts.get("cluster_peers"):
        return []
    return [lint_finding(
        "HA701", "error", "cluster_peers",
        f"cluster_id {ha_text.printable(ctx.opts['cluster_id'])} is set and cluster_peers is empty: the "
        "salt-master refuses to start (\"cluster_id is set but cluster_peers is empty\")",
        "cluster_peers: [<every other master of the cluster, as they are reached>]",
    )]


@produces("HA702")
def check_options_without_cluster(ctx):
    """
    Cluster options without ``cluster_id``: ``apply_master_config`` logs "Cluster peers
    defined without a cluster_id, ignoring." and resets ``cluster_peers`` and
    ``cluster_pki_dir``; nothing reads the others. The master runs alone.
    """
    if clustered(ctx):
        return []
    written = [name for name in CLUSTER_OPTIONS if ctx.wrote_value(name)]
    if not written:
        return []
    return [lint_finding(
        "HA702", "error", written[0],
        f"{', '.join(written)} set without cluster_id: Salt ignores them and this master runs alone, "
        "with its own keys, outside any cluster",
        "cluster_id: <the cluster's name, the same on every master>   (or remove the cluster options)",
    )]


def peer_entries(ctx):
    """``(usable entries, findings)`` of ``cluster_peers`` (HA703 for the others)."""
    peers = ctx.opts.get("cluster_peers") or []
    if not isinstance(peers, list):
        return [], [lint_finding(
            "HA703", "error", "cluster_peers",
            f"cluster_peers {ha_text.printable(peers)} is not a list of masters",
            "cluster_peers: [master2.example.com, master3.example.com]",
        )]
    usable, findings, seen = [], [], {}
    for entry in peers:
        problem = None
        if not isinstance(entry, str) or not entry.strip():
            problem = "is not a host name or address"
        elif ":" in entry and not _port_ok(entry.rsplit(":", 1)[1]):
            problem = "has a port Salt cannot use (it splits host:port at the last colon: write IPv6 peers bare)"
        elif entry in seen:
            problem = ("is listed twice (Salt keeps one connection per peer, then pairs cluster_peers with its "
                       "connections by position for Raft: every later peer gets another's connection)")
        if problem:
            findings.append(lint_finding(
                "HA703", "error", "cluster_peers",
                f"cluster_peers entry {ha_text.printable(entry)} {problem}",
                "cluster_peers: [<each other master once, as a host name or address>]",
            ))
            continue
        seen[entry] = True
        usable.append(entry)
    return usable, findings


def _port_ok(text):
    return text.isdigit() and 0 < int(text) < 65536


def own_names(ctx):
    """The names and addresses other masters may use for this one: its bare id and its interface."""
    names = {bare_id(ctx.opts.get("id"))}
    if not is_wildcard(ctx.opts.get("interface")):
        names.add(str(ctx.opts.get("interface")))
    return {name for name in names if name}


@produces("HA703", "HA704")
def check_peer_entries(ctx):
    """
    Every ``cluster_peers`` entry is another master, once. Salt pushes every cluster
    event to each entry (``_publish_daemon``: one ``pusher`` per host and port,
    ``_add_pusher`` drops a repeat) and hands Raft ``zip(cluster_peers, pushers)``
    (``salt/cluster/consensus/service.py`` ``build_peer_pushers``), so a repeated
    entry shifts every later peer onto another peer's connection. An entry
    naming this master itself (its bare id, its ``interface``, or a name resolving
    to the interface) makes it push its own cluster events to its own pool port,
    and ``build_peer_pushers`` hands Raft this master as one of its peers.
    """
    if not clustered(ctx):
        return []
    usable, findings = peer_entries(ctx)
    names = own_names(ctx)
    interface = ctx.opts.get("interface")
    hosts = [peer_host(entry) for entry in usable]
    resolved = ctx.resolve(hosts) if not is_wildcard(interface) else {}
    for entry, host in zip(usable, hosts, strict=True):
        addresses = resolved.get(host) or []
        if host in names or (not is_wildcard(interface) and str(interface) in addresses):
            findings.append(lint_finding(
                "HA704", "error", "cluster_peers",
                f"cluster_peers entry {ha_text.printable(entry)} is this master itself (id "
                f"{ha_text.printable(ctx.opts.get('id'))}, interface {ha_text.printable(interface)}): Salt "
                "pushes this master's own cluster events back to it and gives its Raft node itself as a peer",
                "cluster_peers: [<the other masters only>]",
            ))
    return findings


@produces("HA705")
def check_missing_peers(ctx):
    """
    A peer of ``ha:peers`` that answers with this ``cluster_id`` but whose bare id is
    no ``cluster_peers`` entry: this master never pushes events to it
    (``_publish_daemon`` pushes to the entries only) and the AES key event names
    only the entries (``send_aes_key_event``).
    """
    if not clustered(ctx) or not ctx.peers:
        return []
    entries = {peer_host(entry) for entry in ctx.opts.get("cluster_peers") or [] if isinstance(entry, str)}
    findings = []
    for name, answer in sorted(ctx.peers.items()):
        if not answer.get("answered") or answer.get("cluster_id") != ctx.opts.get("cluster_id"):
            continue
        peer_id = bare_id(answer.get("master"))
        if peer_id and peer_id not in entries and peer_id not in own_names(ctx):
            findings.append(lint_finding(
                "HA705", "error", "cluster_peers",
                f"peer {ha_text.printable(name)} (id {ha_text.printable(peer_id)}) is a master of cluster "
                f"{ha_text.printable(ctx.opts['cluster_id'])}, but cluster_peers "
                f"{ha_text.printable(sorted(entries))} does not list it: this master sends it no events",
                f"cluster_peers: [..., {ha_text.printable(peer_id)}]",
            ))
    return findings


@produces("HA706")
def check_id_set(ctx):
    """
    ``id`` not set on a cluster master (saltstack/salt#68462): ``apply_master_config``
    makes it ``<fqdn>_master``. 3008.4 strips the suffix where peers key the AES
    event and the peer keys (``send_aes_key_event``, ``handle_pool_publish``,
    ``MasterKeys``), but the discover and join messages still carry the suffixed id
    (``discover_peers``, ``cluster/peer/discover-reply``): peers write
    ``peers/<id>_master.pub`` and answer to a host named ``<fqdn>_master``
    (``pusher(peer_id)`` connects to the id as a host name), so the answers and
    events are dropped. Unknown when neither the config files nor the id tell.
    """
    if not clustered(ctx):
        return []
    wrote = ctx.wrote("id")
    missing = (wrote is False) or (wrote is None and str(ctx.opts.get("id", "")).endswith("_master"))
    if not missing:
        return []
    interface = ctx.opts.get("interface")
    value = "<this master as the others list it>" if is_wildcard(interface) else ha_text.printable(interface)
    return [lint_finding(
        "HA706", "error", "id",
        f"id is not set on this cluster master: Salt makes it {ha_text.printable(ctx.opts.get('id'))}; its "
        "discover and join messages carry that suffixed id, and the other masters answer to a host of that "
        "name, which does not exist: the answers and cluster events are dropped (saltstack/salt#68462)",
        f"id: {value}",
    )]


@produces("HA707")
def check_id_matches_interface(ctx):
    """
    The bare ``id`` must be what the other masters list for this one: they key the
    AES key event by their ``cluster_peers`` entries (``send_aes_key_event``) and
    this master reads ``data["peers"][<bare id>]`` (``handle_pool_publish``); they
    push to those entries, and answer a join at the joiner's id used as a host name
    (``pusher(payload["peer_id"])``), on ``cluster_pool_port``, which this master
    binds on ``interface``. So the bare id is the interface, or a name resolving to it.
    """
    interface = ctx.opts.get("interface")
    if not clustered(ctx) or is_wildcard(interface) or ctx.wrote("id") is False:
        return []
    master_id = bare_id(ctx.opts.get("id"))
    if not master_id or master_id == str(interface):
        return []
    if is_address(master_id):
        resolves = False
    else:
        found = ctx.resolve([master_id])
        if master_id not in found:
            return []  # no resolver: cannot tell
        resolves = str(interface) in (found.get(master_id) or [])
    if resolves:
        return []
    return [lint_finding(
        "HA707", "error", "id",
        f"id {ha_text.printable(master_id)} is neither interface {ha_text.printable(interface)} nor a name "
        "resolving to it: the other masters reach this one at the address they list in cluster_peers and "
        "key their AES key messages by that entry, which this master looks up by its id: it never finds "
        "its key",
        f"id: {ha_text.printable(interface)}   (the entry the other masters' cluster_peers hold for this master)",
    )]


def is_address(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@produces("HA708")
def check_interface(ctx):
    """
    ``interface`` a wildcard on a cluster master: the founder is the lowest of
    ``sorted({interface, *cluster_peers})`` (``salt/master.py`` ``Master.start``,
    ``_publish_daemon``), and ``0.0.0.0`` sorts before every peer, so every new
    master bootstraps a cluster of its own; the pool puller binds ``interface`` too.
    """
    interface = ctx.opts.get("interface")
    if not clustered(ctx) or not is_wildcard(interface):
        return []
    return [lint_finding(
        "HA708", "error", "interface",
        f"interface {ha_text.printable(interface)} on a cluster master: Salt elects the founder by comparing "
        "interface with the cluster_peers entries, and a wildcard sorts first on every master, so each new "
        "master founds a cluster of its own (split brain)",
        "interface: <this master's own address, the one the other masters list in cluster_peers>",
    )]


@produces("HA709")
def check_cluster_secret(ctx):
    """
    No ``cluster_secret``: a ``cluster/peer/discover`` is answered for any self-signed
    key, and ``cluster/peer/join`` compares the joiner's secret with
    ``cluster_secret or ""`` (``handle_pool_publish``): with none set, any host that
    reaches ``cluster_pool_port`` joins and receives the cluster's AES keys and
    ``cluster.pem`` (the join-reply carries them).
    """
    if not clustered(ctx) or ctx.opts.get("cluster_secret"):
        return []
    port = ctx.opts.get("cluster_pool_port")
    return [lint_finding(
        "HA709", "error", "cluster_secret",
        f"no cluster_secret: any host that reaches this master's cluster_pool_port ({ha_text.printable(port)}) "
        "can join the cluster and is sent its AES keys and cluster.pem, the key minions trust",
        "cluster_secret: <a long random string, the same on every master; keep it out of the repo "
        "(sdb or pillar)>   and firewall cluster_pool_port to the masters",
    )]


@produces("HA710")
def check_pub_fingerprint(ctx):
    """
    An isolated-filesystem cluster without ``cluster_pub_fingerprint``: a joiner
    adopts the ``cluster_pub`` of the first discover-reply (trust on first contact,
    ``cluster_pub_matches_fingerprint``); a pinned fingerprint refuses any other.
    """
    opts = ctx.opts
    if not clustered(ctx) or not opts.get("cluster_isolated_filesystem") or opts.get("cluster_pub_fingerprint"):
        return []
    return [lint_finding(
        "HA710", "info", "cluster_pub_fingerprint",
        "cluster_isolated_filesystem without cluster_pub_fingerprint: a joining master trusts the cluster "
        "key of whichever master answers its discover first",
        "cluster_pub_fingerprint: <sha256 hex of the cluster's cluster.pub>",
    )]


# --- HA71x: shared or isolated filesystem --------------------------------------------


@produces("HA711")
def check_pki_dir(ctx):
    """
    ``cluster_pki_dir`` unset: ``apply_master_config`` falls back to ``pki_dir`` ("Cluster
    id defined without defining cluster pki, falling back to pki_dir"): the cluster's
    minion keys and ``cluster.pem`` then live next to this master's own key.
    """
    opts = ctx.opts
    wrote = ctx.wrote("cluster_pki_dir")
    fell_back = opts.get("cluster_pki_dir") in (None, opts.get("pki_dir"))
    if not clustered(ctx) or wrote or (wrote is None and not fell_back):
        return []
    return [lint_finding(
        "HA711", "warning", "cluster_pki_dir",
        f"cluster_pki_dir is not set: Salt uses pki_dir {ha_text.printable(opts.get('pki_dir'))} for the "
        "cluster's minion keys and cluster.pem, next to this master's own master.pem",
        "cluster_pki_dir: /srv/salt-cluster/pki   (shared by every master, or per master with "
        "cluster_isolated_filesystem: True)",
    )]


@produces("HA712")
def check_shared_folders(ctx):
    """
    ``cluster_isolated_filesystem: False`` (the default) means the masters share
    ``cluster_pki_dir`` and ``cachedir`` (``salt/config/__init__.py``, VALID_OPTS
    comment on ``cluster_isolated_filesystem``). A folder on a local filesystem
    (ext4, xfs, tmpfs, ...) is shared with no other host.
    """
    opts = ctx.opts
    if not clustered(ctx) or opts.get("cluster_isolated_filesystem"):
        return []
    findings = []
    for option in ("cluster_pki_dir", "cachedir"):
        path = opts.get(option)
        found = ctx.filesystem_of(path) if isinstance(path, str) and path else None
        if not found or found[0] not in LOCAL_FILESYSTEMS:
            continue
        fstype, mount = found
        findings.append(lint_finding(
            "HA712", "warning", option,
            f"{option} {ha_text.printable(path)} is on a local {fstype} filesystem (mounted at "
            f"{ha_text.printable(mount)}), and cluster_isolated_filesystem is False: Salt expects every master "
            "of the cluster to share it; fine only when all masters run on this host",
            f"{option}: <a folder on storage every master mounts (NFS, CephFS, ...)>   or "
            "cluster_isolated_filesystem: True with keys.cache_driver: mmap_key",
        ))
    return findings


@produces("HA713")
def check_isolated_driver(ctx):
    """
    ``cluster_isolated_filesystem: True`` wants ``keys.cache_driver: mmap_key`` (the
    VALID_OPTS comment: "keys.cache_driver defaults to mmap_key"), but Salt 3008.4
    never switches it: DEFAULT_MASTER_OPTS keeps ``localfs_key`` and
    ``apply_master_config`` does not change it. It must be written.
    """
    opts = ctx.opts
    driver = opts.get("keys.cache_driver") or "localfs_key"
    if not clustered(ctx) or not opts.get("cluster_isolated_filesystem") or driver == "mmap_key":
        return []
    return [lint_finding(
        "HA713", "warning", "keys.cache_driver",
        f"cluster_isolated_filesystem is True and keys.cache_driver is {ha_text.printable(driver)}: Salt "
        "documents mmap_key as this mode's key store but 3008.4 does not switch to it by itself",
        "keys.cache_driver: mmap_key   (move the existing keys with salt-run pki.migrate_to_mmap first)",
    )]


@produces("HA714")
def check_roots(ctx):
    """
    ``file_roots``/``pillar_roots`` of a cluster master: shared mode wants the same
    trees on every master; isolated mode copies them to a joining master once (the
    join's state-sync, ``salt/cluster/state_sync.py``) and later only through
    ``salt-run cluster.sync_roots``.
    """
    if not clustered(ctx):
        return []
    if ctx.opts.get("cluster_isolated_filesystem"):
        message = ("cluster_isolated_filesystem: file_roots and pillar_roots are copied to a master when it "
                   "joins; later changes reach the other masters only through salt-run cluster.sync_roots")
        suggestion = "salt-run cluster.sync_roots   after every change (or deploy the trees to every master)"
    else:
        message = ("a shared-filesystem cluster: every master must serve the same file_roots and pillar_roots "
                   "(shared storage, or the same deployment everywhere)")
        suggestion = "salt-run ha.drift   compares the trees of every master in ha:peers"
    return [lint_finding("HA714", "info", "file_roots", message, suggestion)]


# --- HA72x: the balancer in front ------------------------------------------------------


@produces("HA721")
def check_balancer_timeout(ctx):
    """
    Minions of a cluster connect through a TCP balancer; a publish connection is idle
    between jobs, and the master-cluster tutorial's HAProxy ``timeout client 1m``
    closes it after a minute of silence, whatever the TCP keepalives
    (saltstack/salt#66888). Keep it at least ``publish_session`` (the AES session,
    86400 s: DEFAULT_MASTER_OPTS).
    """
    if not clustered(ctx):
        return []
    session = ctx.opts.get("publish_session") or 86400
    port = ctx.opts.get("publish_port")
    return [lint_finding(
        "HA721", "info", "publish_session",
        f"the balancer in front of the cluster must keep an idle connection to publish_port "
        f"{ha_text.printable(port)} open for at least publish_session ({fmt_seconds(float(session))} s), "
        "or it cuts the minions' idle publish connections (the tutorial's 1m does: saltstack/salt#66888)",
        f"HAProxy, frontend and backend on {ha_text.printable(port)}: timeout client {int(session)}s, "
        f"timeout server {int(session)}s",
    )]


@produces("HA722")
def check_health_check(ctx):
    """
    Salt's documented balancer check is a TCP check: a hung (SIGSTOPped,
    partitioned) master still completes the kernel's TCP handshake and stays in the
    pool. salt-ha's ``ha_health`` engine answers HTTP 200 only when the master's
    request server answers an application-level ping.
    """
    if not clustered(ctx) or health_engine_configured(ctx.opts.get("engines")):
        return []
    return [lint_finding(
        "HA722", "warning", "engines",
        "a TCP health check (Salt's documented balancer check) cannot see a hung master: the kernel "
        "completes the handshake of a frozen or partitioned master, which stays in the balancer's pool",
        "check each master at the application level, not with a TCP connect: an HTTP health endpoint that "
        "answers 200 only while the master's request server answers a ping (HAProxy: option httpchk GET /health, "
        "http-check expect status 200, server ... check port <health port>)",
    )]


def health_engine_configured(engines):
    """True when ``engines`` starts salt-ha's ``ha_health`` engine."""
    items = engines.items() if isinstance(engines, dict) else engines if isinstance(engines, list) else []
    for item in items:
        name = item[0] if isinstance(item, tuple) else next(iter(item), None) if isinstance(item, dict) else item
        if name == "ha_health":
            return True
    return False
