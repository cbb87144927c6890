"""The ``ha_returns`` ledger against real files in tmp_path: atomic 0600 entries, every bad file skipped and named, bounds."""

import logging
import os
import stat

import pytest
import salt.payload

import ha_ledger

MINION = "web1"
NOW = 1_700_000_000.0


def mode_of(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def key_of(number):
    return f"{number:032x}"


def make_entry(number, seen=NOW, minion=MINION, data="ok", **extra):
    """An entry as the guard stores it (no ``persisted``/``next_try``/``size``)."""
    return {
        "key": key_of(number),
        "request_id": f"req-{number}",
        "minion": minion,
        "master": "m1",
        "seen": seen,
        "load": {"cmd": "_return", "id": minion, "jid": f"2024010100000000{number:04d}", "fun": "test.ping",
                 "return": data, "retcode": 0, "success": True},
        "attempts": 0,
        **extra,
    }


@pytest.fixture
def ledger(tmp_path):
    return ha_ledger.Ledger(tmp_path / "ledger", MINION)


def pending(ledger):
    return sorted(os.listdir(ledger.pending_dir)) if os.path.isdir(ledger.pending_dir) else []


# --- save / load ---------------------------------------------------------------


def test_save_writes_one_private_msgpack_file_per_entry(ledger, tmp_path):
    entry = make_entry(1)
    size = ledger.save(entry)
    path = os.path.join(ledger.pending_dir, key_of(1) + ".ret")
    assert pending(ledger) == [key_of(1) + ".ret"]
    assert mode_of(path) == 0o600
    assert mode_of(ledger.pending_dir) == 0o700
    assert mode_of(ledger.directory) == 0o700
    with open(path, "rb") as handle:
        data = handle.read()
    assert size == len(data) == ha_ledger.entry_size({"format": ha_ledger.FORMAT, **entry})
    assert salt.payload.loads(data) == {"format": ha_ledger.FORMAT, **entry}


def test_save_replaces_atomically_without_leftovers(ledger):
    ledger.save(make_entry(1))
    ledger.save(make_entry(1, attempts=3))
    assert pending(ledger) == [key_of(1) + ".ret"]  # no temp file, no backup
    entries, findings = ledger.load()
    assert findings == [] and [entry["attempts"] for entry in entries] == [3]


def test_load_round_trips_oldest_first_with_sizes(ledger):
    for number, seen in [(3, NOW + 5), (1, NOW + 9), (2, NOW)]:
        ledger.save(make_entry(number, seen=seen))
    entries, findings = ledger.load()
    assert findings == []
    assert [entry["key"] for entry in entries] == [key_of(2), key_of(3), key_of(1)]
    for entry in entries:
        expected = make_entry(int(entry["key"], 16), seen=entry["seen"])
        assert entry == {"format": ha_ledger.FORMAT, **expected, "size": os.path.getsize(ledger.path_for(entry["key"]))}


def test_load_of_a_missing_ledger_is_empty(ledger):
    assert ledger.load() == ([], [])
    assert not os.path.exists(ledger.directory)  # reading creates nothing


def test_load_when_pending_is_not_a_folder_is_a_finding(ledger):
    os.makedirs(ledger.directory)
    with open(ledger.pending_dir, "w") as handle:
        handle.write("x")
    entries, findings = ledger.load()
    assert entries == []
    assert findings == [{"path": ledger.pending_dir, "reason": findings[0]["reason"]}]
    assert findings[0]["reason"].startswith("cannot list: NotADirectoryError")


@pytest.mark.parametrize(
    "key",
    ["", "abc", "g" * 32, "A" * 32, "0" * 31, "0" * 33, "0" * 32 + "\n", "../" + "0" * 29, "0" * 16 + "/" + "0" * 15,
     None, 12, b"0" * 32],
    ids=repr,
)
def test_path_for_refuses_anything_but_32_hex_digits(ledger, key):
    with pytest.raises(ValueError, match="is not 32 hex digits"):
        ledger.path_for(key)


def test_remove_of_a_missing_entry_is_fine(ledger):
    ledger.remove(key_of(9))
    ledger.save(make_entry(9))
    ledger.remove(key_of(9))
    assert pending(ledger) == []


# --- skipped files --------------------------------------------------------------

GOOD = make_entry(1)


def dumped(value):
    return salt.payload.dumps(value)


def stored(**changes):
    entry = {"format": ha_ledger.FORMAT, **make_entry(7)}
    entry.update(changes)
    return dumped(entry)


def stored_load(**changes):
    load = {**make_entry(7)["load"], **changes}
    return stored(load=load)


SKIPPED = [
    # (file name, content, reason)
    ("corrupt", key_of(7) + ".ret", b"\x93\x01", "corrupt: SaltDeserializationError"),
    ("empty", key_of(7) + ".ret", b"", "corrupt: SaltDeserializationError"),
    ("text", key_of(7) + ".ret", b"master: m1\n", "corrupt: SaltDeserializationError"),
    ("msgpack list", key_of(7) + ".ret", dumped([1, 2]), "not a salt-ha return"),
    ("msgpack int", key_of(7) + ".ret", dumped(5), "not a salt-ha return"),
    ("no format", key_of(7) + ".ret", dumped(make_entry(7)), "not a salt-ha return"),
    ("other format", key_of(7) + ".ret", stored(format="salt-ha-return/2"), "not a salt-ha return"),
    ("no load", key_of(7) + ".ret", stored(load=None), "holds no job return load"),
    ("load not a dict", key_of(7) + ".ret", stored(load=["_return"]), "holds no job return load"),
    ("not a return", key_of(7) + ".ret", stored_load(cmd="_minion_event"), "holds no job return load"),
    ("no jid", key_of(7) + ".ret", stored(load={"cmd": "_return", "id": MINION}), "holds no job return load"),
    ("foreign entry", key_of(7) + ".ret", stored(minion="db1", load={**make_entry(7)["load"], "id": "db1"}),
     "holds a return of another minion ('db1'), never replayed here"),
    ("foreign load", key_of(7) + ".ret", stored_load(id="db1"), "holds a return of another minion ('db1')"),
    ("foreign minion", key_of(7) + ".ret", stored(minion="db1"), "holds a return of another minion"),
    ("key mismatch", key_of(7) + ".ret", stored(key=key_of(8)), "its key or time does not match its name"),
    ("no seen", key_of(7) + ".ret", stored(seen=None), "its key or time does not match its name"),
    ("seen text", key_of(7) + ".ret", stored(seen="yesterday"), "its key or time does not match its name"),
    ("bad name", "notes.txt", stored(), "not a ledger entry name"),
    ("upper hex", key_of(7).upper().replace("0", "A") + ".ret", stored(), "not a ledger entry name"),
    ("short name", "0" * 31 + ".ret", stored(), "not a ledger entry name"),
    ("backup name", key_of(7) + ".ret.bak", stored(), "not a ledger entry name"),
    ("no suffix", key_of(7), stored(), "not a ledger entry name"),
]


@pytest.mark.parametrize("name,content,reason", [case[1:] for case in SKIPPED], ids=[case[0] for case in SKIPPED])
def test_bad_files_are_skipped_named_and_left_in_place(ledger, name, content, reason):
    ledger.save(GOOD)
    path = os.path.join(ledger.pending_dir, name)
    with open(path, "wb") as handle:
        handle.write(content)
    entries, findings = ledger.load()
    assert [entry["key"] for entry in entries] == [GOOD["key"]]  # the good one beside it still loads
    assert len(findings) == 1
    assert findings[0]["path"] == path
    assert reason in findings[0]["reason"]
    assert os.path.exists(path)  # never removed: the operator decides


def test_a_folder_named_like_an_entry_cannot_be_read(ledger):
    os.makedirs(os.path.join(ledger.pending_dir, key_of(7) + ".ret"))
    entries, findings = ledger.load()
    assert entries == []
    assert [finding["reason"].split(":")[0] for finding in findings] == ["cannot read"]
    assert "IsADirectoryError" in findings[0]["reason"]


def test_a_file_name_is_shown_printable(ledger):
    ledger.ensure()
    with open(os.path.join(ledger.pending_dir, "bad\nname"), "wb") as handle:
        handle.write(b"x")
    _entries, findings = ledger.load()
    assert findings[0]["path"] == os.path.join(ledger.pending_dir, "bad\\nname")


def test_another_minions_ledger_is_never_loaded(tmp_path):
    ha_ledger.Ledger(tmp_path, "db1").save(make_entry(1, minion="db1"))
    entries, findings = ha_ledger.Ledger(tmp_path, MINION).load()
    assert entries == []
    assert "another minion ('db1')" in findings[0]["reason"]


@pytest.mark.parametrize("name", [f".{key_of(7)}.ret.x1y2.tmp", ".hidden", "." + key_of(7) + ".ret"])
def test_temp_files_are_ignored(ledger, name):
    ledger.save(GOOD)
    with open(os.path.join(ledger.pending_dir, name), "wb") as handle:
        handle.write(b"\x93half-written")
    entries, findings = ledger.load()
    assert [entry["key"] for entry in entries] == [GOOD["key"]]
    assert findings == []


# --- bounds ----------------------------------------------------------------------


def loaded(ledger, specs):
    """Save entries ``(number, age, size of their return data)`` and load them back (with sizes)."""
    for number, age, size in specs:
        ledger.save(make_entry(number, seen=NOW - age, data="x" * size))
    entries, findings = ledger.load()
    assert findings == []
    return entries


BOUNDS = [
    # (id, entries (number, age, data size), max_age, max_bytes, kept, dropped {number: reason})
    ("all within", [(1, 10, 100), (2, 5, 100)], 60, 10_000, [1, 2], {}),
    ("age is not over max_age", [(1, 60, 100)], 60, 10_000, [1], {}),
    ("too old", [(1, 61, 100), (2, 5, 100)], 60, 10_000, [2], {1: "older than max_age (60 s)"}),
    ("all too old", [(1, 600, 100), (2, 90, 100)], 60, 10_000, [], {1: "older than max_age (60 s)",
                                                                     2: "older than max_age (60 s)"}),
    ("oldest over max_bytes", [(1, 30, 3000), (2, 20, 3000), (3, 10, 3000)], 600, 7000, [2, 3],
     {1: "ledger over max_bytes (7000 bytes)"}),
    ("two over max_bytes", [(1, 30, 3000), (2, 20, 3000), (3, 10, 3000)], 600, 4000, [3],
     {1: "ledger over max_bytes (4000 bytes)", 2: "ledger over max_bytes (4000 bytes)"}),
    ("one bigger than max_bytes", [(1, 30, 9000)], 600, 4000, [], {1: "ledger over max_bytes (4000 bytes)"}),
    ("age first, then bytes", [(1, 900, 3000), (2, 20, 3000), (3, 10, 3000)], 600, 7000, [2, 3],
     {1: "older than max_age (600 s)"}),
    ("fractional max_age", [(1, 2, 100)], 1.5, 10_000, [], {1: "older than max_age (1.5 s)"}),
]


@pytest.mark.parametrize("specs,max_age,max_bytes,kept,dropped", [case[1:] for case in BOUNDS],
                         ids=[case[0] for case in BOUNDS])
def test_enforce_drops_logs_and_records(ledger, caplog, specs, max_age, max_bytes, kept, dropped):
    entries = loaded(ledger, specs)
    with caplog.at_level(logging.WARNING, logger="ha_ledger"):
        kept_entries, dropped_entries = ledger.enforce(entries, max_age, max_bytes, now=NOW)
    assert [int(entry["key"], 16) for entry in kept_entries] == kept
    assert {int(entry["key"], 16) for entry in dropped_entries} == set(dropped)
    assert pending(ledger) == sorted(key_of(number) + ".ret" for number in kept)
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == len(dropped)
    for number, reason in dropped.items():
        jid = make_entry(number)["load"]["jid"]
        assert any(jid in message and "published by m1" in message and reason in message for message in warnings)
    history = ledger.read_history()
    assert history["counts"] == {"replayed": 0, "dropped": len(dropped)}
    assert {(item["jid"], item["reason"]) for item in history["dropped"]} == {
        (make_entry(number)["load"]["jid"], reason) for number, reason in dropped.items()
    }
    assert all(item["at"] == NOW for item in history["dropped"])


def test_enforce_drops_the_oldest_whatever_the_order_given(ledger):
    entries = loaded(ledger, [(1, 30, 3000), (2, 20, 3000), (3, 10, 3000)])
    kept, dropped = ledger.enforce(list(reversed(entries)), 600, 7000, now=NOW)
    assert [entry["key"] for entry in dropped] == [key_of(1)]
    assert sorted(entry["key"] for entry in kept) == [key_of(2), key_of(3)]


def test_enforce_with_nothing_to_drop_writes_nothing(ledger):
    entries = loaded(ledger, [(1, 1, 10)])
    assert ledger.enforce(entries, 60, 10_000, now=NOW) == (entries, [])
    assert not os.path.exists(ledger.history_path)


# --- history -------------------------------------------------------------------------


def test_record_counts_and_keeps_the_newest_first(ledger):
    ledger.record("replayed", {"jid": "1", "to": "m2"})
    ledger.record("dropped", {"jid": "2", "reason": "old"})
    ledger.record("replayed", {"jid": "3", "to": "m2"})
    history = ledger.read_history()
    assert history == {
        "replayed": [{"jid": "3", "to": "m2"}, {"jid": "1", "to": "m2"}],
        "dropped": [{"jid": "2", "reason": "old"}],
        "counts": {"replayed": 2, "dropped": 1},
    }
    assert mode_of(ledger.history_path) == 0o600


def seed_history(ledger, count):
    """A full history written at once (``count`` replayed, newest first), as ``count`` records would leave it."""
    ledger.ensure()
    items = [{"jid": str(number)} for number in reversed(range(count))][: ha_ledger.HISTORY_KEPT]
    with open(ledger.history_path, "wb") as handle:
        handle.write(dumped({"format": ha_ledger.HISTORY_FORMAT, "replayed": items, "dropped": [],
                             "counts": {"replayed": count, "dropped": 0}}))


def test_history_is_capped_but_counts_are_not(ledger):
    seed_history(ledger, ha_ledger.HISTORY_KEPT)
    assert len(ledger.read_history()["replayed"]) == ha_ledger.HISTORY_KEPT
    for number in range(ha_ledger.HISTORY_KEPT, ha_ledger.HISTORY_KEPT + 5):
        ledger.record("replayed", {"jid": str(number)})
    history = ledger.read_history()
    assert len(history["replayed"]) == ha_ledger.HISTORY_KEPT
    assert history["replayed"][0] == {"jid": str(ha_ledger.HISTORY_KEPT + 4)}
    assert history["replayed"][-1] == {"jid": "5"}
    assert history["counts"]["replayed"] == ha_ledger.HISTORY_KEPT + 5


EMPTY_HISTORY = {"replayed": [], "dropped": [], "counts": {"replayed": 0, "dropped": 0}}


@pytest.mark.parametrize(
    "content",
    [dumped({"format": "other", "replayed": [{"jid": "1"}]}), dumped([1]),
     dumped({"format": ha_ledger.HISTORY_FORMAT, "replayed": "not a list", "counts": 3})],
    ids=["wrong format", "not a dict", "wrong types"],
)
def test_unusable_history_reads_as_empty(ledger, content):
    ledger.ensure()
    with open(ledger.history_path, "wb") as handle:
        handle.write(content)
    assert ledger.read_history() == EMPTY_HISTORY


def test_corrupt_history_is_logged_and_starts_again(ledger, caplog):
    ledger.ensure()
    with open(ledger.history_path, "wb") as handle:
        handle.write(b"\x93\x01")
    with caplog.at_level(logging.WARNING, logger="ha_ledger"):
        assert ledger.read_history() == EMPTY_HISTORY
    assert any("unreadable history" in record.getMessage() for record in caplog.records if record.name == "ha_ledger")
    ledger.record("dropped", {"jid": "1"})
    assert ledger.read_history()["counts"] == {"replayed": 0, "dropped": 1}


def test_missing_history_reads_as_empty(ledger):
    assert ledger.read_history() == EMPTY_HISTORY


def test_summary_shows_no_return_data():
    entry = make_entry(1, data="secret-data", reason="moved", attempts=2)
    assert ha_ledger.summary(entry) == {
        "jid": entry["load"]["jid"], "fun": "test.ping", "master": "m1", "why": "moved", "seen": NOW, "attempts": 2,
    }
    assert "secret-data" not in repr(ha_ledger.summary(entry))
