"""
salt-ha engine ``ha_health`` (master): an HTTP health endpoint for load balancers,
keepalived and Prometheus.

``GET /health`` answers 200 only while this master's request server answers an
application-level ping (the clear ``{"cmd": "ping"}`` a minion sends, answered by an
MWorker) within ``timeout`` seconds, and 503 otherwise, with a short JSON body saying
why: a frozen or partitioned master still completes TCP handshakes, so a TCP check
passes it, this one does not. ``GET /metrics`` is the Prometheus text exposition of
the master side (request server up and ping latency, minion keys by state, versions).

.. code-block:: yaml

    engines:
      - ha_health:
          host: 0.0.0.0     # address to listen on (an IP address)
          port: 4510        # 1-65535
          timeout: 2        # seconds the request server gets to answer, (0, 30]

Bad options are logged as an error naming the option and value, and the engine then
serves nothing (it is not restarted in a loop). A port another process holds is
logged once as an error, and binding is retried every 10 s. The logic is in
``_utils/ha_health.py``.
"""

import logging
import time

from salt.exceptions import SaltInvocationError

import ha_health

log = logging.getLogger(__name__)

__virtualname__ = "ha_health"

IDLE = 3600


def __virtual__():
    if __opts__.get("__role") not in (None, "master"):
        return (False, "ha_health runs on masters (it checks the master's request server)")
    return __virtualname__


def start(**options):
    """
    Serve ``/health`` and ``/metrics`` for the life of the master (Salt starts it
    from ``engines``).

    CLI Example (the engine is configured, not called; check it with curl):

    .. code-block:: bash

        curl -fsS http://127.0.0.1:4510/health
        curl -fsS http://127.0.0.1:4510/metrics
    """
    try:
        config = ha_health.engine_config(options)
    except SaltInvocationError as err:
        log.error("salt-ha health: the ha_health engine is not running: %s", err)
        while True:
            time.sleep(IDLE)
    ha_health.serve(__opts__, config)
