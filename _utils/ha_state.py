"""
Plans for the ``ha`` states: validate, render, compare with what is on disk.

Every ``plan_*`` function is pure planning: it reads the current files, never
writes, and raises ``SaltInvocationError`` naming the bad value when the input is
wrong. The returned :class:`StatePlan` says which files would change and how
(``changes``, JSON-able, never key material); :func:`apply_plan` carries it out
with atomic writes (the previous version kept as a backup, ``ha_files``) and
re-reads every file it wrote.

Restarting the minion after ``ha.minion_failover(restart=True)`` is :mod:`ha_restart`.
"""

import contextlib
import dataclasses
import hashlib
import os

import salt.config
import salt.utils.files
import salt.utils.yaml
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_config_file
import ha_files
import ha_key_model
import ha_keys
import ha_lint
import ha_lint_options
import ha_minion_config
import ha_returns
import ha_storm
import ha_text
import ha_validate

HEADER = "# Managed by Salt (salt-ha state {state}): local changes are overwritten.\n"
PUBLIC_MODE = 0o644
PRIVATE_MODE = 0o400  # what salt.crypt.write_keys gives master.pem

DEFAULT_ALIVE_INTERVAL = 10
DEFAULT_FAILBACK_INTERVAL = 30


@dataclasses.dataclass(frozen=True)
class FilePlan:
    """
    One file a state manages: where, the wanted bytes and mode, whether it changes;
    ``corrupt``: why the file on disk cannot be read as Salt reads it (escaped), or
    None. A corrupt file is replaced, its previous version kept as the backup.
    """

    path: str
    content: bytes
    mode: int
    changed: bool
    corrupt: str = None

    @property
    def private(self):
        return not self.mode & 0o077


@dataclasses.dataclass(frozen=True)
class StatePlan:
    """What a state would do: the files, the ``changes`` to report, notes for the comment."""

    files: tuple
    changes: dict
    notes: tuple = ()

    @property
    def changed(self):
        return any(item.changed for item in self.files)


# --- shared validation and rendering -------------------------------------------------


def config_subdir(conf_file, folder):
    """``<dir of conf_file>/<folder>``: where Salt's default_include reads drop-ins."""
    if not conf_file:
        raise SaltInvocationError("the minion's conf_file is unknown: cannot locate " + folder)
    return os.path.join(os.path.dirname(os.path.abspath(conf_file)), folder)


def dropin_path(name, conf_file, folder):
    """
    The drop-in file ``name`` resolved and checked: an absolute path or a file name
    relative to ``<config dir>/<folder>``, directly in that folder (Salt reads
    ``<folder>/*.conf`` only), ending in ``.conf``, not a symlink out of it.
    """
    if not isinstance(name, str) or not name.strip():
        raise SaltInvocationError(f"name {name!r} is not a file path")
    folder_path = config_subdir(conf_file, folder)
    path = name if os.path.isabs(name) else os.path.join(folder_path, name)
    path = os.path.normpath(path)
    if not path.endswith(".conf"):
        raise SaltInvocationError(
            f"name {name!r} does not end in .conf: Salt reads only {folder}/*.conf"
        )
    real_folder = os.path.realpath(folder_path)
    if os.path.dirname(os.path.realpath(path)) != real_folder:
        raise SaltInvocationError(
            f"name {name!r} is outside the salt config dir's {folder}/ ({folder_path!r}): "
            "Salt would never read it"
        )
    return path


def render_yaml(options, state):
    """``options`` as block YAML, keys sorted at every level, under a one-line header."""
    body = salt.utils.yaml.safe_dump(
        options, default_flow_style=False, sort_keys=True, allow_unicode=True, width=1000
    )
    return HEADER.format(state=state) + body


def read_bytes(path):
    """The file's bytes, or None when it does not exist."""
    try:
        with salt.utils.files.fopen(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise CommandExecutionError(f"cannot read {path!r}: {err.strerror}") from err


def current_options(path, data):
    """
    ``(options, corrupt)`` of a config file's ``data`` as Salt reads it: ``({}, None)``
    when absent or empty; ``({}, why)`` when it is not valid YAML or not a mapping,
    ``why`` naming the YAML error (escaped).
    """
    if data is None:
        return {}, None
    try:
        return ha_config_file.parse_config(data, path), None
    except ha_config_file.ConfigFileError as err:
        return {}, err.problem


def predicted_backup(path):
    """How the backup of ``path`` will be named (the time is known only when it is written)."""
    return f"{os.path.realpath(path)}.<UTC time>.bak"


def corrupt_change(file):
    """The ``changes`` entry of a corrupt file that is replaced (predicted backup name)."""
    return {"path": file.path, "problem": file.corrupt, "backup": predicted_backup(file.path)}


def option_changes(old, new):
    """``{option: {"old": value or None, "new": value or None}}`` for options that differ."""
    return {
        key: {"old": old.get(key), "new": new.get(key)}
        for key in sorted(set(old) | set(new), key=str)
        if old.get(key) != new.get(key)
    }


def file_plan(path, content, mode, current, corrupt=None):
    """A :class:`FilePlan` for ``content`` at ``path``, compared with ``current`` (its bytes)."""
    mode_differs = current is not None and stat_mode(path) != mode
    return FilePlan(path, content, mode, current != content or mode_differs, corrupt)


def stat_mode(path):
    """The permission bits of ``path``."""
    return os.stat(path).st_mode & 0o7777




# --- ha.minion_failover ------------------------------------------------------------------


def validate_masters(masters):
    """``masters`` as a list of at least two non-empty strings."""
    if not isinstance(masters, (list, tuple)):
        raise SaltInvocationError(
            f"masters {masters!r} is not a list: write masters: [master1, master2]"
        )
    if len(masters) < 2:
        raise SaltInvocationError(
            f"masters {list(masters)!r} lists {len(masters)} master: failover needs at least two"
        )
    for entry in masters:
        if not isinstance(entry, str) or not entry.strip():
            raise SaltInvocationError(f"master entry {entry!r} in masters is not a host name")
    return [entry.strip() for entry in masters]


def failover_options(
    masters,
    alive_interval=DEFAULT_ALIVE_INTERVAL,
    failback=False,
    failback_interval=DEFAULT_FAILBACK_INTERVAL,
    retry_dns=0,
    master_port=None,
    publish_port=None,
):
    """
    The minion options of a failover setup, validated (no lint yet).

    Always: ``master``, ``master_type: failover``, ``master_alive_interval`` (the
    alive job, which also carries failback), ``master_failback``, ``retry_dns`` and
    ``random_master: False`` (a reshuffled list may retry the dead master first).
    With ``failback``: ``master_failback_interval``. Ports only when given.
    """
    options = {
        "master": validate_masters(masters),
        "master_type": "failover",
        "master_alive_interval": ha_validate.validate_seconds(alive_interval, "alive_interval", 1),
        "master_failback": ha_validate.validate_flag(failback, "failback"),
        "retry_dns": ha_validate.validate_seconds(retry_dns, "retry_dns", 0),
        "random_master": False,
    }
    interval = ha_validate.validate_seconds(failback_interval, "failback_interval", 1)
    if failback:
        options["master_failback_interval"] = interval
    for option, value in (("master_port", master_port), ("publish_port", publish_port)):
        if value is not None:
            options[option] = ha_validate.validate_port(value, option)
    return options


def grains_cache_options(grains_cache):
    """
    The grains cache options ``ha.minion_failover(grains_cache=...)`` writes (``ha.lint``
    HA804): none for False; ``grains_cache: True`` and ``grains_cache_expiration`` (one
    day for True, else the whole number of seconds given).
    """
    if grains_cache is False:
        return {}
    if grains_cache is True:
        expiration = ha_storm.GRAINS_CACHE_EXPIRATION
    else:
        expiration = ha_validate.validate_seconds(grains_cache, "grains_cache", 1)
    return {"grains_cache": True, "grains_cache_expiration": expiration}


# --- the ha_returns engine in the drop-in ---------------------------------------------

RETURNS_ENGINE = "ha_returns"


def returns_engine_options(returns_engine, opts):
    """
    The ``ha_returns`` options ``ha.minion_failover(returns_engine=...)`` asks for:
    None for False, ``{}`` for True, a mapping as given; validated with
    ``ha_returns.engine_config`` against the minion's ``opts`` (raises
    ``SaltInvocationError`` naming the bad option and value).
    """
    if returns_engine is False:
        return None
    if returns_engine is True:
        options = {}
    elif isinstance(returns_engine, dict):
        options = plain(validate_settings(returns_engine, "returns_engine"))
    else:
        raise SaltInvocationError(
            f"returns_engine {returns_engine!r} is not True, False or a mapping of {RETURNS_ENGINE} options"
        )
    try:
        ha_returns.engine_config(options, opts)
    except SaltInvocationError as err:
        raise SaltInvocationError(f"returns_engine: {err}") from None
    return options


def configured_returns_engine(source, opts):
    """
    The ``ha_returns`` options a config file lists under ``engines`` (None when it
    does not); raises ``SaltInvocationError`` naming the file when the engine could
    not run with them.
    """
    try:
        options = ha_returns.configured_options(source.options)
    except (TypeError, ValueError) as err:
        raise SaltInvocationError(
            f"{source.path!r} has an engines option Salt cannot use ({ha_text.printable(err)}): fix it there"
        ) from None
    if options is not None:
        try:
            ha_returns.engine_config(options, opts)
        except SaltInvocationError as err:
            raise SaltInvocationError(
                f"{source.path!r} lists {RETURNS_ENGINE} under engines with options the engine refuses "
                f"({ha_text.printable(err)}): fix them there"
            ) from None
    return options


def plan_returns_engine(path, conf_file, wanted, opts):
    """
    ``(engines for the drop-in at path or None, notes)`` for the ``ha_returns``
    options ``wanted`` (None: the drop-in lists no engine), given the other files the
    minion reads (:func:`ha_minion_config.read_minion_config`; Salt merges ``engines``
    lists only between the files of one layer, a later layer replaces them whole):

    - ``ha_returns`` already in an ``engines`` list Salt keeps: nothing listed (a
      second entry would start a second engine); refused when ``wanted`` names other
      options than that file's, or when those options are invalid;
    - the config file has an ``engines`` list of its own: refused (a drop-in's
      ``engines`` replaces it whole, those engines would silently stop);
    - a file read through ``include`` sets ``engines``: refused (it replaces every
      drop-in's ``engines``, ha_returns would never start);
    - else ``[{ha_returns: wanted}]``; other drop-ins' ``engines`` are merged with it
      by Salt (named in a note).

    ``engines`` lists Salt already ignores are quoted as ``ha.lint`` warnings (HA411).
    """
    if wanted is None:
        return None, ()
    real = os.path.realpath(path)
    written = ha_minion_config.read_minion_config(conf_file)
    others = [source for source in written.sources if os.path.realpath(source.path) != real]
    notes = tuple(
        f"warning: {finding_text(ha_lint_options.replaced_list_finding(problem))}"
        for problem in written.problems
        if problem.effect == ha_minion_config.REPLACED and os.path.realpath(problem.path) != real
    )
    for source in ha_minion_config.kept_sources(others, "engines"):
        configured = configured_returns_engine(source, opts)
        if configured is None:
            continue
        if wanted and configured != wanted:
            raise SaltInvocationError(
                f"{RETURNS_ENGINE} is already listed under engines in {source.path!r} with the options "
                f"{configured!r}, not {wanted!r}: change them there (a second {RETURNS_ENGINE} entry "
                "would start a second engine), or pass returns_engine: True"
            )
        note = f"{RETURNS_ENGINE} is already listed under engines in {source.path!r}: not listed a second time."
        return None, (note,) + notes
    for source in others:
        if source.layer == "conf_file" and source.options.get("engines"):
            raise SaltInvocationError(main_engines_refusal(source, others))
    replacing = ha_minion_config.replacing_sources(others, "default_include", "engines")
    if replacing:
        files = ", ".join(repr(source.path) for source in replacing)
        raise SaltInvocationError(
            f"{files} (read through include) {ha_minion_config.sets(replacing)} engines, replacing every "
            f"minion.d drop-in's engines whole, so {RETURNS_ENGINE} would never start: list {RETURNS_ENGINE} there and "
            "leave returns_engine False"
        )
    merged = [source.path for source in others if source.layer == "default_include" and source.options.get("engines")]
    if merged:
        notes = (f"Salt merges these engines with those of {', '.join(map(repr, merged))}.",) + notes
    return [{RETURNS_ENGINE: wanted}], notes


def main_engines_refusal(source, others):
    """Why the config file's own ``engines`` list stops ``returns_engine``, and the fix."""
    move = "move that engines list into a minion.d/*.conf drop-in (Salt merges the drop-ins' lists)"
    ignored = ha_minion_config.replacing_sources(others, source.layer, "engines")
    if ignored:
        files = ", ".join(repr(other.path) for other in ignored)
        return (
            f"the config file {source.path!r} has an engines list of its own, which Salt already "
            f"ignores ({files} {ha_minion_config.sets(ignored)} engines too, replacing it whole): {move}"
        )
    return (
        f"the config file {source.path!r} has an engines list of its own, which the drop-in's "
        "engines would replace whole (Salt merges engines lists only between drop-ins), so those "
        f"engines would silently stop: {move}, or list {RETURNS_ENGINE} in it and leave "
        "returns_engine False"
    )


# The minion's own options a failover drop-in is linted with (see lint_failover).
LINT_CONTEXT_OPTIONS = ("master_port", "publish_port", "master_finger")


def lint_failover(options, port_context=None):
    """
    Lint rendered failover ``options`` with ``ha_lint`` (no DNS): ``(errors, warnings)``
    as lists of finding dicts. ``port_context`` supplies the minion's options the
    drop-in does not set and the rules need (:data:`LINT_CONTEXT_OPTIONS`: the ports,
    and ``master_finger``, which pins one master key).
    """
    opts = {**(port_context or {}), **options}
    findings = ha_lint.lint_options(opts, written_keys=set(options), resolver=None)
    errors = [item for item in findings if item["severity"] == "error"]
    warnings = [item for item in findings if item["severity"] == "warning"]
    return errors, warnings


def finding_text(item):
    """A lint finding in one line: id, option, message, suggestion."""
    return f"{item['id']} {ha_text.printable(item['option'])}: {item['message']} (suggestion: {item['suggestion']})"


def plan_minion_failover(
    name, conf_file, options, port_context=None, returns_engine=None, opts=None, signing_pub=None
):
    """
    Plan the minion drop-in ``name`` holding ``options`` (see :func:`failover_options`),
    plus ``engines: [{ha_returns: returns_engine}]`` when ``returns_engine`` (options
    from :func:`returns_engine_options`) is not None and :func:`plan_returns_engine`
    finds that no other file lists it (``opts``: the minion's options, for
    ``ha_returns.engine_config`` and its ``pki_dir``). With ``signing_pub`` (from
    :func:`signing_options`) the drop-in also sets ``verify_master_pubkey_sign:
    True`` and ``master_sign.pub`` in the minion's pki dir is planned with it
    (written together, all or nothing; ``changes["master_sign.pub"]`` shows
    fingerprints).

    Refuses (``SaltInvocationError``) when ``ha_lint`` finds an error in them;
    its warnings become notes. ``changes`` is ``{option: {"old", "new"}}``, plus
    ``corrupt_file: {"path", "problem", "backup"}`` when the file on disk is not
    valid YAML or not a mapping (Salt refuses to start with it): it is replaced and
    kept as the backup, its options count as none (``old`` None).
    """
    path = dropin_path(name, conf_file, "minion.d")
    engines, engine_notes = plan_returns_engine(path, conf_file, returns_engine, opts or {})
    if engines is not None:
        options = {**options, "engines": engines}
    if signing_pub is not None:
        options = {**options, "verify_master_pubkey_sign": True}
    errors, warnings = lint_failover(options, port_context)
    if errors:
        raise SaltInvocationError(
            "ha.lint finds errors in this failover setup: "
            + "; ".join(finding_text(item) for item in errors)
        )
    plan, changes = plan_options_dropin(path, options, "ha.minion_failover")
    files = (plan,)
    if signing_pub is not None:
        pub_plan, pub_changes = plan_minion_signing_pub(signing_pub, opts or {})
        files += (pub_plan,)
        changes.update(pub_changes)
    notes = engine_notes + tuple(f"warning: {finding_text(item)}" for item in warnings)
    return StatePlan(files, changes, notes)


def plan_options_dropin(path, options, state):
    """
    ``(FilePlan, changes)`` of the drop-in ``path`` holding ``options`` (sorted YAML
    under the header naming ``state``): ``changes`` is ``{option: {"old", "new"}}``,
    ``{"file": ...}`` for a rewrite with the same options, plus ``corrupt_file``
    (:func:`corrupt_change`) when the file on disk is not valid YAML or not a mapping.
    """
    content = render_yaml(options, state).encode("utf-8")
    current = read_bytes(path)
    old, corrupt = current_options(path, current)
    plan = file_plan(path, content, PUBLIC_MODE, current, corrupt)
    changes = option_changes(old, options) if plan.changed else {}
    if plan.changed and not changes:
        changes = {"file": "rewritten in canonical form (same options)"}
    if corrupt:
        changes["corrupt_file"] = corrupt_change(plan)
    return plan, changes


# --- master pubkey signing on the minion ---------------------------------------------------


def signing_options(verify_master_pubkey_sign, master_sign_pub):
    """
    The signing public key PEM ``ha.minion_failover`` installs (normalized), or None
    when ``verify_master_pubkey_sign`` is False. Both go together: verification
    without the key refuses every master Salt has to verify, the key without
    verification is never read. ``master_sign_pub`` must be exactly one PEM RSA
    public key block (:func:`ha_key_model.public_key_problem`); a private key is
    refused and never echoed.
    """
    verify = ha_validate.validate_flag(verify_master_pubkey_sign, "verify_master_pubkey_sign")
    if not verify:
        if master_sign_pub is not None:
            raise SaltInvocationError(
                "master_sign_pub is given but verify_master_pubkey_sign is False: the minion would never "
                "read it; pass verify_master_pubkey_sign: True too (or leave master_sign_pub out)"
            )
        return None
    if master_sign_pub is None:
        raise SaltInvocationError(
            "verify_master_pubkey_sign is True but master_sign_pub is missing: without the masters' "
            "signing public key the minion refuses every master whose key it has not cached; pass "
            "master_sign_pub (the text of the masters' master_sign.pub)"
        )
    if isinstance(master_sign_pub, bytes):
        master_sign_pub = master_sign_pub.decode("ascii", errors="replace")
    problem = ha_key_model.public_key_problem(master_sign_pub)
    if problem:
        raise SaltInvocationError(f"master_sign_pub: {problem}")
    return normalize_pem(master_sign_pub, "master_sign_pub")


def minion_pki_dir(opts):
    """The minion's pki dir from its options: an existing absolute directory."""
    pki_dir = opts.get("pki_dir")
    if not isinstance(pki_dir, str) or not os.path.isabs(pki_dir) or not os.path.isdir(pki_dir):
        raise SaltInvocationError(f"the minion's pki_dir {pki_dir!r} is not an existing directory")
    return os.path.normpath(pki_dir)


def public_key_plan(path, public_pem):
    """
    ``(FilePlan, change or None)`` for the public key file ``path`` holding
    ``public_pem`` (written with mode 0644): unchanged when the file holds the same
    key (same PEM body; its mode is left as it is, Salt writes public keys 0400 or
    0644); the change is ``{"old", "new", "path"}`` with fingerprints.
    """
    current = read_bytes(path)
    changed = current is None or ha_keys.pem_body(current) != ha_keys.pem_body(public_pem)
    plan = FilePlan(path, public_pem.encode("ascii"), PUBLIC_MODE, changed)
    if not changed:
        return plan, None
    old = ha_keys.fingerprint(current) if current is not None else None
    return plan, {"old": old, "new": ha_keys.fingerprint(public_pem), "path": path}


def plan_minion_signing_pub(public_pem, opts):
    """
    ``(FilePlan, changes)`` for ``master_sign.pub`` in the minion's pki dir (where
    Salt reads it with ``verify_master_pubkey_sign``). A minion whose
    ``master_sign_key_name`` is not Salt's ``master_sign`` is refused (it would read
    another file).
    """
    name = ha_key_model.sign_key_name(opts)
    if name != ha_key_model.SIGN_KEY_NAME:
        raise SaltInvocationError(
            f"the minion's master_sign_key_name is {name!r}: it would read {name}.pub, not "
            f"{ha_key_model.SIGN_KEY_NAME}.pub; remove master_sign_key_name from its config"
        )
    filename = f"{ha_key_model.SIGN_KEY_NAME}.pub"
    plan, change = public_key_plan(os.path.join(minion_pki_dir(opts), filename), public_pem)
    return plan, ({filename: change} if change else {})


# --- ha.master_config --------------------------------------------------------------------

PLAIN_SCALARS = (str, int, float, bool, type(None))


def validate_settings(settings, where="settings"):
    """A mapping of plain YAML data with string keys; raises naming the bad key or value."""
    if not isinstance(settings, dict):
        raise SaltInvocationError(f"{where} {settings!r} is not a mapping of master options")
    for key, value in settings.items():
        if not isinstance(key, str) or not key.strip():
            raise SaltInvocationError(f"{where} key {key!r} is not an option name")
        validate_value(value, f"{where}:{ha_text.printable(key)}")
    return settings


def validate_value(value, where):
    """Raise naming ``where`` unless ``value`` is plain YAML data (recursively)."""
    if isinstance(value, dict):
        validate_settings(value, where)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            validate_value(item, f"{where}[{index}]")
    elif not isinstance(value, PLAIN_SCALARS):
        raise SaltInvocationError(
            f"{where} is a {type(value).__name__}, not plain YAML data"
        )


def plain(value):
    """Tuples to lists (recursively), so equal data renders to equal bytes."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def unknown_master_options(settings):
    """Top-level keys of ``settings`` that are no Salt master option (sorted)."""
    known = set(salt.config.DEFAULT_MASTER_OPTS) | set(salt.config.VALID_OPTS)
    return sorted(key for key in settings if key not in known and "." not in key and key != "ha")


def plan_master_config(name, conf_file, settings):
    """
    Plan the master drop-in ``name`` (under ``master.d/``) from ``settings``.

    ``changes`` names the top-level options ``added``/``changed``/``removed`` (values are
    not shown: master settings may hold passwords) and the files' sha256, plus
    ``corrupt_file`` as in :func:`plan_minion_failover`.
    """
    if not settings:
        raise SaltInvocationError(f"settings {settings!r} is empty: nothing to manage")
    settings = plain(validate_settings(settings))
    path = dropin_path(name, conf_file, "master.d")
    content = render_yaml(settings, "ha.master_config").encode("utf-8")
    current = read_bytes(path)
    old, corrupt = current_options(path, current)
    plan = file_plan(path, content, PUBLIC_MODE, current, corrupt)
    changes = {}
    if plan.changed:
        diff = option_changes(old, settings)
        changes = {
            "added": sorted(key for key in diff if key not in old),
            "changed": sorted(key for key in diff if key in old and key in settings),
            "removed": sorted(key for key in diff if key not in settings),
            "sha256": {"old": sha256(current), "new": sha256(content)},
        }
    if corrupt:
        changes["corrupt_file"] = corrupt_change(plan)
    notes = tuple(
        f"warning: {key!r} is not a Salt master option (Salt ignores it unless a module reads it)"
        for key in unknown_master_options(settings)
    )
    return StatePlan((plan,), changes, notes)


def sha256(data):
    """Hex sha256 of ``data``, None for no file."""
    return None if data is None else hashlib.sha256(data).hexdigest()


# --- ha.master_keypair -------------------------------------------------------------------


def normalize_pem(text, what):
    """A PEM given as text: LF line ends, one trailing newline."""
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    if not isinstance(text, str) or not text.strip():
        raise SaltInvocationError(f"{what} is empty or not PEM text")
    return text.replace("\r\n", "\n").strip() + "\n"


def validate_pki_dir(name):
    """An existing master pki dir (absolute path, not a minion's pki dir)."""
    if not isinstance(name, str) or not os.path.isabs(name):
        raise SaltInvocationError(f"name {name!r} is not an absolute path to a master pki dir")
    if not os.path.isdir(name):
        raise SaltInvocationError(f"name {name!r} is not an existing directory (a master pki dir)")
    if os.path.exists(os.path.join(name, "minion.pem")):
        raise SaltInvocationError(f"name {name!r} holds minion.pem: it is a minion's pki dir")
    return os.path.normpath(name)


def key_target(pki_dir, filename):
    """
    Where ``pki_dir/filename`` really lives: Salt 3008 makes master.pem/master.pub
    symlinks to ``<master_id>.pem/.pub``; the write goes through to that file, which
    must be in the pki dir itself.
    """
    link = os.path.join(pki_dir, filename)
    target = os.path.realpath(link)
    if os.path.dirname(target) != os.path.realpath(pki_dir):
        raise SaltInvocationError(
            f"{link!r} points to {target!r}, outside the pki dir: refusing to write there"
        )
    return target


def public_fingerprint_of_private(data):
    """Fingerprint of a private key's public half, or ``"unreadable"`` / None (missing)."""
    if data is None:
        return None
    try:
        return ha_keys.fingerprint(ha_keys.public_pem_of(data))
    except ValueError:
        return "unreadable (not an unencrypted RSA key)"


def same_private_key(current, wanted_key):
    """Whether the PEM bytes ``current`` hold the same private key as ``wanted_key``."""
    if current is None:
        return False
    try:
        key = ha_keys.load_private_key(current)
    except ValueError:
        return False
    return key.private_numbers() == wanted_key.private_numbers()


def validate_keypair(private_key, public_key):
    """``(private_pem, public_pem, private_key_object)``; a mismatched pair is refused."""
    private_pem = normalize_pem(private_key, "private_key")
    try:
        key = ha_keys.load_private_key(private_pem)
    except ValueError as err:
        raise SaltInvocationError(f"private_key is {err}") from None
    derived = ha_keys.public_pem_of(private_pem)
    if public_key is None:
        return private_pem, derived, key
    public_pem = normalize_pem(public_key, "public_key")
    try:
        paired = ha_keys.is_pair(private_pem, public_pem)
    except ValueError as err:
        raise SaltInvocationError(f"public_key is {err}") from None
    if not paired:
        raise SaltInvocationError(
            f"public_key (fingerprint {ha_keys.fingerprint(public_pem)}) does not belong to "
            f"private_key (its public key has fingerprint {ha_keys.fingerprint(derived)})"
        )
    return private_pem, public_pem, key


def plan_keypair(name, private_key, public_key=None, basename="master"):
    """
    Plan the key pair ``<basename>.pem``/``<basename>.pub`` in the master pki dir ``name``.

    ``changes``: ``{"<basename>.pem": {"old", "new", "path"}, "<basename>.pub": {...}}``
    where old/new are path-based fingerprints (``ha_keys.fingerprint``): of the
    public half for the ``.pem``, of the file for the ``.pub``. No key material anywhere.
    """
    private_pem, public_pem, key = validate_keypair(private_key, public_key)
    pki_dir = validate_pki_dir(name)
    pem_name, pub_name = f"{basename}.pem", f"{basename}.pub"
    pem_path = key_target(pki_dir, pem_name)
    pub_path = key_target(pki_dir, pub_name)
    current_pem = read_bytes(pem_path)
    pem_changed = not same_private_key(current_pem, key) or stat_mode(pem_path) != PRIVATE_MODE
    pub_plan, pub_change = public_key_plan(pub_path, public_pem)
    files = (FilePlan(pem_path, private_pem.encode("ascii"), PRIVATE_MODE, pem_changed), pub_plan)
    changes = {}
    if pem_changed:
        changes[pem_name] = {
            "old": public_fingerprint_of_private(current_pem),
            "new": ha_keys.fingerprint(public_pem),
            "path": pem_path,
        }
    if pub_change:
        changes[pub_name] = pub_change
    return StatePlan(files, changes, ())


def plan_master_keypair(name, private_key, public_key=None):
    """Plan ``master.pem``/``master.pub`` in the pki dir ``name`` (:func:`plan_keypair`)."""
    return plan_keypair(name, private_key, public_key, "master")


# --- ha.master_signing ---------------------------------------------------------------------

MASTER_DEFAULT_INCLUDE = salt.config.DEFAULT_MASTER_OPTS["default_include"]
# The options ha.master_signing writes into its master.d drop-in.
MASTER_SIGNING_OPTIONS = {"master_sign_pubkey": True}


def master_config_sources(conf_file):
    """
    The :class:`ha_minion_config.ConfigSource` of every file the salt-master next to
    ``conf_file`` reads (``<config dir>/master``, its ``default_include`` files,
    ``master.d/*.conf`` unless changed, and its ``include`` files), read as Salt
    reads them; files Salt cannot use contribute nothing.
    """
    master_file = os.path.join(os.path.dirname(os.path.abspath(conf_file)), "master")
    try:
        options = ha_config_file.load_config_file(master_file)
        sources = [ha_minion_config.ConfigSource(master_file, "conf_file", options)]
    except ha_config_file.ConfigFileError:
        options, sources = {}, []
    for option, default in (("default_include", MASTER_DEFAULT_INCLUDE), ("include", [])):
        _options, found, _problems = ha_minion_config.read_included(master_file, option, options.get(option, default))
        sources += found
    return sources


def master_signing_conflicts(conf_file, dropin):
    """
    ``(refusals, notes)`` from the other files the salt-master reads: a file that sets
    ``master_sign_pubkey`` to anything but True, ``master_sign_key_name`` to anything
    but ``master_sign`` (the master would sign with another pair), or
    ``master_use_pubkey_signature`` (the master would send a precomputed signature
    file instead) is a refusal; one that also sets ``master_sign_pubkey: True`` is a note.
    """
    real = os.path.realpath(dropin)
    refusals, notes = [], []
    for source in master_config_sources(conf_file):
        if os.path.realpath(source.path) == real:
            continue
        options = source.options
        if "master_sign_pubkey" in options and options["master_sign_pubkey"] is not True:
            refusals.append(
                f"{source.path!r} sets master_sign_pubkey: {ha_text.shown(options['master_sign_pubkey'])}: "
                f"remove it there ({dropin!r} sets it)"
            )
        elif options.get("master_sign_pubkey") is True:
            notes.append(f"{source.path!r} sets master_sign_pubkey: True too.")
        name = options.get("master_sign_key_name", ha_key_model.SIGN_KEY_NAME)
        if name != ha_key_model.SIGN_KEY_NAME:
            refusals.append(
                f"{source.path!r} sets master_sign_key_name: {ha_text.shown(name)}: the master would sign "
                f"with {ha_text.printable(name)}.pem, not {ha_key_model.SIGN_KEY_NAME}.pem; remove it there"
            )
        if options.get("master_use_pubkey_signature"):
            refusals.append(
                f"{source.path!r} sets master_use_pubkey_signature: the master would send a precomputed "
                "signature file instead of signing with master_sign.pem; remove it there"
            )
    return refusals, tuple(notes)


def plan_master_signing(name, private_key, public_key=None, config="ha-signing.conf", conf_file=None):
    """
    Plan master pubkey signing on this master: the signing key pair
    ``master_sign.pem``/``master_sign.pub`` in the pki dir ``name``
    (:func:`plan_keypair`) and the ``master.d`` drop-in ``config`` holding
    ``master_sign_pubkey: True`` (:data:`MASTER_SIGNING_OPTIONS`), written together.
    Refused when another master config file contradicts it
    (:func:`master_signing_conflicts`). ``changes``: the key files' fingerprints
    (``master_sign.pem``, ``master_sign.pub``) and ``master_sign_pubkey: {"old", "new"}``.
    """
    keys = plan_keypair(name, private_key, public_key, ha_key_model.SIGN_KEY_NAME)
    path = dropin_path(config, conf_file, "master.d")
    refusals, notes = master_signing_conflicts(conf_file, path)
    if refusals:
        raise SaltInvocationError("; ".join(refusals))
    dropin, changes = plan_options_dropin(path, dict(MASTER_SIGNING_OPTIONS), "ha.master_signing")
    return StatePlan(keys.files + (dropin,), {**keys.changes, **changes}, notes)


# --- carrying out a plan -----------------------------------------------------------------


@contextlib.contextmanager
def private_umask(private):
    """A 0o077 umask while a private file (and its backup) is written."""
    if private:
        with salt.utils.files.set_umask(0o077):
            yield
    else:
        yield


def write_plan(plan):
    """
    Write every changed file of ``plan`` together (``ha_files.atomic_write_all``:
    all staged, then all replaced; if one cannot be replaced the others get their
    previous version back), the previous versions kept as backups; then re-read
    them. Returns ``{path: backup or None}`` of the files written. Raises
    ``CommandExecutionError`` naming the file (never its content) and what the
    rollback did when a write fails, or when a file does not hold what was written.
    """
    files = [file for file in plan.files if file.changed]
    if not files:
        return {}
    for file in files:
        try:
            os.makedirs(os.path.dirname(file.path), mode=0o755, exist_ok=True)
        except OSError as err:
            raise CommandExecutionError(
                f"cannot create the folder of {file.path!r}: {err.strerror}; nothing changed"
            ) from err
    try:
        with private_umask(any(file.private for file in files)):
            saved = ha_files.atomic_write_all([(file.path, file.content, file.mode) for file in files])
    except ha_files.WriteError as err:
        raise CommandExecutionError(str(err)) from err
    for file in files:
        if read_bytes(file.path) != file.content or stat_mode(file.path) != file.mode:
            raise CommandExecutionError(f"{file.path!r} does not hold what was written")
    return {file.path: backup for file, backup in zip(files, saved, strict=True)}


def apply_plan(plan):
    """:func:`write_plan`, returning the backups' paths only."""
    return [backup for backup in write_plan(plan).values() if backup]


def report(plan, written=None):
    """
    ``(changes, notes)`` for the state's return: the plan's, with each corrupt file
    named. ``written`` (the result of :func:`write_plan`) None: predicted (the
    backup's name has ``<UTC time>`` in it); else what was done.
    """
    changes, notes = dict(plan.changes), list(plan.notes)
    for file in plan.files:
        if not file.corrupt:
            continue
        if written is None:
            notes.append(
                f"{file.path!r} is corrupt ({file.corrupt}): it would be replaced, the "
                f"corrupt file kept as {predicted_backup(file.path)!r}."
            )
            continue
        backup = written.get(file.path)
        changes["corrupt_file"] = {**changes.get("corrupt_file", {}), "backup": backup}
        notes.append(
            f"{file.path!r} was corrupt ({file.corrupt}): replaced, the corrupt file is "
            f"kept in {backup!r}."
        )
    return changes, notes
