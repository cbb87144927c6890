"""Unit tests for ha_endpoints: master entries parsed like the minion, ports, option lookup."""

import pytest
from salt.exceptions import SaltInvocationError

import ha_endpoints
from ha_endpoints import MasterEndpoint


def endpoints(master, **opts):
    return ha_endpoints.master_endpoints({"master": master, **opts})


# entry, host, explicit port (None: none written)
ENTRY_CASES = [
    ("m1", "m1", None),
    ("m1.example.com", "m1.example.com", None),
    ("m1.example.com:4510", "m1.example.com", 4510),
    ("  m1:4510  ", "m1", 4510),
    ("127.10.0.1", "127.10.0.1", None),
    ("127.10.0.1:4510", "127.10.0.1", 4510),
    ("m1:1", "m1", 1),
    ("m1:65535", "m1", 65535),
    ("[::1]:4510", "::1", 4510),
    ("[2001:db8:0::1]:4506", "2001:db8::1", 4506),
    ("::1", "::1", None),
    ("2001:db8::1", "2001:db8::1", None),
    ("fe80::1%eth0", "fe80::1%eth0", None),
]


@pytest.mark.parametrize("entry,host,port", ENTRY_CASES, ids=[c[0] for c in ENTRY_CASES])
def test_split_master_entry(entry, host, port):
    assert ha_endpoints.split_master_entry(entry) == (host, port)


@pytest.mark.parametrize("entry,host,port", ENTRY_CASES, ids=[c[0] for c in ENTRY_CASES])
def test_single_entry_endpoint(entry, host, port):
    (endpoint,) = endpoints(entry)
    assert endpoint == MasterEndpoint(
        master=entry.strip(),
        host=host,
        ret_port=port or 4506,
        publish_port=4505,
        explicit_port=port is not None,
    )


# entry, text the error must contain besides the entry itself
BAD_ENTRIES = [
    ("", "empty"),
    ("   ", "empty"),
    ("\t\n", "empty"),
    ("a:b", "malformed"),
    ("host:", "malformed"),
    (":4506", "no host"),
    ("a:0", "out of range"),
    ("a:65536", "out of range"),
    ("a:b:c", "malformed"),
    ("bad host", "malformed"),
    ("[::1]", "malformed"),
    ("[::1]:", "malformed"),
    ("[::1]:45x", "malformed"),
    ("[not-v6]:4506", "malformed"),
]


@pytest.mark.parametrize("entry,why", BAD_ENTRIES, ids=[repr(c[0]) for c in BAD_ENTRIES])
def test_bad_entry(entry, why):
    with pytest.raises(SaltInvocationError) as err:
        endpoints(entry)
    assert repr(entry) in str(err.value)
    assert why in str(err.value)


@pytest.mark.parametrize("entry", [None, 4506, 1.5, True, {"m1": 1}, b"m1"], ids=repr)
def test_non_string_entry_in_list(entry):
    with pytest.raises(SaltInvocationError, match="is not a string") as err:
        endpoints(["m1", entry])
    assert repr(entry) in str(err.value)


@pytest.mark.parametrize("option", [None, 4506, 1.5, True, {"m1": None}], ids=repr)
def test_master_option_of_wrong_type(option):
    with pytest.raises(SaltInvocationError, match="neither a string nor a list") as err:
        endpoints(option)
    assert repr(option) in str(err.value)


@pytest.mark.parametrize("option", [[], ()], ids=["list", "tuple"])
def test_empty_master_list(option):
    with pytest.raises(SaltInvocationError, match="master list is empty"):
        endpoints(option)


@pytest.mark.parametrize("entry", ["[::1]x", "[::1]5"])
def test_junk_after_bracketed_v6_is_rejected(entry):
    with pytest.raises(SaltInvocationError) as err:
        endpoints(entry)
    assert repr(entry) in str(err.value)


# master list, expected (ret_port, explicit_port) per entry
INHERIT_CASES = [
    (["m1", "m2"], [(4506, False), (4506, False)]),
    (["m1:4510", "m2"], [(4510, True), (4510, False)]),
    (["m1", "m2:4510", "m3"], [(4506, False), (4510, True), (4510, False)]),
    (["m1:4510", "m2:4520", "m3", "m4:4530"], [(4510, True), (4520, True), (4520, False), (4530, True)]),
    (("[::1]:4510", "::2"), [(4510, True), (4510, False)]),
]


@pytest.mark.parametrize("master,ports", INHERIT_CASES, ids=[" ".join(c[0]) for c in INHERIT_CASES])
def test_portless_entry_inherits_previous_port(master, ports):
    found = endpoints(master)
    assert [(e.ret_port, e.explicit_port) for e in found] == ports
    assert [e.master for e in found] == list(master)


def test_master_and_publish_port_options():
    found = endpoints(["m1", "m2:4600"], master_port="4516", publish_port=4515)
    assert [(e.ret_port, e.publish_port) for e in found] == [(4516, 4515), (4600, 4515)]


@pytest.mark.parametrize(
    "option,value",
    [
        ("master_port", "abc"),
        ("master_port", 65536),
        ("master_port", -1),
        ("master_port", "4506.0"),
        ("master_port", 4506.5),
        ("master_port", True),
        ("master_port", [4506]),
        ("publish_port", "abc"),
        ("publish_port", 70000),
        ("publish_port", 4505.0),
        ("publish_port", True),
    ],
    ids=repr,
)
def test_bad_port_option(option, value):
    with pytest.raises(SaltInvocationError) as err:
        endpoints("m1", **{option: value})
    assert option in str(err.value)
    assert repr(value) in str(err.value)


@pytest.mark.parametrize(
    "option,value",
    [("master_port", 0), ("master_port", False), ("publish_port", 0), ("publish_port", "")],
    ids=repr,
)
def test_falsy_bad_port_option_is_rejected(option, value):
    with pytest.raises(SaltInvocationError) as err:
        endpoints("m1", **{option: value})
    assert option in str(err.value)


@pytest.mark.parametrize(
    "opts,expected",
    [
        ({"master": "m1"}, "m1"),
        ({"master": ["m1", "m2"]}, ["m1", "m2"]),
        # salt-call --local / a config read from disk: master_list is not the running one's
        ({"master": "m1", "master_list": ["m1", "m2"]}, "m1"),
        # a running minion: master is the one it picked, master_list the configured list
        ({"__role": "minion", "master": "m2", "master_list": ["m1", "m2"]}, ["m1", "m2"]),
        ({"__role": "minion", "master": "m2", "master_list": ("m1", "m2")}, ["m1", "m2"]),
        ({"__role": "minion", "master": "m2", "master_list": []}, "m2"),
        ({"__role": "minion", "master": "m2", "master_list": "m1"}, "m2"),
        ({"__role": "minion", "master": "m2"}, "m2"),
        ({}, None),
    ],
)
def test_configured_master_option(opts, expected):
    assert ha_endpoints.configured_master_option(opts) == expected


def test_running_minion_endpoints_come_from_master_list():
    opts = {"__role": "minion", "master": "m2", "master_list": ["m1:4510", "m2"], "master_port": 4510}
    assert [(e.master, e.ret_port) for e in ha_endpoints.master_endpoints(opts)] == [
        ("m1:4510", 4510),
        ("m2", 4510),
    ]


OPTS = {"master": ["m1:4510", "m2", "[::1]:4520"], "master_port": 4506, "publish_port": 4515}


@pytest.mark.parametrize(
    "master,expected",
    [
        ("m1:4510", MasterEndpoint("m1:4510", "m1", 4510, 4515, True)),
        # in the list: keeps the port it inherited there
        ("m2", MasterEndpoint("m2", "m2", 4510, 4515, False)),
        (" m2 ", MasterEndpoint("m2", "m2", 4510, 4515, False)),
        ("[::1]:4520", MasterEndpoint("[::1]:4520", "::1", 4520, 4515, True)),
        # not in the list: parsed on its own with the minion's ports
        ("m3", MasterEndpoint("m3", "m3", 4506, 4515, False)),
        ("m3:4600", MasterEndpoint("m3:4600", "m3", 4600, 4515, True)),
        ("m1", MasterEndpoint("m1", "m1", 4506, 4515, False)),
    ],
)
def test_endpoint_for(master, expected):
    assert ha_endpoints.endpoint_for(master, OPTS) == expected


def test_endpoint_for_with_broken_configured_list_parses_the_entry_alone():
    opts = {"master": ["m1", "bad host"], "master_port": 4516}
    assert ha_endpoints.endpoint_for("m1", opts) == MasterEndpoint("m1", "m1", 4516, 4505, False)


@pytest.mark.parametrize(
    "master,opts,match",
    [
        ("bad host", OPTS, "'bad host'"),
        ("", OPTS, "empty"),
        ("m3", {**OPTS, "master_port": "abc"}, "master_port 'abc'"),
        ("m3", {**OPTS, "publish_port": 0.5}, "publish_port 0.5"),
    ],
)
def test_endpoint_for_bad_input(master, opts, match):
    with pytest.raises(SaltInvocationError, match=match):
        ha_endpoints.endpoint_for(master, opts)


@pytest.mark.parametrize("host,is_ip", [("m1", False), ("127.10.0.1", True), ("::1", True), ("m1.example.com", False)])
def test_is_ip(host, is_ip):
    assert MasterEndpoint(master=host, host=host, ret_port=4506, publish_port=4505).is_ip is is_ip
