# salt-ha examples: failover settings on every minion; the masters (their own
# minions, with grain roles: [salt-master]) also get the shared master settings
# and key pair.
base:
  '*':
    - ha.minion
  'roles:salt-master':
    - match: grain
    - ha.master
