{#-
  salt-ha reactor: a minion key accepted on this master is pushed to every peer
  master (ha:peers) within seconds, so the minion can fail over to any of them.

  Enable it on every master (e.g. /etc/salt/master.d/reactor.conf):

    reactor:
      - 'salt/key':
        - /srv/reactor/ha_keys.sls

  `salt-key -a <id>` (or wheel key.accept) fires `salt/key`; Salt 3008 sets
  `act: accepted` there (older releases: `accept`), so both are matched.
  ha.sync_keys is idempotent, so a burst of accepts costs a few no-op runs.
  Keys written by a peer's sync fire no `salt/key` event: no ping-pong.
-#}
{%- if data.get('act') in ('accept', 'accepted') %}
ha_sync_keys_after_accept:
  runner.ha.sync_keys: []
{%- endif %}
