{#- Failover settings from pillar ha:minion (examples/pillar/ha.sls). #}
{%- set ha = salt['pillar.get']('ha:minion', {}) %}
{%- if ha.get('masters') %}
ha-minion-failover:
  ha.minion_failover:
    - name: {{ ha.get('file', 'ha-failover.conf') | json }}
    - masters: {{ ha.masters | json }}
    - alive_interval: {{ ha.get('alive_interval', 10) | json }}
    - failback: {{ ha.get('failback', False) | json }}
    - failback_interval: {{ ha.get('failback_interval', 30) | json }}
    - retry_dns: {{ ha.get('retry_dns', 0) | json }}
    - restart: {{ ha.get('restart', False) | json }}
    - returns_engine: {{ ha.get('returns_engine', False) | json }}
{%- for port in ('master_port', 'publish_port') if port in ha %}
    - {{ port }}: {{ ha[port] | json }}
{%- endfor %}
{%- if ha.get('verify_master_pubkey_sign') %}
    - verify_master_pubkey_sign: True
    - master_sign_pub: {{ ha.get('master_sign_pub') | json }}
{%- endif %}
{%- endif %}
