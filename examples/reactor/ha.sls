{#-
  Reactor for the salt-ha beacon's failover event.

  Master config (every master: the minion reports to whichever it fails over to):

    reactor:
      - 'salt/beacon/*/ha/failover':
        - /srv/reactor/ha.sls

  `data` is the beacon event: id, transition, from, to, reason (hang, closed,
  disconnected), up, total, down, since. This example re-fires it as one
  `salt-ha/failover/<minion id>` event on the master's bus, the hook for a chat
  notification, a ticket or an orchestration (replace runner.event.send with
  runner.state.orchestrate to run one).
-#}
salt_ha_failover_notice:
  runner.event.send:
    - args:
      - tag: salt-ha/failover/{{ data['id'] }}
      - data:
          minion: {{ data['id'] | json }}
          from: {{ data.get('from') | json }}
          to: {{ data.get('to') | json }}
          reason: {{ data.get('reason') | json }}
          down: {{ data.get('down', []) | json }}
          since: {{ data.get('since') | json }}
