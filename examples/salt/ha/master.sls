{#- Shared master settings and key pair (or signing key pair) from pillar ha:master
    (examples/pillar/ha.sls).
    The salt-master reads both when it starts: restart it afterwards, e.g.
    cmd.run 'salt-call --local service.restart salt-master' with bg: True and
    onchanges on these states. #}
{%- set ha = salt['pillar.get']('ha:master', {}) %}
{%- if ha.get('config') %}
ha-master-config:
  ha.master_config:
    - name: {{ ha.get('config_file', 'ha.conf') | json }}
    - settings: {{ ha.config | json }}
{%- endif %}
{%- if ha.get('private_key') %}
ha-master-keypair:
  ha.master_keypair:
    - name: {{ ha.get('pki_dir', '/etc/salt/pki/master') | json }}
    - private_key: {{ ha.private_key | json }}
{%- if ha.get('public_key') %}
    - public_key: {{ ha.public_key | json }}
{%- endif %}
{%- endif %}
{%- if ha.get('signing', {}).get('private_key') %}
ha-master-signing:
  ha.master_signing:
    - name: {{ ha.get('pki_dir', '/etc/salt/pki/master') | json }}
    - private_key: {{ ha.signing.private_key | json }}
{%- if ha.signing.get('public_key') %}
    - public_key: {{ ha.signing.public_key | json }}
{%- endif %}
    - config: {{ ha.signing.get('config_file', 'ha-signing.conf') | json }}
{%- endif %}
