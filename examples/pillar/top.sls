# Pillar top file for the salt-ha examples: every minion gets the ha pillar.
base:
  '*':
    - ha
  # ha:master:private_key belongs in a separate, GPG-encrypted file that only the
  # masters (their own minions) receive, never in ha.sls that every minion reads:
  # 'roles:salt-master':
  #   - match: grain
  #   - ha_master_key
