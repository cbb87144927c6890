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
