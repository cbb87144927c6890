# salt-ha pillar, read by salt://ha/minion.sls and salt://ha/master.sls.
#
# Keep the master's private key out of plain-text pillar: put ha:master:private_key
# in a GPG-encrypted pillar file (#!yaml|gpg) or an sdb/vault lookup, targeted at the
# masters only.
ha:
  minion:
    # Drop-in written by ha.minion_failover: a file name in minion.d/ next to the
    # minion config (or an absolute path there); must end in .conf.
    file: ha-failover.conf
    # Host-only entries, every master on the same ports (see ha.lint).
    masters:
      - salt1.example.com
      - salt2.example.com
    alive_interval: 10
    failback: False
    failback_interval: 30
    retry_dns: 0
    # Restart the minion in the background once the highstate has returned
    # (minion_restart_command, the salt-minion systemd unit, or a -d daemon).
    restart: True
    # The ha_returns engine delivers the returns of jobs that end while the minion
    # fails over (Salt drops them): True, or a mapping of its options (max_age,
    # max_bytes, grace, answer_timeout, retry_max, replay_timeout, directory). The
    # drop-in then lists engines: [{ha_returns: ...}]. A drop-in's engines replace
    # the engines list of /etc/salt/minion itself, so the state refuses while that
    # file has one: move it into a minion.d/*.conf drop-in (Salt merges those).
    returns_engine: False
    # Master pubkey signing (the masters keep their own master.pem and sign it with one
    # shared signing key pair, see ha:master:signing): the minion verifies the
    # signature with the masters' master_sign.pub, written to its pki dir. Public: plain
    # pillar is fine. Switch the minions first, then restart the masters.
    verify_master_pubkey_sign: False
    # master_sign_pub: |
    #   -----BEGIN PUBLIC KEY-----
    #   ...

  master:
    # Drop-in written by ha.master_config in master.d/ on every master: identical bytes.
    config_file: ha.conf
    config:
      worker_threads: 8
      keep_jobs_seconds: 86400
      file_recv: False
    # Master pki dir managed by ha.master_keypair when private_key is set.
    pki_dir: /etc/salt/pki/master
    # private_key: |
    #   -----BEGIN RSA PRIVATE KEY-----
    #   ...
    # public_key: (optional, checked against private_key)
    # Or master pubkey signing instead of one shared master.pem: ha.master_signing
    # writes master_sign.pem/.pub to pki_dir and master_sign_pubkey: True to
    # master.d/<config_file> when signing:private_key is set (GPG-encrypted pillar,
    # masters only; the same pair on every master).
    # signing:
    #   config_file: ha-signing.conf
    #   private_key: |
    #     -----BEGIN RSA PRIVATE KEY-----
    #     ...
    #   public_key: (optional; the master_sign_pub the minions get)
