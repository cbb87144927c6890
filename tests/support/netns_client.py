"""
Runs next to a salt-master inside a lab namespace (tests/support/netns_lab.py, MasterClient).

``python netns_client.py <master config dir>``: prints one JSON line per event on the
master's bus (``{"tag", "at", "data"}``, ``at`` the POSIX time it was received, data
cut to a few JSON-able keys) and publishes, for every JSON line read on stdin
(``{"tgt", "fun", "arg", "tgt_type"}``), that job through the master without waiting for returns.
The first line is ``{"tag": "__client_ready"}``. Ends when stdin closes.
"""

import json
import sys
import threading
import time

import salt.client
import salt.config
import salt.utils.event

KEPT = ("id", "jid", "fun", "return", "retcode", "success", "transition", "from", "to", "reason", "act", "master")


def emit(lock, tag, data=None):
    """One JSON line on stdout."""
    kept = {key: data[key] for key in KEPT if isinstance(data, dict) and key in data}
    line = json.dumps({"tag": tag, "at": time.time(), "data": kept}, default=str)
    with lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def publisher(opts, lock):
    """Publish each job read on stdin (asynchronously); errors are reported as events."""
    client = salt.client.LocalClient(mopts=opts)
    for line in sys.stdin:
        try:
            job = json.loads(line)
            ret = client.run_job(
                job["tgt"], job["fun"], job.get("arg", []), tgt_type=job.get("tgt_type", "glob"), timeout=5, listen=False
            )
            emit(lock, "__client_published", {"jid": ret.get("jid") if isinstance(ret, dict) else None})
        except Exception as err:  # pylint: disable=broad-except  (reported to the lab, never fatal)
            emit(lock, "__client_error", {"return": f"{type(err).__name__}: {err}"})


def main():
    opts = salt.config.client_config(sys.argv[1] + "/master")
    lock = threading.Lock()
    event = salt.utils.event.get_master_event(opts, opts["sock_dir"], listen=True)
    threading.Thread(target=publisher, args=(opts, lock), daemon=True).start()
    emit(lock, "__client_ready")
    while True:
        ret = event.get_event(wait=0.2, full=True)
        if ret:
            emit(lock, ret["tag"], ret.get("data"))
        if not any(t.is_alive() for t in threading.enumerate() if t.daemon):
            return


if __name__ == "__main__":
    main()
