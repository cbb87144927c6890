"""
The runner's orchestration core (ha_sync) against fake salt-api peers on 127.0.0.1:
the per-peer fan-out, progress from peer threads, shape checks of peer answers.
"""

import threading

import pytest
from salt.exceptions import CommandExecutionError

import ha_peers
import ha_sync
from tests.support import fake_http
from tests.unit.test_peers import PASSWORD, FakeApi, peer


@pytest.fixture
def fake_api():
    with fake_http.serving(FakeApi) as server:
        server.requests, server.mode = [], "ok"
        yield server


def test_progress_from_peer_threads_is_delivered_by_the_owner_thread():
    delivered = []
    relay = ha_sync.ProgressRelay(lambda message: delivered.append((message, threading.get_ident())))
    relay("from the owner")
    worker = threading.Thread(target=relay, args=("from a peer thread",))
    worker.start()
    worker.join(5)
    assert delivered == [("from the owner", threading.get_ident())]
    relay.flush()
    assert delivered[-1] == ("from a peer thread", threading.get_ident())


def test_progress_off_drops_messages():
    relay = ha_sync.ProgressRelay()
    relay("nobody listens")
    relay.flush()  # nothing queued, nothing raised


def test_for_each_peer_reports_every_peer_and_masks_errors(fake_api):
    good = peer(fake_api)
    bad = ha_peers.peer_config("peer2", {**vars_of(good), "password": "wrong-" + PASSWORD})
    messages = []
    relay = ha_sync.ProgressRelay(messages.append)

    def work(client):
        relay(f"working on {client.peer.name}")
        return client.runner("ha.local_inventory", keys="digests")

    results = ha_sync.for_each_peer([good, bad], work, relay)
    answer, error = results["peer1"]
    assert error is None and answer["fun"] == "ha.local_inventory"
    answer, error = results["peer2"]
    assert answer is None and "refused" in error and PASSWORD not in error
    assert sorted(messages) == ["working on peer1", "working on peer2"]


def vars_of(config):
    return {"url": config.url, "eauth": config.eauth, "username": config.username, "password": config.password, "timeout": 2}


@pytest.mark.parametrize("answer", ["surprise", {"master": "b"}, None, ["list"]])
def test_a_peer_answer_without_its_fields_is_garbage(answer):
    with pytest.raises(CommandExecutionError, match="the peer answered garbage"):
        ha_sync.checked(answer, ha_sync.INVENTORY_FIELDS, "ha.local_inventory")


def test_no_peers_is_no_work():
    assert ha_sync.for_each_peer([], lambda client: 1 / 0, ha_sync.ProgressRelay()) == {}
