"""
Peer masters reached through their salt-api (rest_cherrypy), over ``requests``.

``ha:peers`` in the master config names the other masters::

    ha:
      peers:
        master2:
          url: https://master2.example.com:8000
          eauth: pam
          username: ha-sync
          password: ...          # or sdb://profile/key, resolved by the caller
          verify: True           # or a CA bundle path; False only when written so
          timeout: 10

One :class:`PeerClient` per peer keeps one ``requests.Session`` (connection reuse),
logs in once (``POST /login`` -> token, sent as ``X-Auth-Token``) and calls the
peer's runner or wheel client. The password goes only into the login request to
the peer: it is kept out of ``repr``, and every message this module logs or raises
is passed through :func:`mask` (password and token replaced by ``*****``).
"""

import collections.abc
import dataclasses
import logging
import os
import urllib.parse

import requests
from salt.exceptions import CommandExecutionError, SaltInvocationError

import ha_validate

log = logging.getLogger(__name__)

MASK = "*****"
DEFAULT_TIMEOUT = 10
DEFAULT_EAUTH = "pam"
# Longest excerpt of a peer's answer quoted in an error.
ANSWER_EXCERPT = 200


class PeerError(CommandExecutionError):
    """A peer could not be reached, refused us, or answered something unusable."""


class PeerRequestTooLarge(PeerError):
    """The peer, or a proxy in front of it, refused a request body as too large (HTTP 413)."""


@dataclasses.dataclass(frozen=True)
class PeerConfig:
    """One peer master's salt-api, as configured (the password never shows in repr)."""

    name: str
    url: str
    username: str
    password: str = dataclasses.field(repr=False)
    eauth: str = DEFAULT_EAUTH
    verify: object = True
    timeout: float = DEFAULT_TIMEOUT

    def public(self):
        """The configuration without secrets, for returns."""
        return {
            "name": self.name,
            "url": self.url,
            "eauth": self.eauth,
            "username": self.username,
            "verify": self.verify,
            "timeout": self.timeout,
            "password": MASK,
        }


def mask(text, secrets):
    """``text`` with every non-empty secret in ``secrets`` replaced by ``*****``."""
    text = str(text)
    for secret in secrets:
        if secret:
            text = text.replace(str(secret), MASK)
    return text


def _validate_verify(name, value):
    if value is True or value is False:
        return value
    if isinstance(value, str) and value.strip():
        if value.strip().lower() in ("false", "no", "off", "0", "true", "yes", "on", "1"):
            raise SaltInvocationError(
                f"ha:peers:{name}:verify {value!r} is a string: write True, False or a CA bundle path"
            )
        return value
    raise SaltInvocationError(
        f"ha:peers:{name}:verify {value!r} is neither True, False nor a CA bundle path"
    )


def peer_config(name, entry, resolve_secret=None):
    """
    One validated :class:`PeerConfig` from its ``ha:peers`` entry.

    ``resolve_secret`` turns an ``sdb://`` password into the secret (the runner
    passes ``salt.utils.sdb.sdb_get``); errors never quote the password.
    """
    if not isinstance(entry, collections.abc.Mapping):
        raise SaltInvocationError(f"ha:peers:{name} is not a mapping")
    url = entry.get("url")
    parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise SaltInvocationError(f"ha:peers:{name}:url {url!r} is not an http(s) URL")
    username = entry.get("username")
    if not isinstance(username, str) or not username:
        raise SaltInvocationError(f"ha:peers:{name}:username is missing")
    password = entry.get("password")
    if resolve_secret is not None and isinstance(password, str) and password.startswith("sdb://"):
        password = resolve_secret(password)
        if not isinstance(password, str) or password.startswith("sdb://"):
            raise SaltInvocationError(f"ha:peers:{name}:password: the sdb URI did not resolve")
    if not isinstance(password, str) or not password:
        raise SaltInvocationError(f"ha:peers:{name}:password is missing or not a string")
    eauth = entry.get("eauth", DEFAULT_EAUTH)
    if not isinstance(eauth, str) or not eauth:
        raise SaltInvocationError(f"ha:peers:{name}:eauth {eauth!r} is not an eauth name")
    return PeerConfig(
        name=str(name),
        url=url.rstrip("/"),
        username=username,
        password=password,
        eauth=eauth,
        verify=_validate_verify(name, entry.get("verify", True)),
        timeout=ha_validate.validate_timeout(
            entry.get("timeout", DEFAULT_TIMEOUT), what=f"ha:peers:{name}:timeout", maximum=3600
        ),
    )


def peers_from_opts(opts, resolve_secret=None):
    """Every peer of ``opts["ha"]["peers"]``, sorted by name (an empty list when none)."""
    section = (opts.get("ha") or {}).get("peers") or {}
    if not isinstance(section, collections.abc.Mapping):
        raise SaltInvocationError("ha:peers is not a mapping of peer name to settings")
    return [peer_config(name, section[name], resolve_secret) for name in sorted(section)]


class PeerClient:
    """
    A logged-in session with one peer's salt-api. Use as a context manager.

    ``runner(fun, **kwargs)`` and ``wheel(fun, **kwargs)`` return what the peer's
    function returned; every failure raises :class:`PeerError` with a masked message.
    """

    def __init__(self, peer, session=None):
        self.peer = peer
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/json"})
        self.token = None
        if peer.verify is False:
            log.warning(
                "TLS verification is off for peer %s (%s): verify: False is set in ha:peers",
                peer.name,
                peer.url,
            )
        elif isinstance(peer.verify, str) and not os.path.exists(peer.verify):
            raise PeerError(f"peer {peer.name}: CA bundle {peer.verify!r} does not exist")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.session.close()

    def _masked(self, text):
        return mask(text, (self.peer.password, self.token))

    def _fail(self, message, err=None, kind=PeerError):
        error = kind(self._masked(f"peer {self.peer.name} ({self.peer.url}): {message}"))
        if err is not None:
            # Chain a masked copy only: the original may quote what was sent.
            raise error from PeerError(self._masked(f"{type(err).__name__}: {err}"))
        raise error

    def _post(self, path, payload, headers=None):
        url = f"{self.peer.url}{path}"
        log.debug("Peer %s: POST %s", self.peer.name, url)
        try:
            response = self.session.post(
                url,
                json=payload,
                headers=headers,
                verify=self.peer.verify,
                timeout=self.peer.timeout,
            )
        except requests.exceptions.SSLError as err:
            self._fail(f"TLS verification failed: {err}", err)
        except requests.exceptions.Timeout as err:
            self._fail(f"no answer within {self.peer.timeout:g} s", err)
        except requests.exceptions.RequestException as err:
            self._fail(f"unreachable: {err}", err)
        return response

    def _json(self, response, what):
        if response.status_code in (401, 403):
            self._fail(f"{what} refused (HTTP {response.status_code}): check eauth, username and password")
        if response.status_code == 413:
            self._fail(f"{what} refused: HTTP 413, request too large", kind=PeerRequestTooLarge)
        if response.status_code != 200:
            self._fail(f"{what} failed: HTTP {response.status_code} {response.text[:ANSWER_EXCERPT]!r}")
        try:
            data = response.json()
        except ValueError as err:
            self._fail(f"{what}: the answer is not JSON: {response.text[:ANSWER_EXCERPT]!r}", err)
        if not isinstance(data, dict) or not isinstance(data.get("return"), list) or not data["return"]:
            self._fail(f"{what}: unexpected answer {str(data)[:ANSWER_EXCERPT]!r}")
        return data["return"][0]

    def login(self):
        """``POST /login``; keeps the token for the next calls."""
        response = self._post(
            "/login",
            {"username": self.peer.username, "password": self.peer.password, "eauth": self.peer.eauth},
        )
        answer = self._json(response, "login")
        token = answer.get("token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token:
            self._fail("login: the answer holds no token")
        self.token = token
        return self

    def _call(self, low, what):
        if self.token is None:
            self.login()
        response = self._post("/", [low], headers={"X-Auth-Token": self.token})
        if response.status_code == 401:  # token expired: sign in again, once
            self.login()
            response = self._post("/", [low], headers={"X-Auth-Token": self.token})
        return self._json(response, what)

    def runner(self, fun, **kwargs):
        """Call runner function ``fun`` on the peer with keyword arguments; return its return."""
        return self._call({"client": "runner", "fun": fun, **kwargs}, f"runner {fun}")

    def wheel(self, fun, **kwargs):
        """Call wheel function ``fun`` on the peer; return the function's own return."""
        answer = self._call({"client": "wheel", "fun": fun, **kwargs}, f"wheel {fun}")
        try:
            return answer["data"]["return"]
        except (KeyError, TypeError) as err:
            self._fail(f"wheel {fun}: unexpected answer {str(answer)[:ANSWER_EXCERPT]!r}", err)
