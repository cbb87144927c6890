"""Peer client against a fake salt-api on 127.0.0.1; config validation; password masking."""

import json
import logging

import pytest
from salt.exceptions import SaltInvocationError

import ha_peers
from tests.support import fake_http

PASSWORD = "s3cr3t-Pa55word"
TOKEN = "tok-123456789"


class FakeApi(fake_http.QuietHandler):
    """A salt-api stand-in: behaviour chosen by ``server.mode``; requests recorded."""

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.read_body() or b"null")
        self.server.requests.append({"path": self.path, "body": body, "token": self.headers.get("X-Auth-Token")})
        mode = self.server.mode
        if self.path == "/login":
            if mode == "echo-password-error":
                return self.send_body(500, f"auth backend said: bad password {body['password']}".encode())
            if body.get("password") != PASSWORD:
                return self.send_body(401, b"{}")
            return self.send_json({"return": [{"token": TOKEN, "eauth": body["eauth"]}]})
        if self.headers.get("X-Auth-Token") != TOKEN or mode == "expired-once" and self.server.expire():
            return self.send_body(401, b"{}")
        if mode == "html":
            return self.send_body(200, b"<html>not json</html>")
        if mode == "too-large":
            return self.send_body(413, b"<html>413 Request Entity Too Large</html>", "text/html")
        low = body[0]
        if low["client"] == "wheel":
            return self.send_json({"return": [{"tag": "salt/wheel/1", "data": {"return": {"fun": low["fun"]}}}]})
        return self.send_json({"return": [{"fun": low["fun"], "kwargs": {k: v for k, v in low.items() if k not in ("client", "fun")}}]})



@pytest.fixture
def fake_api():
    with fake_http.serving(FakeApi) as server:
        server.requests, server.mode = [], "ok"
        expired = []
        server.expire = lambda: not expired and not expired.append(True)
        yield server


def peer(server, **changes):
    entry = {
        "url": f"{fake_http.url_of(server)}/",
        "eauth": "sharedsecret",
        "username": "ha-sync",
        "password": PASSWORD,
        "timeout": 2,
        **changes,
    }
    return ha_peers.peer_config("peer1", entry)


def test_login_once_then_runner_and_wheel_with_the_token(fake_api):
    with ha_peers.PeerClient(peer(fake_api)) as client:
        assert client.runner("ha.local_inventory", keys=True) == {"fun": "ha.local_inventory", "kwargs": {"keys": True}}
        assert client.wheel("key.list_all") == {"fun": "key.list_all"}
    paths = [request["path"] for request in fake_api.requests]
    assert paths == ["/login", "/", "/"]
    assert fake_api.requests[0]["body"] == {"username": "ha-sync", "password": PASSWORD, "eauth": "sharedsecret"}
    assert all(request["token"] == TOKEN for request in fake_api.requests[1:])


def test_expired_token_signs_in_again_once(fake_api):
    fake_api.mode = "expired-once"
    with ha_peers.PeerClient(peer(fake_api)) as client:
        assert client.runner("ha.local_inventory")["fun"] == "ha.local_inventory"
    assert [request["path"] for request in fake_api.requests] == ["/login", "/", "/login", "/"]


def test_wrong_password_is_refused_without_quoting_it(fake_api):
    with pytest.raises(ha_peers.PeerError, match="login refused") as err:
        ha_peers.PeerClient(peer(fake_api, password="wrong-password")).login()
    assert "wrong-password" not in str(err.value)


def test_password_echoed_by_the_peer_is_masked_everywhere(fake_api, caplog):
    fake_api.mode = "echo-password-error"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ha_peers.PeerError) as err:
        ha_peers.PeerClient(peer(fake_api)).login()
    assert PASSWORD not in str(err.value) and ha_peers.MASK in str(err.value)
    assert PASSWORD not in str(err.value.__cause__)
    assert PASSWORD not in caplog.text
    assert PASSWORD not in repr(peer(fake_api)) and PASSWORD not in str(peer(fake_api).public())


def test_garbage_answer_is_an_error(fake_api):
    fake_api.mode = "html"
    with pytest.raises(ha_peers.PeerError, match="not JSON"):
        ha_peers.PeerClient(peer(fake_api)).runner("ha.local_inventory")


def test_request_too_large_is_its_own_error(fake_api):
    fake_api.mode = "too-large"
    with pytest.raises(ha_peers.PeerRequestTooLarge, match="HTTP 413") as raised:
        ha_peers.PeerClient(peer(fake_api)).runner("ha.receive_keys", items=[])
    assert isinstance(raised.value, ha_peers.PeerError) and TOKEN not in str(raised.value)


def test_unreachable_peer_is_an_error_within_the_timeout():
    entry = {"url": "http://127.0.0.1:9", "username": "u", "password": PASSWORD, "timeout": 1}
    with pytest.raises(ha_peers.PeerError, match="unreachable"):
        ha_peers.PeerClient(ha_peers.peer_config("dead", entry)).login()


def test_verify_false_is_warned_about(fake_api, caplog):
    with caplog.at_level(logging.WARNING):
        ha_peers.PeerClient(peer(fake_api, verify=False)).close()
    assert "TLS verification is off for peer peer1" in caplog.text


def test_missing_ca_bundle_is_an_error(fake_api, tmp_path):
    with pytest.raises(ha_peers.PeerError, match="does not exist"):
        ha_peers.PeerClient(peer(fake_api, verify=str(tmp_path / "nope.crt")))


def test_defaults_and_sdb_resolution():
    config = ha_peers.peer_config(
        "m2", {"url": "https://m2:8000", "username": "u", "password": "sdb://vault/pw"},
        resolve_secret=lambda uri: "resolved" if uri == "sdb://vault/pw" else uri,
    )
    assert (config.password, config.verify, config.timeout, config.eauth) == ("resolved", True, 10, "pam")
    assert ha_peers.peers_from_opts({}) == []
    assert [p.name for p in ha_peers.peers_from_opts({"ha": {"peers": {"z": {"url": "http://z", "username": "u", "password": "p"}, "a": {"url": "http://a", "username": "u", "password": "p"}}}})] == ["a", "z"]


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"url": "ftp://x"}, "not an http"),
        ({"url": None}, "not an http"),
        ({"username": ""}, "username"),
        ({"password": None}, "password"),
        ({"password": "sdb://unresolved/x"}, "did not resolve"),
        ({"verify": "false"}, "is a string"),
        ({"verify": 0}, "neither"),
        ({"timeout": 0}, "out of range"),
        ({"timeout": "soon"}, "not a number"),
        ({"timeout": True}, "not a number"),
        ({"eauth": ""}, "eauth"),
    ],
)
def test_bad_peer_config_is_refused_naming_the_value(changes, message):
    entry = {"url": "https://m2:8000", "username": "u", "password": PASSWORD, **changes}
    with pytest.raises(SaltInvocationError, match=message) as err:
        ha_peers.peer_config("m2", entry, resolve_secret=lambda uri: uri)
    assert PASSWORD not in str(err.value)


def test_mask_replaces_every_secret():
    assert ha_peers.mask("a s3 b t0k s3", ("s3", "t0k", None, "")) == "a ***** b ***** *****"
