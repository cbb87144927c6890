"""
Runner ``ha`` against three real masters (127.0.0.1/.2/.3), each with its own
salt-api on loopback (master c over TLS with a CA made by the test), and one
failover minion ``[a, b]`` whose key is accepted on A only.

The tests share one lab but not its state: before each test every master runs and
holds A's accepted keys (the ``in_sync`` fixture), so any test runs alone or in any
order. Master B runs the reactor of ``examples/reactor/ha_keys.sls``.
"""

import concurrent.futures
import contextlib
import json
import os
import pathlib
import time

import pytest
import salt.key
import salt.utils.yaml

import ha_keys
import ha_peers
from tests.support import api_lab, fake_http
from tests.support import lab as lablib

pytestmark = pytest.mark.integration

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
REACTOR_SLS = REPO_ROOT / "examples" / "reactor" / "ha_keys.sls"
MINION = "ha-sync-minion"
OUTPUTS = []  # every salt-run stdout/stderr, checked for the password at the end


@pytest.fixture(scope="module")
def api3(salt_factories, tmp_path_factory):
    lab = api_lab.three_master_lab(
        salt_factories,
        tmp_path_factory.mktemp("api3"),
        minion_id=MINION,
        extra_master_overrides={
            "a": {"display_progress": True},
            "b": {"reactor": [{"salt/key": [str(REACTOR_SLS)]}]},
        },
    )
    lab.started_at = time.time()
    with lablib.RunningDaemons(api_lab.daemons(lab)):
        yield lab


def make_keys_equal_to_a(lab):
    """B and C hold exactly A's accepted keys, written as ``salt-key`` leaves them."""
    source = {path.name: path.read_text() for path in key_dir(lab.masters["a"]).iterdir() if path.is_file()}
    for name in ("b", "c"):
        folder = key_dir(lab.masters[name])
        for path in folder.iterdir():
            if path.is_file() and source.get(path.name) != path.read_text():
                path.unlink()
        missing = {minion_id: pem for minion_id, pem in source.items() if not (folder / minion_id).is_file()}
        api_lab.write_minion_keys(lab.masters[name].config["pki_dir"], missing)


@pytest.fixture(autouse=True)
def in_sync(api3):
    """Every master up and in sync before each test, whatever the test before it left."""
    for master in api3.masters.values():
        if not master.is_running():
            master.start()
    make_keys_equal_to_a(api3)
    return api3


def run(master, fun, *args, timeout=120):
    ret = master.salt_run_cli(timeout=timeout).run(fun, *args)
    OUTPUTS.append(ret.stdout + ret.stderr)
    assert ret.returncode == 0, ret.stderr[-3000:] + ret.stdout[-3000:]
    return ret.data


def key_dir(master, state="minions"):
    return pathlib.Path(master.config["pki_dir"]) / state


def key_files(master):
    """Every file under a master's minion key folders: ``{relative path: content}``."""
    pki = pathlib.Path(master.config["pki_dir"])
    return {
        str(path.relative_to(pki)): path.read_text()
        for folder in ("minions", "minions_pre", "minions_rejected", "minions_denied")
        if (pki / folder).is_dir()
        for path in (pki / folder).iterdir()
    }


@contextlib.contextmanager
def peers_dropin(master, peers):
    """A master.d drop-in replacing ``ha:peers`` for the CLI runs in the block."""
    path = pathlib.Path(master.config_dir) / "master.d" / "zz-test-peers.conf"
    path.parent.mkdir(exist_ok=True)
    path.write_text(salt.utils.yaml.safe_dump({"ha": {"peers": peers}}))
    try:
        yield path
    finally:
        path.unlink()


class GarbageApi(fake_http.QuietHandler):
    """Logs anyone in, then answers every runner call with a bare string."""

    def do_POST(self):  # noqa: N802 (http.server API)
        self.read_body()
        self.send_json({"return": [{"token": "garbage-token"}]} if self.path == "/login" else {"return": ["surprise"]})


@pytest.fixture
def garbage_api():
    with fake_http.serving(GarbageApi) as server:
        yield fake_http.url_of(server)


def all_peers(lab, source, **changes):
    return {
        lab.master_id(name): lab.peer_entry(name, **changes.get(name, {}))
        for name in lab.masters
        if name != source
    }


def test_minion_on_a_only_is_reported_then_fixed_by_sync_keys(api3):
    a, b, c = (api3.masters[name] for name in "abc")
    for peer in (b, c):  # accepted on A only, as the lab seeded it
        with contextlib.suppress(FileNotFoundError):
            (key_dir(peer) / MINION).unlink()
    before = run(a, "ha.readiness")
    assert before["unreachable"] == {}
    [entry] = [item for item in before["not_ready"] if item["minion"] == MINION]
    assert {reason["reason"] for reason in entry["reasons"]} == {
        f"key missing on {b.id}",
        f"key missing on {c.id}",
    }
    assert all(reason["fix"] == f"salt-run ha.sync_keys on {a.id}" for reason in entry["reasons"])

    plan = run(a, "ha.sync_keys", "test=True")
    assert plan["peers"][b.id]["plan"]["accept"] == [MINION]
    assert not (key_dir(b) / MINION).exists(), "test=True changed nothing"

    synced = run(a, "ha.sync_keys")
    assert synced["result"] is True and synced["failed"] == []
    for peer in (b, c):  # c over TLS, verified against the test's CA
        assert synced["peers"][peer.id]["accepted"] == [MINION]
        assert (key_dir(peer) / MINION).read_text() == (key_dir(a) / MINION).read_text()

    again = run(a, "ha.sync_keys")
    assert all(not entry["accepted"] and entry["plan"]["in_sync"] == 1 for entry in again["peers"].values())

    after = run(a, "ha.readiness")
    assert MINION in after["ready"] and after["not_ready"] == []
    drift = run(a, "ha.drift")
    assert drift["differences"] == [] and drift["in_sync"] is True


def test_readiness_of_a_minion_unknown_here_names_the_real_reason(api3):
    a, b = api3.masters["a"], api3.masters["b"]
    api_lab.write_minion_keys(b.config["pki_dir"], {"only-on-b": api_lab.random_public_pem()})
    [entry] = run(a, "ha.readiness", "tgt=only-on-b")["not_ready"]
    reasons = [reason["reason"] for reason in entry["reasons"]]
    assert f"ha.lint not run: the key is not accepted on {a.id}, where ha.readiness ran" in reasons
    assert {"reason": f"key missing on {a.id}", "fix": f"salt-run ha.sync_keys on {b.id}"} in entry["reasons"]
    assert not any("did not answer" in reason for reason in reasons)


def test_status_reports_every_master(api3):
    status = run(api3.masters["a"], "ha.status")
    assert status["up"] == status["total"] == 3
    assert {entry["master"] for entry in status["masters"]} == {m.id for m in api3.masters.values()}
    assert all(entry["keys"]["accepted"] >= 1 and entry["salt_version"] for entry in status["masters"])


def test_conflicting_key_on_b_is_reported_and_untouched(api3):
    a, b = api3.masters["a"], api3.masters["b"]
    mine, theirs = api_lab.random_public_pem(), api_lab.random_public_pem()
    api_lab.write_minion_keys(a.config["pki_dir"], {"conflict-minion": mine})
    api_lab.write_minion_keys(b.config["pki_dir"], {"conflict-minion": theirs})
    result = run(a, "ha.sync_keys")
    [conflict] = result["peers"][b.id]["conflicts"]
    assert conflict["id"] == "conflict-minion" and conflict["state"] == "accepted"
    assert conflict["source_fingerprint"] != conflict["peer_fingerprint"]
    assert (key_dir(b) / "conflict-minion").read_text() == theirs
    assert (key_dir(a) / "conflict-minion").read_text() == mine
    drift = run(a, "ha.drift")
    [keys] = [d for d in drift["differences"] if d["what"] == "minion keys"]
    assert "conflict-minion" in keys["minions"]
    readiness = run(a, "ha.readiness", "tgt=conflict-*")
    [entry] = readiness["not_ready"]
    assert any("differs" in reason["reason"] and b.id in reason["reason"] for reason in entry["reasons"])


def receive_on(lab, name, items):
    """Send ``items`` straight to master ``name``'s receiving runner, as a peer would."""
    with ha_peers.PeerClient(ha_peers.peer_config(name, lab.peer_entry(name))) as client:
        return client.runner("ha.receive_keys", items=items)


@pytest.mark.parametrize(
    "bad_id",
    ["../x", "a/b", "x\0y", "", "a" * 300, "..", ".hidden", "a\\b", "line\nbreak",
     "c1\x85id", "bidi\u202eid", "isolate\u2066id", "line\u2028sep", "para\u2029sep", "zero\u200bwidth"],
    ids=["dotdot", "slash", "nul", "empty", "long", "parent", "hidden", "backslash", "newline",
         "c1", "bidi-override", "bidi-isolate", "line-separator", "paragraph-separator", "zero-width"],
)
def test_malicious_ids_sent_to_the_receiving_runner_are_refused(api3, bad_id):
    b = api3.masters["b"]
    pem = api_lab.random_public_pem()
    before = key_files(b)
    answer = receive_on(api3, "b", [{"action": "accept", "id": bad_id, "fingerprint": ha_keys.fingerprint(pem), "pem": pem}])
    assert answer["accepted"] == [] and len(answer["refused"]) == 1, answer
    assert key_files(b) == before
    assert not (pathlib.Path(b.config["pki_dir"]) / "x").exists()


def test_forged_key_and_fingerprint_are_refused(api3):
    b = api3.masters["b"]
    pem = api_lab.random_public_pem()
    before = key_files(b)
    answer = receive_on(
        api3,
        "b",
        [
            {"action": "accept", "id": "forged-fp", "fingerprint": "00:11", "pem": pem},
            {"action": "accept", "id": "not-a-key", "fingerprint": "00:11", "pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"},
            {"action": "format-disk", "id": "evil", "fingerprint": "00:11"},
        ],
    )
    assert answer["accepted"] == [] and len(answer["refused"]) == 3, answer
    assert key_files(b) == before


def log_text(master):
    return (pathlib.Path(master.config["root_dir"]) / master.config["log_file"]).read_text(errors="replace")


def test_a_refused_id_cannot_forge_a_log_line(api3):
    b = api3.masters["b"]
    forged = "2026-11-27 03:00:00,000 [salt.master      :1   ][CRITICAL] FORGED-BY-A-PEER"
    pem = api_lab.random_public_pem()
    answer = receive_on(api3, "b", [{"action": "accept", "id": f"web1\n{forged}", "fingerprint": ha_keys.fingerprint(pem), "pem": pem}])
    [refused] = answer["refused"]
    assert "\n" not in refused["id"] and "\\n" in refused["id"]
    deadline = time.monotonic() + 10
    while "FORGED-BY-A-PEER" not in log_text(b) and time.monotonic() < deadline:
        time.sleep(0.2)
    lines = [line for line in log_text(b).splitlines() if "FORGED-BY-A-PEER" in line]
    assert lines, "the refusal was not logged: nothing proven"
    assert all(not line.startswith("2026-11-27 03:00:00") for line in lines), lines


def test_a_public_key_carrying_a_private_key_is_refused_and_never_echoed(api3):
    b = api3.masters["b"]
    secret = (pathlib.Path(b.config["pki_dir"]) / "master.pem").read_text()
    pem = api_lab.random_public_pem() + secret
    before = key_files(b)
    answer = receive_on(api3, "b", [{"action": "accept", "id": "smuggler", "fingerprint": ha_keys.fingerprint(pem), "pem": pem}])
    [refused] = answer["refused"]
    assert refused["id"] == "smuggler" and "PRIVATE KEY" in refused["reason"]
    assert key_files(b) == before
    body = secret.splitlines()[1]
    assert body not in json.dumps(answer)
    # Salt itself logs a runner's arguments at debug level; salt-ha's own lines never hold the key.
    ours = [line for line in log_text(b).splitlines() if "[ha_" in line or "ext.runners.ha" in line]
    assert any("smuggler" in line for line in ours), "the refusal was not logged: nothing proven"
    assert not [line for line in ours if body in line]


def test_one_batch_accepting_and_deleting_one_id_is_refused_and_the_rest_applied(api3):
    b = api3.masters["b"]
    gone = api_lab.random_public_pem()
    api_lab.write_minion_keys(b.config["pki_dir"], {"batch-gone": gone, "batch-twice": gone})
    twice_before = (key_dir(b) / "batch-twice").read_text()
    later = api_lab.random_public_pem()
    fp = ha_keys.fingerprint
    answer = receive_on(
        api3,
        "b",
        [
            {"action": "delete", "id": "batch-gone", "fingerprint": fp(gone)},
            {"action": "accept", "id": "batch-twice", "fingerprint": fp(later), "pem": later},
            {"action": "delete", "id": "batch-twice", "fingerprint": fp(gone)},
            {"action": "accept", "id": "batch-later", "fingerprint": fp(later), "pem": later},
        ],
    )
    assert [entry["id"] for entry in answer["deleted"]] == ["batch-gone"]
    assert answer["accepted"] == ["batch-later"]
    assert [entry["id"] for entry in answer["refused"]] == ["batch-twice", "batch-twice"]
    assert (key_dir(b) / "batch-twice").read_text() == twice_before
    assert (key_dir(b) / "batch-later").read_text() == later
    assert not (key_dir(b) / "batch-gone").exists()
    backups = pathlib.Path(b.config["pki_dir"]) / ".salt-ha-backups"
    assert all(any(folder.rglob("*")) for folder in backups.iterdir()), "an empty backup folder was left"


def test_a_key_file_name_that_is_not_utf8_is_skipped_on_both_sides(api3):
    a, b, c = (api3.masters[name] for name in "abc")
    odd_name = b"caf\xe9-minion"
    odd_on_a = os.path.join(os.fsencode(key_dir(a)), odd_name)
    odd_on_b = os.path.join(os.fsencode(key_dir(b, "minions_rejected")), odd_name)
    for path in (odd_on_a, odd_on_b):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(api_lab.random_public_pem())
    api_lab.write_minion_keys(a.config["pki_dir"], {"utf8-neighbour": api_lab.random_public_pem()})
    try:
        result = run(a, "ha.sync_keys")
        assert result["result"] is True, result
        assert result["skipped"] == [{"id": "minions/b'caf\\xe9-minion'", "reason": result["skipped"][0]["reason"]}]
        assert "not valid UTF-8" in result["skipped"][0]["reason"]
        for peer in (b, c):
            assert result["peers"][peer.id]["accepted"] == ["utf8-neighbour"]
        status = run(a, "ha.status")
        assert status["up"] == status["total"] == 3, status
        [entry_b] = [entry for entry in status["masters"] if entry["master"] == b.id]
        assert [odd["path"] for odd in entry_b["odd_key_files"]] == ["minions_rejected/b'caf\\xe9-minion'"]
    finally:
        for path in (odd_on_a, odd_on_b):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)


def test_down_and_garbage_peers_are_reported_and_the_others_synced(api3, garbage_api):
    a, b, c = (api3.masters[name] for name in "abc")
    api_lab.write_minion_keys(a.config["pki_dir"], {"late-minion": api_lab.random_public_pem()})
    peers = all_peers(api3, "a")
    peers["down"] = {**api3.peer_entry("b"), "url": f"http://127.0.0.1:{lablib.free_port(['127.0.0.1'])}", "timeout": 3}
    peers["garbage"] = {**api3.peer_entry("b"), "url": garbage_api}
    with peers_dropin(a, peers):
        result = run(a, "ha.sync_keys")
    assert result["result"] is False
    assert result["failed"] == ["down", "garbage"]
    assert "unreachable" in result["peers"]["down"]["error"]
    assert "garbage" in result["peers"]["garbage"]["error"]
    for peer in (b, c):
        assert result["peers"][peer.id]["accepted"] == ["late-minion"]
        assert (key_dir(peer) / "late-minion").is_file()


def test_wrong_ca_is_refused(api3, tmp_path):
    a, c = api3.masters["a"], api3.masters["c"]
    other_ca, _ = api_lab.make_ca(tmp_path / "other-ca", "not the lab CA")
    api_lab.write_minion_keys(a.config["pki_dir"], {"tls-minion": api_lab.random_public_pem()})
    with peers_dropin(a, all_peers(api3, "a", c={"verify": str(other_ca)})):
        result = run(a, "ha.sync_keys")
    assert result["failed"] == [c.id]
    assert "TLS verification failed" in result["peers"][c.id]["error"]
    assert not (key_dir(c) / "tls-minion").exists()


def test_two_syncs_at_once_are_serialized(api3):
    a, b = api3.masters["a"], api3.masters["b"]
    keys = {f"burst-{number:03d}": api_lab.random_public_pem() for number in range(200)}
    api_lab.write_minion_keys(a.config["pki_dir"], keys)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: run(a, "ha.sync_keys"), range(2)))
    counts = sorted(len(result["peers"][b.id]["accepted"]) for result in results)
    assert counts == [0, len(keys)], counts  # the second planned after the first finished
    assert all(result["result"] for result in results)
    assert all((key_dir(b) / minion_id).read_text() == pem for minion_id, pem in keys.items())


def test_reactor_syncs_a_key_accepted_on_b_within_seconds(api3):
    a, b, c = (api3.masters[name] for name in "abc")
    api_lab.write_minion_keys(b.config["pki_dir"], {"reacted-minion": api_lab.random_public_pem()}, "minions_pre")
    ret = b.salt_key_cli(timeout=60).run("--yes", "--accept", "reacted-minion")
    assert ret.returncode == 0, ret.stderr
    accepted_at = time.monotonic()
    deadline = accepted_at + 30
    while time.monotonic() < deadline and not all((key_dir(m) / "reacted-minion").is_file() for m in (a, c)):
        time.sleep(0.2)
    elapsed = time.monotonic() - accepted_at
    assert (key_dir(a) / "reacted-minion").is_file() and (key_dir(c) / "reacted-minion").is_file(), elapsed
    assert elapsed < 15, elapsed


def test_progress_events_and_no_password_anywhere(api3, salt_factories):
    a = api3.masters["a"]
    started = time.time()
    run(a, "ha.sync_keys", "test=True")
    listener = salt_factories.event_listener
    pattern = [(a.id, "salt/run/*/progress")]
    assert listener.wait_for_events(pattern, timeout=30, after_time=started).found_all_events
    progress = listener.get_events(pattern, after_time=started)
    assert all("message" in event.data for event in progress)
    events = list(listener.store)
    password = api3.password
    assert all(password not in json.dumps(event.full_data, default=str) for event in events)
    assert all(password not in output for output in OUTPUTS)
    logs = [
        pathlib.Path(m.config["root_dir"]) / m.config[option]  # relative paths are under root_dir
        for m in api3.masters.values()
        for option in ("log_file", "api_logfile")
    ]
    for path in logs:
        text = path.read_text(errors="replace")
        assert any(f"ha.{fun}" in text for fun in ("sync_keys", "receive_keys", "local_inventory")) or "api" in path.name, path
        assert password not in text, path


def test_sigkill_of_a_receiving_master_mid_sync_leaves_no_half_written_key(api3):
    a, c = api3.masters["a"], api3.masters["c"]
    keys = {f"kill-{number:04d}": api_lab.random_public_pem() for number in range(6000)}
    api_lab.write_minion_keys(a.config["pki_dir"], keys)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        sync = pool.submit(lambda: a.salt_run_cli(timeout=120).run("ha.sync_keys"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any(
            name.startswith((".salt-ha-kill", "kill-")) for name in os.listdir(key_dir(c))
        ):
            time.sleep(0.01)
        lablib.kill(c)  # the whole master, the runner process writing the batch included
        sync.result(timeout=150)
    on_disk = [name for name in os.listdir(key_dir(c)) if name.startswith("kill-")]
    assert len(on_disk) < len(keys), "the kill came after the sync: nothing proven"
    for name in on_disk:  # every key file Salt would read is whole
        assert (key_dir(c) / name).read_text() == keys[name], name
    with salt.key.Key(dict(c.config)) as salt_keys:
        listed = salt_keys.list_keys()["minions"]
    assert not [name for name in listed if name.startswith(".") or name.startswith("tmp")]

    c.start()
    try:
        result = run(a, "ha.sync_keys")
        assert result["result"] is True, result["failed"]
        assert sorted(name for name in os.listdir(key_dir(c)) if name.startswith("kill-")) == sorted(keys)
        assert not [name for name in os.listdir(key_dir(c)) if name.startswith(".salt-ha-")]
    finally:
        for name in keys:  # keep later tests' key sets small
            for master in api3.masters.values():
                with contextlib.suppress(FileNotFoundError):
                    (key_dir(master) / name).unlink()


def test_minion_synced_by_ha_fails_over_to_b_when_a_is_killed(api3):
    a, b = api3.masters["a"], api3.masters["b"]
    for peer in (b, api3.masters["c"]):  # accepted on A only until ha.sync_keys runs
        (key_dir(peer) / MINION).unlink()
    assert run(a, "ha.sync_keys")["peers"][b.id]["accepted"] == [MINION]
    lablib.kill(a)
    deadline = time.monotonic() + 60
    answered = None
    while time.monotonic() < deadline:
        ret = b.salt_cli(timeout=20).run("--timeout=5", "test.ping", minion_tgt=MINION)
        if ret.returncode == 0 and ret.data is True:
            answered = time.monotonic()
            break
        time.sleep(1)
    assert answered is not None, "the minion never answered through B"
