"""
ha_jobs: argument checks, one master's job-cache view (fake returner functions),
the merge of several masters' views (publisher alive or dead, return on B only,
a store shared by several masters, failed peers), and ``jobs()`` against fake
salt-api peers on 127.0.0.1.
"""

import datetime
import json

import pytest
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_jobs
import ha_peers
import ha_sync
from tests.support import fake_http, fake_master

NOW = datetime.datetime(2026, 11, 27, 12, 0, 0, tzinfo=datetime.timezone.utc)
JID = "20261127113000123456"  # 30 minutes before NOW
OLDER = "20261127100000000001"  # 2 hours before NOW
ANCIENT = "20261120100000000000"  # a week before NOW
PASSWORD = "jobs-Pa55word"
TOKEN = "jobs-token"


def publication(jid=JID, fun="test.ping", tgt="web*", minions=("web1", "web2"), **extra):
    """A load as a publishing master stores it (local_cache adds ``Minions`` on read)."""
    load = {"cmd": "publish", "jid": jid, "fun": fun, "arg": [], "tgt": tgt, "tgt_type": "glob",
            "user": "root", "ret": "", "kwargs": {"show_jid": False}, **extra}
    if minions is not None:
        load["Minions"] = list(minions)
    return load


def return_load(minion, jid=JID, fun="test.ping", ret=True, replay=None):
    """A load Salt saves from a minion's ``_return`` for a jid it never published."""
    load = {"cmd": "_return", "id": minion, "jid": jid, "fun": fun, "fun_args": [], "return": ret,
            "retcode": 0, "success": True}
    if replay:
        load.update(ha_replay=replay, tgt=minion, tgt_type="glob")
    return load


def returned(*minions, ret=True, success=True, retcode=0):
    return {minion: {"return": ret, "retcode": retcode, "success": success} for minion in minions}


class FakeJobCache:
    """The returner functions of a job cache holding ``{jid: (load, returns)}``."""

    def __init__(self, jobs, name="local_cache"):
        self.jobs, self.name, self.calls = jobs, name, []

    def functions(self):
        def get_jids():
            self.calls.append("get_jids")
            return {jid: {"Function": load.get("fun")} for jid, (load, _) in self.jobs.items()}

        def get_load(jid):
            self.calls.append(f"get_load {jid}")
            return self.jobs.get(jid, ({}, {}))[0]

        def get_jid(jid):
            self.calls.append(f"get_jid {jid}")
            return self.jobs.get(jid, ({}, {}))[1]

        return {f"{self.name}.get_jids": get_jids, f"{self.name}.get_load": get_load, f"{self.name}.get_jid": get_jid}


def view(master, jobs, jid=None, name="local_cache", **kwargs):
    """One master's ``ha.local_jobs`` answer over ``jobs``, as JSON would carry it."""
    opts = {"id": master, "master_job_cache": name}
    answer = ha_jobs.local_jobs(opts, jid=jid, returners=FakeJobCache(jobs, name).functions(), now=NOW, **kwargs)
    return json.loads(json.dumps(answer))


# --- arguments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "jid",
    [" 0000000000000000000", "+0000000000000000000", "1_000000000000000000", "２０２６１１２７１０１０１０１２３４５６",
     "2026112710101012345", "202611271010101234567", "abc", "", "../../etc/passwd", 1.5, True, ["20261127101010123456"],
     "20261127101010123456_", "20261127101010123456\n"],
    ids=["space", "plus", "underscore", "fullwidth", "19-digits", "21-digits", "letters", "empty", "path", "float",
         "bool", "list", "empty-pid", "newline"],
)
def test_a_bad_jid_is_refused_naming_it(jid):
    with pytest.raises(SaltInvocationError, match=r"^jid .* is not a Salt job id"):
        ha_jobs.validate_jid(jid)


@pytest.mark.parametrize(
    ("jid", "expected"),
    [(None, None), (JID, JID), (20261127113000123456, JID), ("20261127113000123456_4242", "20261127113000123456_4242")],
    ids=["none", "string", "int-from-the-cli", "unique-jid"],
)
def test_good_jids(jid, expected):
    assert ha_jobs.validate_jid(jid) == expected


@pytest.mark.parametrize(
    ("hours", "message"),
    [(0, "out of range"), (-1, "out of range"), (24 * 367, "out of range"), (float("nan"), "not a number"),
     (float("inf"), "not a number"), ("24", "not a number"), (True, "not a number"), (None, "not a number")],
    ids=["zero", "negative", "too-many", "nan", "inf", "string", "bool", "none"],
)
def test_bad_hours_are_refused_naming_them(hours, message):
    with pytest.raises(SaltInvocationError, match=rf"^hours .*{message}"):
        ha_jobs.validate_hours(hours)


@pytest.mark.parametrize("hours", [0.5, 1, 24, 24 * 366])
def test_good_hours(hours):
    assert ha_jobs.validate_hours(hours) == float(hours)


@pytest.mark.parametrize("limit", [0, -1, 100001, 1.0, "10", True, None])
def test_bad_limits_are_refused(limit):
    with pytest.raises(SaltInvocationError, match=r"^limit "):
        ha_jobs.validate_limit(limit)


@pytest.mark.parametrize("call", ["local_jobs", "jobs"])
def test_both_entry_points_check_arguments_before_reading_anything(call):
    cache = FakeJobCache({})
    with pytest.raises(SaltInvocationError, match="jid"):
        if call == "local_jobs":
            ha_jobs.local_jobs({"id": "a"}, jid="nope", returners=cache.functions())
        else:
            ha_jobs.jobs({"id": "a"}, [], ha_sync.ProgressRelay(), jid="nope", returners=cache.functions())
    assert cache.calls == []


# --- one master's view --------------------------------------------------------------------


def test_a_published_job_lists_target_expected_minions_and_who_returned():
    answer = view("a", {JID: (publication(), returned("web1"))})
    entry = answer["jobs"][JID]
    assert entry["published_here"] is True and entry["replay"] is None
    assert (entry["fun"], entry["tgt"], entry["tgt_type"], entry["user"]) == ("test.ping", "web*", "glob", "root")
    assert entry["expected"] == ["web1", "web2"]
    assert entry["start_time"] == "2026-11-27T11:30:00.123456Z"
    assert entry["returns"] == {"web1": {"success": True, "retcode": 0}}  # no return payload without jid
    assert (answer["total"], answer["left_out"], answer["master"], answer["returner"]) == (1, 0, "a", "local_cache")


@pytest.mark.parametrize(
    ("load", "published", "replay", "tgt"),
    [
        (publication(), True, None, "web*"),
        (return_load("web1"), False, None, None),
        (return_load("web1", replay={"from": "a", "reason": "master a did not answer"}), False,
         {"from": "a", "reason": "master a did not answer", "minion": "web1"}, "web1"),
        ({}, False, None, None),
    ],
    ids=["publication", "received-return", "replayed-return", "no-load"],
)
def test_a_load_is_a_publication_or_a_received_return(load, published, replay, tgt):
    entry = view("b", {JID: (load, returned("web1"))})["jobs"][JID]
    assert entry["published_here"] is published
    assert entry["replay"] == replay
    assert entry["tgt"] == tgt
    assert entry["expected"] == (["web1", "web2"] if published else None)


def test_a_received_return_never_passes_its_minion_list_off_as_expected():
    load = {**return_load("web1", replay={"from": "a", "reason": "x"}), "Minions": ["web1"]}
    assert view("b", {JID: (load, returned("web1"))})["jobs"][JID]["expected"] is None


def test_the_window_the_limit_and_the_masters_own_jobs():
    jobs = {
        JID: (publication(), returned("web1")),
        OLDER: (publication(OLDER), {}),
        "20261127110000000002": (publication("20261127110000000002", fun="runner.ha.local_jobs"), {}),
        "20261127110000000003": (publication("20261127110000000003", fun="saltutil.find_job"), {}),
        "20261127110000000004": (publication("20261127110000000004", fun="wheel.key.list_all"), {}),
        ANCIENT: (publication(ANCIENT), {}),
    }
    answer = view("a", jobs, hours=3, limit=1)
    assert list(answer["jobs"]) == [JID]  # the newest
    assert (answer["total"], answer["left_out"], answer["ignored"]) == (2, 1, 3)
    assert list(view("a", jobs, hours=1)["jobs"]) == [JID]
    assert sorted(view("a", jobs, hours=24 * 8)["jobs"]) == [ANCIENT, OLDER, JID]


def test_a_listing_stops_at_a_bounded_number_of_returns(monkeypatch):
    monkeypatch.setattr(ha_jobs, "MAX_LISTED_RETURNS", 5)
    jids = [f"2026112711{minute:02d}00000000" for minute in range(4)]
    answer = view("a", {jid: (publication(jid), returned("web1", "web2", "web3")) for jid in jids})
    assert list(answer["jobs"]) == sorted(jids, reverse=True)[:2]  # 6 returns: the budget is spent
    assert (answer["total"], answer["left_out"]) == (4, 2)


def test_with_a_jid_only_that_job_is_read_with_its_returns_whatever_its_age():
    cache = FakeJobCache({ANCIENT: (publication(ANCIENT), returned("web1", ret={"pkg": "1.0"}))})
    answer = ha_jobs.local_jobs({"id": "a"}, jid=ANCIENT, hours=1, returners=cache.functions(), now=NOW)
    assert answer["jobs"][ANCIENT]["returns"] == {"web1": {"success": True, "retcode": 0, "return": {"pkg": "1.0"}}}
    assert "get_jids" not in cache.calls
    assert ha_jobs.local_jobs({"id": "a"}, jid=JID, returners=cache.functions(), now=NOW)["jobs"] == {}


def test_what_msgpack_can_hold_is_returned_as_json():
    load = publication(arg=[b"\xff\x00bytes", ("a", "tuple")])
    entry = view("a", {JID: (load, returned("web1", ret={1: {"x"}, "f": float("nan")}))}, jid=JID)["jobs"][JID]
    assert entry["arg"] == ["\\xff\x00bytes", ["a", "tuple"]]
    assert entry["returns"]["web1"]["return"] == {"1": ["x"], "f": "nan"}


def test_an_old_style_return_without_success_or_retcode_is_kept():
    entry = view("a", {JID: (publication(), {"web1": "just the return"})}, jid=JID)["jobs"][JID]
    assert entry["returns"]["web1"] == {"success": None, "retcode": None, "return": "just the return"}


@pytest.mark.parametrize("missing", ["get_jids", "get_load", "get_jid"])
def test_a_job_cache_without_a_read_function_is_a_clear_error(missing):
    functions = FakeJobCache({}, "odd").functions()
    del functions[f"odd.{missing}"]
    with pytest.raises(CommandExecutionError, match=rf"master_job_cache 'odd' cannot be read: its returner has no {missing}"):
        ha_jobs.local_jobs({"id": "a", "master_job_cache": "odd"}, returners=functions)


def test_a_failing_job_cache_is_a_command_error():
    def broken():
        raise OSError(13, "Permission denied")

    functions = {**FakeJobCache({}).functions(), "local_cache.get_jids": broken}
    with pytest.raises(CommandExecutionError, match="reading job cache 'local_cache' failed: .*Permission denied"):
        ha_jobs.local_jobs({"id": "a"}, returners=functions)


def test_returners_that_list_jids_only_are_read():
    functions = FakeJobCache({JID: (publication(), {})}).functions()
    functions["local_cache.get_jids"] = lambda: [JID]
    assert list(ha_jobs.local_jobs({"id": "a"}, returners=functions, now=NOW)["jobs"]) == [JID]


# --- the merge ----------------------------------------------------------------------------------

A, B, C = "master-a", "master-b", "master-c"
REPLAY = {"from": A, "reason": "master-a did not answer"}

# (case id, {master: jobs held}, {master: error}, expected for JID)
MERGE_CASES = [
    (
        "publisher-alive-return-on-a",
        {A: {JID: (publication(), returned("web1", "web2"))}, B: {}},
        {},
        {"published_by": [A], "minions": {"web1": [A], "web2": [A]}, "missing": [], "tgt": "web*", "note": None},
    ),
    (
        "publisher-alive-one-minion-silent",
        {A: {JID: (publication(), returned("web1"))}, B: {}},
        {},
        {"published_by": [A], "minions": {"web1": [A]}, "missing": ["web2"], "tgt": "web*", "note": None},
    ),
    (
        "publisher-alive-return-on-b-only",
        {A: {JID: (publication(), returned("web1"))}, B: {JID: (return_load("web2", replay=REPLAY), returned("web2"))}},
        {},
        {"published_by": [A], "minions": {"web1": [A], "web2": [B]}, "missing": [], "tgt": "web*", "note": None},
    ),
    (
        "publisher-dead-return-on-b-only",
        {B: {JID: (return_load("web2", replay=REPLAY), returned("web2"))}, C: {}},
        {A: "peer master-a: unreachable"},
        {"published_by": None, "minions": {"web2": [B]}, "missing": None, "tgt": None,
         "note": "no reachable master holds the publication of this job; the ha_returns replay names master-a as its"
                 " publisher; not answering: master-a (peer master-a: unreachable)"},
    ),
    (
        "publisher-dead-failover-without-replay",
        {B: {JID: (return_load("web2"), returned("web2"))}},
        {A: "peer master-a: no answer within 10 s"},
        {"published_by": None, "minions": {"web2": [B]}, "missing": None, "tgt": None,
         "note": "no reachable master holds the publication of this job;"
                 " not answering: master-a (peer master-a: no answer within 10 s)"},
    ),
    (
        "shared-store-publication",
        {name: {JID: (publication(), returned("web1"))} for name in (A, B, C)},
        {},
        {"published_by": None, "minions": {"web1": [A, B, C]}, "missing": ["web2"], "tgt": "web*", "shared_store": [A, B, C],
         "note": "master-a, master-b, master-c read this job from one job store: each return is shown once;"
                 " the shared job store does not record which master published the job"},
    ),
    (
        "one-return-on-a-and-replayed-to-b",
        {A: {JID: (publication(), returned("web1", "web2"))}, B: {JID: (return_load("web2", replay=REPLAY), returned("web2"))}},
        {},
        {"published_by": [A], "minions": {"web1": [A], "web2": [A, B]}, "missing": [], "tgt": "web*", "note": None},
    ),
    (
        "one-jid-published-on-two-masters",
        {A: {JID: (publication(), returned("web1"))}, B: {JID: (publication(user="other"), returned("web2"))}},
        {},
        {"published_by": [A, B], "minions": {"web1": [A], "web2": [B]}, "missing": [], "tgt": "web*",
         "note": "2 masters published a job with this jid: master-a, master-b"},
    ),
    (
        "publication-without-expected-minions",
        {A: {JID: (publication(minions=None), returned("web1"))}},
        {},
        {"published_by": [A], "minions": {"web1": [A]}, "missing": None, "tgt": "web*",
         "note": "the publication does not list the minions it expected: missing minions unknown"},
    ),
]


@pytest.mark.parametrize(("held", "failed", "expected"), [case[1:] for case in MERGE_CASES], ids=[c[0] for c in MERGE_CASES])
def test_merge(held, failed, expected):
    views = {name: view(name, jobs) for name, jobs in held.items()}
    report = ha_jobs.merge_jobs(views, failed, master=next(iter(views)))
    job = report["jobs"][JID]
    assert job["published_by"] == expected["published_by"]
    assert {minion: entry["masters"] for minion, entry in job["minions"].items()} == expected["minions"]
    assert job["missing"] == expected["missing"]
    assert job["tgt"] == expected["tgt"] and job["fun"] == "test.ping"
    assert job["note"] == expected["note"]
    assert job["shared_store"] == expected.get("shared_store")
    assert all(entry["success"] is True and entry["retcode"] == 0 for entry in job["minions"].values())
    for name in held:
        assert report["masters"][name]["answered"] is True
    for name, error in failed.items():
        assert report["masters"][name] == {"answered": False, "error": error, "returner": None, "listed": 0,
                                           "total": None, "left_out": 0}
        assert any(name in finding["message"] and finding["jid"] is None for finding in report["findings"])
    json.dumps(report)


def test_a_shared_store_shows_each_return_once_and_no_double_publisher():
    views = {name: view(name, {JID: (publication(), returned("web1", "web2"))}) for name in (A, B)}
    report = ha_jobs.merge_jobs(views, {})
    job = report["jobs"][JID]
    assert list(job["minions"]) == ["web1", "web2"]
    assert job["minions"]["web1"] == {"masters": [A, B], "success": True, "retcode": 0}
    assert job["published_by"] is None and job["missing"] == [] and job["shared_store"] == [A, B]
    assert [finding["message"] for finding in report["findings"]] == [
        f"1 job(s): read from a job store several masters share (see shared_store): {JID}"
    ]
    detailed = ha_jobs.merge_jobs(views, {}, jid=JID)["findings"]
    assert detailed == [{"severity": "info", "jid": JID, "message": "test.ping: master-a, master-b read it from one job store"}]


def test_a_database_store_that_lost_the_publication_says_why():
    views = {name: view(name, {JID: (return_load("web1"), returned("web1"))}, name="pgjsonb") for name in (A, B)}
    job = ha_jobs.merge_jobs(views, {})["jobs"][JID]
    assert job["published_by"] is None and job["missing"] is None and job["shared_store"] == [A, B]
    assert job["minions"] == {"web1": {"masters": [A, B], "success": True, "retcode": 0}}
    assert "pgjsonb keeps the load of the latest return in place of the publication" in job["note"]


def test_with_a_jid_the_returns_are_merged_and_differences_flagged():
    views = {
        A: view(A, {JID: (publication(), returned("web1", ret="from a"))}, jid=JID),
        B: view(B, {JID: (return_load("web1", replay=REPLAY), returned("web1", ret="from b", success=False, retcode=1))},
                jid=JID),
    }
    report = ha_jobs.merge_jobs(views, {}, jid=JID)
    web1 = report["jobs"][JID]["minions"]["web1"]
    assert web1 == {"masters": [A, B], "success": True, "retcode": 0, "return": "from a", "differs": True}
    assert report["jobs"][JID]["replayed"] == [{"master": B, "from": A, "reason": REPLAY["reason"], "minion": "web1"}]
    assert any("differ between masters" in finding["message"] for finding in report["findings"])


def test_a_failed_master_never_hides_the_others():
    views = {B: view(B, {JID: (publication(), returned("web1", "web2"))})}
    report = ha_jobs.merge_jobs(views, {A: "peer master-a: unreachable", C: "garbage"})
    assert report["jobs"][JID]["published_by"] == [B]
    assert [report["masters"][name]["answered"] for name in (A, B, C)] == [False, True, False]


def test_a_listing_sums_its_findings_up_per_kind():
    jids = [f"2026112711{minute:02d}00000000" for minute in range(7)]
    held = {jid: (publication(jid), returned("web1")) for jid in jids}  # web2 silent everywhere
    held[JID] = (return_load("web2", replay=REPLAY), returned("web2"))
    report = ha_jobs.merge_jobs({B: view(B, held)}, {A: "peer master-a: unreachable"})
    newest = sorted(jids, reverse=True)
    assert [entry["message"] for entry in report["findings"]] == [
        "master-a did not answer: peer master-a: unreachable; its jobs and returns are not in this report",
        f"7 job(s): minions returned on no master (see missing): {', '.join(newest[:5])}, ...",
        f"1 job(s): no reachable master holds the publication (see note): {JID}",
    ]


def test_the_merged_list_is_capped_newest_first():
    jids = [f"2026112711{minute:02d}00000000" for minute in range(10)]
    views = {A: view(A, {jid: (publication(jid), {}) for jid in jids[:6]}),
             B: view(B, {jid: (publication(jid), {}) for jid in jids[4:]})}
    report = ha_jobs.merge_jobs(views, {}, limit=3)
    assert list(report["jobs"]) == sorted(jids, reverse=True)[:3]
    assert report["left_out"] == 7


def test_a_master_that_left_jobs_out_says_so():
    jobs = {f"2026112711{minute:02d}00000000": (publication(f"2026112711{minute:02d}00000000"), {}) for minute in range(3)}
    report = ha_jobs.merge_jobs({A: view(A, jobs, limit=2)}, {})
    assert report["masters"][A]["left_out"] == 1
    assert any("listed only its newest 2 of 3 jobs" in finding["message"] for finding in report["findings"])


# --- peers' answers and jobs() --------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        "surprise",
        {"master": "b"},
        {"master": "b", "returner": "x", "total": 0, "left_out": 0, "jobs": ["list"]},
        {"master": "b", "returner": "x", "total": 0, "left_out": 0, "jobs": {"not-a-jid": {"published_here": True, "returns": {}}}},
        {"master": "b", "returner": "x", "total": 0, "left_out": 0, "jobs": {JID: {"returns": {}}}},
        {"master": "b", "returner": "x", "total": 0, "left_out": 0, "jobs": {JID: {"published_here": True, "returns": []}}},
        {"master": "b", "returner": "x", "total": 0, "left_out": 0,
         "jobs": {JID: {"published_here": True, "returns": {"web1": "x"}}}},
    ],
    ids=["string", "no-fields", "jobs-list", "bad-jid", "no-published-flag", "returns-list", "return-not-dict"],
)
def test_a_peer_answering_garbage_fails_that_peer(answer):
    with pytest.raises(CommandExecutionError, match="garbage"):
        ha_jobs.checked_view(answer)


class JobsApi(fake_http.QuietHandler):
    """A peer's salt-api answering ``ha.local_jobs`` with ``server.answer``; calls recorded."""

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.read_body() or b"null")
        if self.path == "/login":
            ok = body.get("password") == PASSWORD
            return self.send_json({"return": [{"token": TOKEN}]}) if ok else self.send_body(401, b"{}")
        self.server.calls.append(body[0])
        return self.send_json({"return": [self.server.answer]})


@pytest.fixture
def peer_api():
    with fake_http.serving(JobsApi) as server:
        server.calls = []
        yield server


def peer_of(server, name, **changes):
    entry = {"url": fake_http.url_of(server), "eauth": "sharedsecret", "username": "ha-sync", "password": PASSWORD,
             "timeout": 3, **changes}
    return ha_peers.peer_config(name, entry)


def test_jobs_merges_this_master_with_peers_and_reports_the_failed_ones(peer_api):
    peer_api.answer = view(B, {JID: (return_load("web2", replay=REPLAY), returned("web2"))})
    here = FakeJobCache({JID: (publication(), returned("web1"))})
    dead = peer_of(peer_api, C, url=f"http://127.0.0.1:{fake_master.closed_port()}")
    wrong = peer_of(peer_api, "master-d", password="wrong-" + PASSWORD)
    messages = []
    report = ha_jobs.jobs({"id": A}, [peer_of(peer_api, B), dead, wrong], ha_sync.ProgressRelay(messages.append),
                          hours=48, returners=here.functions())
    assert peer_api.calls[0] == {"client": "runner", "fun": "ha.local_jobs", "jid": None, "hours": 48.0, "limit": 1000}
    job = report["jobs"][JID]
    assert job["published_by"] == [A] and job["missing"] == []
    assert {minion: entry["masters"] for minion, entry in job["minions"].items()} == {"web1": [A], "web2": [B]}
    assert report["masters"][C]["answered"] is False and "unreachable" in report["masters"][C]["error"]
    assert "refused" in report["masters"]["master-d"]["error"] and PASSWORD not in json.dumps(report)
    assert f"ha.jobs: {B}: 1 jobs" in messages


def test_jobs_passes_the_jid_and_a_failing_local_cache_is_reported_not_raised(peer_api):
    peer_api.answer = view(B, {JID: (publication(), returned("web1", ret="pong"))}, jid=JID)

    def broken():
        raise OSError(5, "Input/output error")

    functions = {**FakeJobCache({}).functions(), "local_cache.get_load": lambda jid: broken()}
    report = ha_jobs.jobs({"id": A}, [peer_of(peer_api, B)], ha_sync.ProgressRelay(), jid=int(JID), returners=functions)
    assert peer_api.calls[0]["jid"] == JID
    assert report["masters"][A]["answered"] is False and "Input/output error" in report["masters"][A]["error"]
    assert report["jobs"][JID]["minions"]["web1"]["return"] == "pong"
    assert report["jobs"][JID]["published_by"] == [B]
