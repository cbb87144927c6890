"""
What one master is (its inventory) and how masters differ (drift).

:func:`master_inventory` collects, for this master: the HA-relevant effective
options (secrets masked), the ``master.pub`` fingerprint, minion key fingerprints
by state, file_roots/pillar_roots tree hashes per environment, gitfs remote
revisions, versions and the job store settings (:func:`job_store_config`).
:func:`compare_inventories` turns several masters' inventories into a list of
differences, each naming the masters and what differs; the list is empty when they
agree. Master keys are compared for the masters' key model (:mod:`ha_key_model`):
``master.pub`` with one shared master key, ``master_sign.pub`` with signing.
"""

import collections.abc
import hashlib
import importlib.metadata
import os
import re

import salt.utils.files
import salt.version

import ha_key_model
import ha_keys

MASK = "*****"
# Options that must agree on every master for failover to behave the same on each.
HA_OPTIONS = (
    "publish_port", "ret_port", "transport", "keysize", "keys.cache_driver",
    "master_sign_pubkey", "master_use_pubkey_signature", "master_sign_key_name",
    "master_pubkey_signature", "open_mode", "auto_accept", "autosign_grains_dir",
    "fileserver_backend", "gitfs_remotes", "gitfs_base", "gitfs_saltenv", "ext_pillar",
    "pillarenv", "pillar_source_merging_strategy", "state_top", "top_file_merging_strategy",
    "env_order", "default_top", "file_ignore_regex", "file_ignore_glob", "cluster_id",
)
# Where jobs and their returns are kept, and for how long: masters that disagree do not
# see each other's jobs after a failover (``jobs.lookup_jid`` on the survivor is empty).
# hash_type is here (not in HA_OPTIONS): local_cache names job directories with it.
JOB_STORE_OPTIONS = (
    "master_job_cache", "ext_job_cache", "job_cache", "keep_jobs_seconds", "keep_jobs", "archive_jobs", "hash_type",
)
# The options naming the returners that hold jobs; each one's own options (``returner.<name>.*``
# or ``<name>.*``, e.g. ``returner.pgjsonb.host``) are its connection.
JOB_STORE_RETURNER_OPTIONS = ("master_job_cache", "ext_job_cache")
SECRET_KEY = re.compile(r"pass|secret|token|private|credential|api_?key", re.IGNORECASE)
URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
# key=value connection strings (libpq, ODBC): ``host=db password=x`` -> ``password=*****``
DSN_SECRET = re.compile(r"(?P<key>\b(?:password|passwd|pass|pwd)\s*=\s*)(?:'[^']*'|\"[^\"]*\"|[^\s;]+)", re.IGNORECASE)
SKIP_DIRS = frozenset({".git", ".svn", ".hg", "__pycache__"})
LISTED = 50  # differing items named per difference; the count says how many in all


def mask_secrets(value):
    """
    ``value`` as plain dicts/lists, secret-named keys, URL credentials and
    ``password=`` in connection strings replaced by ``*****``.
    """
    if isinstance(value, collections.abc.Mapping):  # also Salt's ImmutableDict
        return {
            key: (MASK if SECRET_KEY.search(str(key)) else mask_secrets(item))
            for key, item in value.items()
        }
    if isinstance(value, str):
        return DSN_SECRET.sub(rf"\g<key>{MASK}", URL_USERINFO.sub(rf"\g<scheme>{MASK}@", value))
    if isinstance(value, (collections.abc.Sequence, collections.abc.Set)) and not isinstance(value, bytes):
        return [mask_secrets(item) for item in value]
    return value


def ha_config(opts):
    """The HA-relevant effective options, secrets masked."""
    return {name: mask_secrets(opts.get(name)) for name in HA_OPTIONS}


def job_store_returners(opts):
    """The returner names ``master_job_cache`` and ``ext_job_cache`` set, in that order, once each."""
    names = []
    for option in JOB_STORE_RETURNER_OPTIONS:
        name = opts.get(option)
        if isinstance(name, str) and name.strip() and name.strip() not in names:
            names.append(name.strip())
    return names


def returner_options(opts, name):
    """Every option of returner ``name``: ``returner.<name>``, ``returner.<name>.*``, ``<name>``, ``<name>.*``."""
    prefixes = (f"returner.{name}", name)
    return {
        key: value
        for key, value in opts.items()
        if isinstance(key, str) and any(key == prefix or key.startswith(f"{prefix}.") for prefix in prefixes)
    }


def job_store_config(opts):
    """
    The job store settings (:data:`JOB_STORE_OPTIONS`) and the options of each
    returner that holds jobs (the store's connection), secrets masked: a
    password shows as ``*****`` when set, so drift sees "set here, unset there",
    never the value (two different passwords look the same).
    """
    settings = {name: opts.get(name) for name in JOB_STORE_OPTIONS}
    for name in job_store_returners(opts):
        settings.update(returner_options(opts, name))
    return mask_secrets(settings)


def _file_hash(path):
    digest = hashlib.sha256()
    with salt.utils.files.fopen(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 16), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_hashes(roots_by_env):
    """
    ``{env: {relative path: sha256}}`` of ``file_roots``/``pillar_roots``. Like
    Salt's fileserver, the first root of an environment that holds a path wins.
    """
    result = {}
    for env, roots in sorted((roots_by_env or {}).items()):
        files = {}
        for root in roots if isinstance(roots, list) else [roots]:
            if not isinstance(root, str) or not os.path.isdir(root):
                continue
            for folder, dirs, names in os.walk(root):
                dirs[:] = sorted(name for name in dirs if name not in SKIP_DIRS)
                for name in names:
                    path = os.path.join(folder, name)
                    relative = os.path.relpath(path, root)
                    if relative in files or not os.path.isfile(path):
                        continue
                    try:
                        files[relative] = _file_hash(path)
                    except OSError:
                        files[relative] = None
        result[str(env)] = files
    return result


def _read_refs(git_dir):
    refs = {}
    packed = os.path.join(git_dir, "packed-refs")
    if os.path.isfile(packed):
        with salt.utils.files.fopen(packed, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 2 and not line.startswith(("#", "^")):
                    refs[parts[1]] = parts[0]
    refs_dir = os.path.join(git_dir, "refs")
    for folder, _, names in os.walk(refs_dir):
        for name in names:
            path = os.path.join(folder, name)
            with salt.utils.files.fopen(path, encoding="utf-8", errors="replace") as handle:
                refs["/".join(os.path.relpath(path, git_dir).split(os.sep))] = handle.read().strip()
    return {ref: sha for ref, sha in refs.items() if ref.startswith("refs/remotes/") or ref.startswith("refs/tags/")}


def gitfs_revisions(cachedir):
    """``{remote url: {ref: sha}}`` of the gitfs cache (``<cachedir>/gitfs``); {} without gitfs."""
    base = os.path.join(cachedir or "", "gitfs")
    remote_map = os.path.join(base, "remote_map.txt")
    if not os.path.isfile(remote_map):
        return {}
    result = {}
    with salt.utils.files.fopen(remote_map, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if " = " not in line or line.startswith("#"):
                continue
            folder, url = (part.strip() for part in line.split(" = ", 1))
            repo = os.path.join(base, folder)
            git_dir = os.path.join(repo, ".git") if os.path.isdir(os.path.join(repo, ".git")) else repo
            result[mask_secrets(url)] = _read_refs(git_dir) if os.path.isdir(git_dir) else {}
    return result


def salt_ha_version():
    """The installed salt-ha version, or ``unknown`` (installed through the file server)."""
    try:
        return importlib.metadata.version("salt-ha")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def master_pub_fingerprints(opts):
    """
    ``(fingerprint of the master key minions get, master_sign.pub fingerprint or
    None)`` of this master. That key is ``master.pub``, or on a master of Salt's
    cluster (``cluster_id``) the cluster's shared ``cluster_pki_dir/cluster.pub``
    (Salt 3008's ``MasterKeys.get_pub_str``): cluster masters keep their own
    ``master.pem`` and are no drift for it.
    """
    pki_dir = opts["pki_dir"]
    sign_name = opts.get("master_sign_key_name") or "master_sign"
    if opts.get("cluster_id"):
        served = os.path.join(opts.get("cluster_pki_dir") or pki_dir, "cluster.pub")
    else:
        served = os.path.join(pki_dir, "master.pub")
    return (
        ha_keys.fingerprint_file(served),
        ha_keys.fingerprint_file(os.path.join(pki_dir, f"{sign_name}.pub")),
    )


def master_inventory(opts, key_fingerprints, trees=True):
    """This master's inventory; ``key_fingerprints`` is ``{state: {minion_id: fingerprint}}``."""
    master_pub, sign_pub = master_pub_fingerprints(opts)
    inventory = {
        "master": opts.get("id"),
        "salt_version": salt.version.__version__,
        "salt_ha_version": salt_ha_version(),
        "master_pub_fingerprint": master_pub,
        "master_sign_pub_fingerprint": sign_pub,
        "master_sign_pubkey": bool(opts.get("master_sign_pubkey")),
        "config": ha_config(opts),
        "job_store": job_store_config(opts),
        "keys": key_fingerprints,
    }
    if trees:
        inventory["file_roots"] = tree_hashes(opts.get("file_roots"))
        inventory["pillar_roots"] = tree_hashes(opts.get("pillar_roots"))
        inventory["gitfs"] = gitfs_revisions(opts.get("cachedir"))
    return inventory


def _difference(what, by_master, **detail):
    return {"what": what, "masters": by_master, **detail}


def _scalar_differences(inventories, field, what):
    values = {name: inv.get(field) for name, inv in inventories.items()}
    if len({repr(value) for value in values.values()}) > 1:
        return [_difference(what, values)]
    return []


def _key_differences(inventories):
    views = {}
    for name, inv in inventories.items():
        view = {}
        for state, keys in (inv.get("keys") or {}).items():
            for minion_id, fingerprint in keys.items():
                view[minion_id] = f"{state} {fingerprint}"
        views[name] = view
    differing = {}
    for minion_id in sorted(set().union(*views.values())):
        seen = {name: view.get(minion_id) for name, view in views.items()}
        if len(set(seen.values())) > 1:
            differing[minion_id] = seen
    if not differing:
        return []
    listed = dict(list(differing.items())[:LISTED])
    return [_difference("minion keys", sorted(inventories), count=len(differing), minions=listed)]


def _job_store_differences(inventories):
    """
    One item for every job store setting that differs: ``options`` names them, and
    ``masters`` holds each master's values of those options (``None``: not set there).
    """
    stores = {name: inv.get("job_store") or {} for name, inv in inventories.items()}
    options = sorted(set().union(*(store.keys() for store in stores.values())))
    differing = [option for option in options if len({repr(store.get(option)) for store in stores.values()}) > 1]
    if not differing:
        return []
    values = {name: {option: store.get(option) for option in differing} for name, store in stores.items()}
    return [_difference("job store", values, options=differing)]


def _tree_differences(inventories, field):
    differences = []
    envs = sorted(set().union(*((inv.get(field) or {}).keys() for inv in inventories.values())))
    for env in envs:
        trees = {name: (inv.get(field) or {}).get(env) for name, inv in inventories.items()}
        paths = sorted(set().union(*((tree or {}).keys() for tree in trees.values())))
        differing = [path for path in paths if len({(tree or {}).get(path) for tree in trees.values()}) > 1]
        if differing or len({tree is None for tree in trees.values()}) > 1:
            differences.append(
                _difference(
                    f"{field} {env}",
                    {name: ("missing" if tree is None else f"{len(tree)} files") for name, tree in trees.items()},
                    count=len(differing),
                    paths=differing[:LISTED],
                )
            )
    return differences


def _master_key_differences(inventories):
    """
    The master keys that differ for the masters' key model (:mod:`ha_key_model`):
    ``master.pub`` unless every master signs (with signing each master keeps its own
    ``master.pem``), ``master_sign.pub`` when any master signs.
    """
    model = ha_key_model.master_key_model(inventories)["model"]
    differences = []
    if model != ha_key_model.SIGNING:
        differences += _scalar_differences(inventories, "master_pub_fingerprint", "master.pub fingerprint")
    if model != ha_key_model.SHARED:
        differences += _scalar_differences(inventories, "master_sign_pub_fingerprint", "master_sign.pub fingerprint")
    return differences


def compare_inventories(inventories):
    """
    Differences across ``{master name: inventory}``: a list of ``{"what", "masters",
    ...detail}``; empty when every master agrees. Fields a peer did not report
    (e.g. trees when asked without them) are not compared.
    """
    if len(inventories) < 2:
        return []
    differences = _master_key_differences(inventories)
    differences += _scalar_differences(inventories, "salt_version", "salt version")
    differences += _scalar_differences(inventories, "salt_ha_version", "salt-ha version")
    configs = {name: inv.get("config") or {} for name, inv in inventories.items()}
    for option in sorted(set().union(*(config.keys() for config in configs.values()))):
        values = {name: config.get(option) for name, config in configs.items()}
        if len({repr(value) for value in values.values()}) > 1:
            differences.append(_difference(f"config {option}", values))
    if all("job_store" in inv for inv in inventories.values()):
        differences += _job_store_differences(inventories)
    differences += _key_differences(inventories)
    if all("file_roots" in inv for inv in inventories.values()):
        differences += _tree_differences(inventories, "file_roots")
        differences += _tree_differences(inventories, "pillar_roots")
        differences += _scalar_differences(inventories, "gitfs", "gitfs revisions")
    return differences
