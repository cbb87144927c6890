"""
salt-ha states: failover settings on every minion, identical masters.

``ha.minion_failover`` writes a minion ``minion.d/`` drop-in that ``ha.lint``
finds no error in; ``ha.master_config`` writes a master ``master.d/`` drop-in
from a dict (usually pillar), byte-identical on every master;
``ha.master_keypair`` makes ``master.pem``/``master.pub`` equal a given pair;
``ha.master_signing`` turns on master pubkey signing with one shared signing pair.

Each follows Salt's state recipe: validate (bad input: ``result: False``, a
comment naming the problem, nothing written), compare with the files on disk,
``test=True`` predicts ``changes`` with ``result: None``, write atomically with
the previous version kept as ``<file>.<UTC time>.bak``, re-read, report. A second
run reports no changes. A drop-in that holds corrupt YAML (or no mapping, which
Salt refuses to start with) is replaced, never silently: ``changes["corrupt_file"]``
(``path``, ``problem``, ``backup``) and the comment name it and the YAML error, and
the corrupt file is the backup. Values from files, pillar or the SLS appear
escaped (``repr``) in comments.
"""

import logging
import os

from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_keepalive
import ha_restart
import ha_state
import ha_validate

log = logging.getLogger(__name__)

__virtualname__ = "ha"


def __virtual__():
    return __virtualname__


def _run(name, make_plan, done, restart=None):
    """The recipe over a planner: validate/plan, test, apply, report."""
    ret = {"name": name, "result": False, "changes": {}, "comment": ""}
    try:
        plan = make_plan()
        restart_plan = restart(plan) if restart else None
    except (SaltInvocationError, CommandExecutionError) as err:
        ret["comment"] = f"Nothing written: {err}"
        return ret
    if not plan.changed:
        comment = [f"{name!r} is already in the desired state."] + list(plan.notes)
        ret.update(result=True, comment=" ".join(comment))
        return ret
    if __opts__.get("test"):
        changes, notes = ha_state.report(plan)
        if restart_plan is not None:
            notes.append(f"The salt-minion would be restarted ({restart_plan['restart']['method']}).")
        ret.update(result=None, changes=changes, comment=" ".join([f"{name!r} would be changed; {done}."] + notes))
        return ret
    try:
        written = ha_state.write_plan(plan)
    except CommandExecutionError as err:
        ret["comment"] = f"Writing {name!r} failed: {err}"
        return ret
    changes, notes = ha_state.report(plan, written)
    backups = [backup for backup in written.values() if backup]
    kept = f" Previous version kept in {', '.join(repr(path) for path in backups)}." if backups else ""
    comment = [f"{name!r} changed; {done}.{kept}"] + notes
    if restart_plan is not None:
        comment.append(_spawn_restart(restart_plan))
    ret.update(result=True, changes=changes, comment=" ".join(comment))
    return ret


def _spawn_restart(plan):
    pid = ha_restart.spawn_restart(
        plan["restart"],
        wait_pid=plan["wait_pid"],
        wait_seconds=plan["wait_seconds"],
        delay=plan["delay"],
    )
    log.info("ha.minion_failover: restart helper %s (%s)", pid, plan["restart"]["method"])
    return (
        f"The salt-minion restarts in the background ({plan['restart']['method']}, helper "
        f"pid {pid}) once this job has ended."
    )


def minion_failover(
    name,
    masters,
    alive_interval=ha_state.DEFAULT_ALIVE_INTERVAL,
    failback=False,
    failback_interval=ha_state.DEFAULT_FAILBACK_INTERVAL,
    retry_dns=0,
    restart=False,
    master_port=None,
    publish_port=None,
    restart_delay=2,
    restart_wait=300,
    returns_engine=False,
    verify_master_pubkey_sign=False,
    master_sign_pub=None,
    tcp_keepalive=True,
    grains_cache=False,
):
    """
    Manage the minion drop-in ``name`` holding a failover setup that ``ha.lint``
    finds no error in.

    The file (sorted YAML) sets ``master`` (the list), ``master_type: failover``,
    ``master_alive_interval``, ``master_failback`` (and ``master_failback_interval``
    when failback is on), ``retry_dns`` and ``random_master: False``; plus
    ``master_port``/``publish_port`` when given, and ``engines: [{ha_returns: ...}]``
    with ``returns_engine``, the TCP keepalive settings (``tcp_keepalive``) and the
    grains cache (``grains_cache``). The
    options are linted with
    ``ha.lint``'s rules (no DNS lookups) before anything is written: any error
    (e.g. a master listed twice, host:port entries sharing a host) refuses the
    state; warnings are quoted in the comment.

    name
        The drop-in file: an absolute path directly in the minion's ``minion.d/``
        (next to its config file), or a file name relative to it. Must end in
        ``.conf`` (Salt reads ``minion.d/*.conf`` only).

    masters
        List of at least two masters (host names or IP addresses; same ports on
        every master).

    alive_interval
        ``master_alive_interval`` in seconds (>= 1). Default 10.

    failback, failback_interval
        Return to the first master when it is back; checked every
        ``failback_interval`` seconds (>= 1, default 30).

    retry_dns
        ``retry_dns`` (>= 0). Default 0; Salt forces 0 for failover anyway.

    restart
        The minion reads its config only at start: without ``restart`` the comment
        says ``restart required``. With ``restart=True`` and a change, a detached
        helper (``ha_restart_helper``: own session, started with the Python that runs
        Salt; Salt's ``minion.restart`` would stop the daemon before this job's return
        is sent) waits until
        the job that runs this state has ended (at most ``restart_wait`` seconds),
        so that its return reaches the master, then ``restart_delay`` seconds, then
        restarts the salt-minion daemon found in ``pidfile`` the way
        ``minion.restart`` would: ``minion_restart_command`` (the daemon is stopped
        with SIGTERM, then the command runs), else the daemon's ``salt-minion*``
        systemd unit (``systemctl restart --no-block``), else a daemonized
        (``-d``) minion is stopped and started with its own command line. A
        foreground minion with none of these (e.g. started by a supervisor Salt
        does not know, or by pytest-salt-factories) cannot be restarted safely:
        the state then fails before writing anything. The helper stops only the
        process recorded in the pidfile (same pid and start time) and never
        starts a second minion if the first did not stop within 30 s. It reports
        nothing after the state returned: check the minion's log.
        With ``multiprocessing: False`` the state runs inside the daemon and only
        ``restart_delay`` protects the return; raise it there.

    returns_engine
        Run the ``ha_returns`` engine, which delivers to the new master the returns
        of jobs that end while the minion fails over (Salt drops them): ``True``
        (its defaults) or a mapping of its options (``max_age``, ``max_bytes``,
        ``grace``, ``answer_timeout``, ``retry_max``, ``replay_timeout``,
        ``directory``; bad options refuse the state). Default ``False``. The
        drop-in then lists ``engines: [{ha_returns: <options>}]``. Salt merges
        ``engines`` lists between ``minion.d`` drop-ins, but a drop-in's ``engines``
        replaces the config file's own ``engines`` list whole, so:

        - ``ha_returns`` already listed in another file Salt reads: not listed again
          (the comment says where; refused if ``returns_engine`` names other
          options than that file's);
        - the config file (``/etc/salt/minion``) has an ``engines`` list of its own:
          refused, nothing written; move that list into a ``minion.d/*.conf``
          drop-in, or list ``ha_returns`` in it and leave ``returns_engine`` False;
        - other drop-ins list engines: only ``ha_returns`` is written, Salt merges
          the lists.

        The engine starts with the minion: ``restart required`` as for the other
        settings.

    verify_master_pubkey_sign, master_sign_pub
        Master pubkey signing, for masters that keep their own ``master.pem`` and
        sign it with one shared signing key pair (state ``ha.master_signing``).
        ``verify_master_pubkey_sign: True`` puts that option in the drop-in and
        needs ``master_sign_pub``, the text of the masters' ``master_sign.pub``
        (exactly one PEM RSA public key; a private key is refused and never
        shown), which is written to ``master_sign.pub`` in the minion's pki dir
        together with the drop-in (both or neither; ``changes["master_sign.pub"]``
        shows fingerprints). The minion then accepts any master whose key that
        pair signed. Default ``False`` (one shared ``master.pem`` on every master).
        Salt refuses a signing master to a minion that does not verify, and the
        other way round, at every sign-in. Switching a running set: ``ha.master_signing``
        on the masters without restarting them, then this state on the minions with
        a restart (they keep retrying and sign in once the masters sign), then
        restart the masters; a minion that does not verify when the masters start
        signing is unreachable until it is fixed by hand. A ``master_finger``
        in the minion's config pins one master's key (a warning: the minion exits
        when it fails over to a master with another key).

    tcp_keepalive
        TCP keepalive on the minion's connections to its master, stock Salt's own
        remedy for a partitioned master (packets dropped silently: the connection
        stays ESTABLISHED, and with Salt's defaults the minion stays on it for about
        16 minutes; a hung master's kernel answers the probes, the ``ha`` beacon
        handles that). ``True`` (default) writes ``tcp_keepalive: True``,
        ``tcp_keepalive_idle: 10``, ``tcp_keepalive_intvl: 2``, ``tcp_keepalive_cnt:
        3`` (measured: a partitioned master left after 15.5 s); a mapping of ``idle``,
        ``intvl``, ``cnt`` (whole numbers: seconds 1-32767, count 1-127) changes those
        values; ``False`` writes none (Salt's defaults: ``ha.lint`` HA221). Bad values
        refuse the state, naming them.

    grains_cache
        A minion that changes master runs every grains module again before it
        takes jobs on the new one, unless its grains cache is fresh (``ha.lint``
        HA804; measured here: 0.3-0.4 s of each minion's failover, and with 100
        minions failing over at once the last one on after 11.9 s instead of 7.7
        s). ``True`` writes ``grains_cache: True`` and ``grains_cache_expiration:
        86400``; a whole number of seconds sets the expiration instead; ``False``
        (default) writes neither. The cost: a minion restarted within the
        expiration starts with the cached grains too, so run
        ``saltutil.refresh_grains`` after a change to what they report (a Salt
        upgrade, new hardware).

    CLI Example:

    .. code-block:: bash

        salt '*' state.single ha.minion_failover ha-failover.conf masters='[salt1, salt2]'
        salt '*' state.single ha.minion_failover ha-failover.conf masters='[salt1, salt2]' tcp_keepalive='{idle: 20}'
        salt-call state.single ha.minion_failover ha-failover.conf masters='[10.0.0.1, 10.0.0.2]' restart=True
        salt-call state.single ha.minion_failover ha-failover.conf masters='[salt1, salt2]' failback=True
        salt-call state.single ha.minion_failover ha-failover.conf masters='[salt1, salt2]' returns_engine=True
        salt-call state.single ha.minion_failover ha-failover.conf masters='[salt1, salt2]' grains_cache=True
        salt '*' state.apply ha.minion   # verify_master_pubkey_sign and master_sign_pub from pillar

    SLS Example:

    .. code-block:: yaml

        ha-minion-failover:
          ha.minion_failover:
            - name: ha-failover.conf
            - masters: [salt1.example.com, salt2.example.com]
            - returns_engine:
                max_age: 3600
            - restart: True
    """
    context = {key: __opts__[key] for key in ha_state.LINT_CONTEXT_OPTIONS if __opts__.get(key)}

    def make_plan():
        ha_validate.validate_flag(restart, "restart")
        ha_validate.validate_seconds(restart_delay, "restart_delay", 0)
        ha_validate.validate_seconds(restart_wait, "restart_wait", 0)
        options = ha_state.failover_options(
            masters, alive_interval, failback, failback_interval, retry_dns, master_port, publish_port
        )
        options.update(ha_keepalive.state_options(tcp_keepalive))
        options.update(ha_state.grains_cache_options(grains_cache))
        engine = ha_state.returns_engine_options(returns_engine, __opts__)
        signing_pub = ha_state.signing_options(verify_master_pubkey_sign, master_sign_pub)
        return ha_state.plan_minion_failover(
            name, __opts__.get("conf_file"), options, context, returns_engine=engine, opts=__opts__,
            signing_pub=signing_pub,
        )

    def plan_restart(plan):
        if not plan.changed:
            return None
        daemon = ha_restart.daemon_restart_plan(
            __opts__.get("pidfile"), __opts__.get("minion_restart_command")
        )
        if daemon is None:
            return None
        wait_pid = os.getpid() if os.getpid() != daemon["daemon_pid"] and restart_wait else None
        return {"restart": daemon, "wait_pid": wait_pid, "wait_seconds": restart_wait, "delay": restart_delay}

    done = "the salt-minion reads it when it starts" + ("" if restart is True else ": restart required")
    return _run(name, make_plan, done, restart=plan_restart if restart is True else None)


def master_config(name, settings):
    """
    Manage the master drop-in ``name`` from the mapping ``settings``.

    The file is YAML with keys sorted at every level under a fixed header, so
    equal settings give byte-identical files on every master. ``changes`` names
    the options ``added``/``changed``/``removed`` and the old/new file sha256;
    values are not shown (master settings may hold passwords). Options Salt's
    master does not know are named in the comment. The salt-master reads the file
    when it starts: the comment says ``restart required``.

    name
        An absolute path directly in ``master.d/`` next to this minion's config
        file (``/etc/salt/master.d/…`` for ``/etc/salt/minion``), or a file name
        relative to it; must end in ``.conf``.

    settings
        Mapping of master options (plain YAML data, string keys), e.g. from pillar.

    CLI Example:

    .. code-block:: bash

        salt 'master*' state.single ha.master_config ha.conf settings='{"worker_threads": 8}'
        salt 'master*' state.apply ha.master
    """

    def make_plan():
        return ha_state.plan_master_config(name, __opts__.get("conf_file"), settings)

    return _run(name, make_plan, "the salt-master reads it when it starts: restart required")


def master_keypair(name, private_key, public_key=None):
    """
    Make ``master.pem``/``master.pub`` in the master pki dir ``name`` equal the
    given key pair (e.g. from GPG-encrypted pillar), so that every master signs
    with one key and minions can fail over between them.

    The pair is checked before anything is touched: ``public_key`` must be the
    public half of ``private_key`` (an unencrypted PEM RSA key); without
    ``public_key`` it is derived (SubjectPublicKeyInfo, as Salt writes it).
    With Salt 3008's layout (``master.pem``/``master.pub`` symlinks to
    ``<master_id>.pem/.pub``) the symlink targets are written, in the older layout
    the plain files. master.pem gets mode 0400 (as Salt writes it), its backup
    is written under a 0077 umask and keeps mode 0400 and the owner. Both files
    are staged (temp files beside them) before either is replaced; if one cannot
    be replaced, the other gets its previous version back and the state fails
    (``result: False``, the comment names the file and what failed), so a failed
    write never leaves a mismatched pair.

    Changes and comments show fingerprints only, never key material: the
    path-based fingerprint (sha256) that ``salt-key -f master.pub``/wheel
    ``key.finger_master`` and the minion's ``master_finger`` use (Salt's
    ``Key.finger``, ``salt-key -F``, hashes differently). For master.pem it is the
    fingerprint of its public half. The salt-master uses the new key after a
    restart.

    name
        The master's pki dir (absolute path of an existing directory), e.g.
        ``/etc/salt/pki/master``.

    private_key
        The PEM private key text. Pass it through pillar (ideally GPG-encrypted),
        never on a command line: job caches and ``ps`` keep arguments.

    public_key
        The PEM public key text (optional).

    CLI Example:

    .. code-block:: bash

        salt 'master*' state.apply ha.master
        salt 'master*' state.apply ha.master test=True
    """

    def make_plan():
        return ha_state.plan_master_keypair(name, private_key, public_key)

    return _run(name, make_plan, "the salt-master uses the new key pair after a restart")


def master_signing(name, private_key, public_key=None, config="ha-signing.conf"):
    """
    Turn on master pubkey signing on this master with the signing key pair shared
    by every master: ``master_sign.pem``/``master_sign.pub`` in the master pki dir
    ``name`` equal the given pair, and the ``master.d`` drop-in ``config`` sets
    ``master_sign_pubkey: True``. Masters then keep their own ``master.pem`` and
    minions (``ha.minion_failover`` with ``verify_master_pubkey_sign: True`` and
    ``master_sign_pub``) fail over between them: the alternative to one shared
    ``master.pem`` (``ha.master_keypair``).

    The same rules as ``ha.master_keypair``: the pair is checked before anything
    is touched (``public_key`` must be the public half of ``private_key``, an
    unencrypted PEM RSA key; without it, it is derived); the key files and the
    drop-in are staged and replaced together (if one cannot be replaced, the
    others get their previous version back and the state fails, naming the
    file); ``master_sign.pem`` gets mode 0400, its backup is as strict; changes
    show fingerprints only (the path-based sha256 of ``salt-key -f``), and
    ``master_sign_pubkey: {"old", "new"}`` for the drop-in.

    This state is the one place that sets the option: it is refused while another
    file the salt-master reads (``master``, ``master.d/*.conf``, ``include``) sets
    ``master_sign_pubkey`` to anything but True, a ``master_sign_key_name`` other
    than ``master_sign``, or ``master_use_pubkey_signature`` (a precomputed
    signature instead of the key); the comment names the file. The salt-master
    signs with the pair after a restart. Salt refuses a signing master to a
    minion that does not verify: apply this state on every master without
    restarting it, switch the minions (``ha.minion_failover`` with
    ``verify_master_pubkey_sign``, restarted; they retry until the masters sign),
    then restart the masters.

    name
        The master's pki dir (absolute path of an existing directory), e.g.
        ``/etc/salt/pki/master``.

    private_key
        The signing private key, PEM text: the same on every master. Pass it
        through pillar (ideally GPG-encrypted) targeted at the masters only, never
        on a command line.

    public_key
        The signing public key, PEM text (optional): the ``master_sign_pub`` the
        minions get.

    config
        The ``master.d`` drop-in holding ``master_sign_pubkey: True``: a file name
        in ``master.d/`` next to this minion's config file (``/etc/salt/master.d/``
        for ``/etc/salt/minion``) or an absolute path there; ends in ``.conf``.
        Default ``ha-signing.conf``.

    CLI Example:

    .. code-block:: bash

        salt 'master*' state.apply ha.master
        salt 'master*' state.apply ha.master test=True
    """

    def make_plan():
        return ha_state.plan_master_signing(name, private_key, public_key, config, __opts__.get("conf_file"))

    return _run(name, make_plan, "the salt-master signs its public key with this pair after a restart")
