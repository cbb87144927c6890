"""
Plans for master pubkey signing (ha_state): ``ha.master_signing``'s signing key pair and
master.d drop-in, and ``ha.minion_failover``'s ``master_sign.pub`` and
``verify_master_pubkey_sign``; real files in tmp_path.
"""

import os
import stat

import pytest
import yaml
from salt.exceptions import SaltInvocationError

import ha_keys
import ha_state
from tests.support import lab as lablib
from tests.unit.test_state_plans import EXAMPLES, render_example_minion_sls

MASTERS = ["salt1.example.com", "salt2.example.com"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    root = tmp_path_factory.mktemp("signing-keys")
    return {
        name: tuple(path.read_text() for path in lablib.make_keypair(root / name, "master_sign"))
        for name in ("one", "two")
    }


@pytest.fixture
def etc(tmp_path):
    """A salt config dir: minion and master files, minion.d, master.d, both pki dirs."""
    folder = tmp_path / "etc"
    for sub in ("minion.d", "master.d", "pki/master", "pki/minion"):
        (folder / sub).mkdir(parents=True)
    (folder / "minion").write_text("id: m1\n")
    (folder / "master").write_text("interface: 127.0.0.1\n")
    return folder


def plan_signing(etc, pairs, name="one", **kwargs):
    pem, pub = pairs[name]
    return ha_state.plan_master_signing(
        str(etc / "pki/master"), pem, kwargs.pop("public_key", pub), conf_file=str(etc / "minion"), **kwargs
    )


def test_master_signing_plans_the_pair_and_the_dropin_then_nothing_once_written(etc, pairs):
    plan = plan_signing(etc, pairs)
    fingerprint = ha_keys.fingerprint(pairs["one"][1])
    pki = etc / "pki/master"
    assert plan.changes == {
        "master_sign.pem": {"old": None, "new": fingerprint, "path": str(pki / "master_sign.pem")},
        "master_sign.pub": {"old": None, "new": fingerprint, "path": str(pki / "master_sign.pub")},
        "master_sign_pubkey": {"old": None, "new": True},
    }
    assert [(os.path.basename(f.path), oct(f.mode)) for f in plan.files] == [
        ("master_sign.pem", "0o400"), ("master_sign.pub", "0o644"), ("ha-signing.conf", "0o644"),
    ]
    assert "PRIVATE" not in repr(plan.changes)
    ha_state.write_plan(plan)
    assert yaml.safe_load((etc / "master.d/ha-signing.conf").read_text()) == {"master_sign_pubkey": True}
    assert stat.S_IMODE((pki / "master_sign.pem").stat().st_mode) == 0o400
    assert ha_keys.is_pair((pki / "master_sign.pem").read_text(), (pki / "master_sign.pub").read_text())
    again = plan_signing(etc, pairs)
    assert (again.changed, again.changes) == (False, {})
    other = plan_signing(etc, pairs, "two")
    assert set(other.changes) == {"master_sign.pem", "master_sign.pub"}
    assert other.changes["master_sign.pub"]["old"] == fingerprint


@pytest.mark.parametrize(
    "where,content,message",
    [
        ("master", "master_sign_pubkey: False\n", "sets master_sign_pubkey: False: remove it there"),
        ("master.d/zz.conf", "master_sign_pubkey: 'yes'\n", "sets master_sign_pubkey: 'yes'"),
        ("master.d/aa.conf", "master_sign_key_name: other\n", "would sign with other.pem, not master_sign.pem"),
        ("master", "master_use_pubkey_signature: True\n", "precomputed signature file"),
    ],
)
def test_master_signing_refuses_what_another_master_file_contradicts(etc, pairs, where, content, message):
    (etc / where).write_text(content)
    with pytest.raises(SaltInvocationError, match="remove it there") as err:
        plan_signing(etc, pairs)
    assert message in str(err.value) and str(etc / where) in str(err.value)


def test_master_signing_notes_the_same_option_elsewhere_and_follows_include(etc, pairs):
    (etc / "master.d/ha.conf").write_text("master_sign_pubkey: True\n")
    plan = plan_signing(etc, pairs)
    assert plan.notes == (f"{str(etc / 'master.d/ha.conf')!r} sets master_sign_pubkey: True too.",)
    (etc / "extra.conf").write_text("master_sign_pubkey: False\n")
    (etc / "master").write_text("include: extra.conf\n")
    with pytest.raises(SaltInvocationError, match="extra.conf"):
        plan_signing(etc, pairs)


def test_master_signing_refuses_a_mismatched_pair_and_bad_names(etc, pairs):
    with pytest.raises(SaltInvocationError, match="does not belong to private_key"):
        plan_signing(etc, pairs, public_key=pairs["two"][1])
    with pytest.raises(SaltInvocationError, match=r"does not end in \.conf"):
        plan_signing(etc, pairs, config="signing.yaml")
    with pytest.raises(SaltInvocationError, match="holds minion.pem"):
        (etc / "pki/minion/minion.pem").write_text("x")
        ha_state.plan_master_signing(str(etc / "pki/minion"), pairs["one"][0], conf_file=str(etc / "minion"))


# --- the minion's side ----------------------------------------------------------------


@pytest.mark.parametrize(
    "verify,pub,message",
    [
        (True, None, "master_sign_pub is missing"),
        (False, "pub", "verify_master_pubkey_sign is False"),
        ("yes", "pub", "verify_master_pubkey_sign 'yes' is not"),
        (True, "private", "PRIVATE KEY block; refused"),
        (True, "twice", "exactly one PEM block, not 2"),
        (True, "not a key", "master_sign_pub: public key is not a PEM public key"),
    ],
)
def test_signing_options_refuse_bad_input_naming_it(pairs, verify, pub, message):
    pem, public = pairs["one"]
    value = {"pub": public, "private": pem, "twice": public + public}.get(pub, pub)
    with pytest.raises(SaltInvocationError) as err:
        ha_state.signing_options(verify, value)
    assert message in str(err.value)
    assert pem.splitlines()[1] not in str(err.value)


def test_signing_options(pairs):
    assert ha_state.signing_options(False, None) is None
    assert ha_state.signing_options(True, "\r\n" + pairs["one"][1].replace("\n", "\r\n")) == pairs["one"][1]


def plan_minion(etc, pub, **options):
    opts = {"pki_dir": str(etc / "pki/minion"), **options}
    return ha_state.plan_minion_failover(
        "ha-failover.conf", str(etc / "minion"), ha_state.failover_options(MASTERS), opts=opts, signing_pub=pub,
        port_context=options.get("port_context"),
    )


def test_minion_failover_with_signing_plans_the_option_and_the_key_together(etc, pairs):
    pub = pairs["one"][1]
    plan = plan_minion(etc, pub)
    path = str(etc / "pki/minion/master_sign.pub")
    assert plan.changes["verify_master_pubkey_sign"] == {"old": None, "new": True}
    assert plan.changes["master_sign.pub"] == {"old": None, "new": ha_keys.fingerprint(pub), "path": path}
    assert [os.path.basename(f.path) for f in plan.files] == ["ha-failover.conf", "master_sign.pub"]
    ha_state.write_plan(plan)
    assert yaml.safe_load((etc / "minion.d/ha-failover.conf").read_text())["verify_master_pubkey_sign"] is True
    assert (etc / "pki/minion/master_sign.pub").read_text() == pub
    assert plan_minion(etc, pub).changed is False
    rotated = plan_minion(etc, pairs["two"][1])
    assert set(rotated.changes) == {"master_sign.pub"}
    assert rotated.changes["master_sign.pub"]["old"] == ha_keys.fingerprint(pub)
    unsigned = plan_minion(etc, None)
    assert unsigned.changes["verify_master_pubkey_sign"] == {"old": True, "new": None}
    assert [os.path.basename(f.path) for f in unsigned.files] == ["ha-failover.conf"]  # the key stays


def test_minion_failover_with_signing_warns_about_master_finger(etc, pairs):
    plan = plan_minion(etc, pairs["one"][1], port_context={"master_finger": "ab:cd"})
    assert any("HA604" in note and "code 42" in note for note in plan.notes), plan.notes
    assert not any("HA604" in note for note in plan_minion(etc, None, port_context={"master_finger": "ab"}).notes)


def test_minion_failover_signing_refused_for_another_key_name_or_no_pki_dir(etc, pairs):
    with pytest.raises(SaltInvocationError, match="would read other.pub"):
        plan_minion(etc, pairs["one"][1], master_sign_key_name="other")
    with pytest.raises(SaltInvocationError, match="pki_dir .* is not an existing directory"):
        ha_state.plan_minion_failover(
            "ha-failover.conf", str(etc / "minion"), ha_state.failover_options(MASTERS),
            opts={"pki_dir": str(etc / "nowhere")}, signing_pub=pairs["one"][1],
        )


def test_the_example_minion_state_passes_signing_from_pillar(pairs):
    pillar = yaml.safe_load((EXAMPLES / "pillar" / "ha.sls").read_text())
    assert "verify_master_pubkey_sign" not in render_example_minion_sls(pillar)  # the pillar default: False
    pillar["ha"]["minion"].update(verify_master_pubkey_sign=True, master_sign_pub=pairs["one"][1])
    arguments = render_example_minion_sls(pillar)
    assert arguments["verify_master_pubkey_sign"] is True
    assert ha_state.signing_options(True, arguments["master_sign_pub"]) == pairs["one"][1]
