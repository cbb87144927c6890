# Pillar top file for the salt-ha examples: every minion gets the ha pillar.
base:
  '*':
    - ha
