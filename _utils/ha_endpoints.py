"""
Master endpoints as the minion sees them.

A ``master`` entry is ``host``, ``host:port``, ``[v6]:port`` or a bare ``v6``
address, parsed exactly like the minion does it (``salt.utils.network.parse_host_port``
via ``salt.minion.prep_ip_port``). The ret port of a portless entry is the minion's
``master_port``; like the minion, which overwrites ``master_port`` with each
``host:port`` it evaluates, a portless entry that follows a ``host:port`` one
inherits that port. The publish port is the minion's ``publish_port`` for every
master: Salt has a single one.
"""

import dataclasses
import ipaddress

import salt.utils.network
from salt.exceptions import SaltInvocationError

import ha_validate

DEFAULT_RET_PORT = 4506
DEFAULT_PUBLISH_PORT = 4505


@dataclasses.dataclass(frozen=True)
class MasterEndpoint:
    """One configured master: the entry as written and where the minion talks to it."""

    master: str
    host: str
    ret_port: int
    publish_port: int
    explicit_port: bool = False

    @property
    def is_ip(self):
        """True when ``host`` is an IP address literal, not a name to resolve."""
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


def option_or_default(opts, option, default):
    """``opts[option]``, or ``default`` only when it is unset (0 or "" stay, to be rejected)."""
    value = opts.get(option)
    return default if value is None else value


def split_master_entry(entry):
    """
    Split one ``master`` entry into ``(host, port or None)`` as the minion does.

    Raises ``SaltInvocationError`` naming the entry when it is empty or malformed.
    """
    if not isinstance(entry, str):
        raise SaltInvocationError(f"master entry {entry!r} is not a string")
    text = entry.strip()
    if not text:
        raise SaltInvocationError(f"master entry {entry!r} is empty")
    check_brackets(entry, text)
    try:
        host, port = salt.utils.network.parse_host_port(text)
    except (ValueError, IndexError) as err:
        raise SaltInvocationError(f"master entry {entry!r} is malformed: {err}") from err
    if not host:
        raise SaltInvocationError(f"master entry {entry!r} has no host")
    if port is not None:
        port = ha_validate.validate_port(port, f"port of master entry {entry!r}:")
    return str(host), port


def check_brackets(entry, text):
    """
    ``[v6]`` must be followed by ``:port``. Salt's parser drops one stray character
    after ``]`` (``[::1]x``) and fails with an IndexError on ``[::1]`` alone.
    """
    if not text.startswith("["):
        return
    rest = text.partition("]")[2]
    if "]" not in text or not rest.startswith(":") or len(rest) < 2:
        raise SaltInvocationError(
            f"master entry {entry!r} is malformed: write [v6-address]:port or the bare v6 address"
        )


def master_entries(master_option):
    """The ``master`` option as a list of entries (a string is one entry)."""
    if isinstance(master_option, str):
        return [master_option]
    if isinstance(master_option, (list, tuple)):
        if not master_option:
            raise SaltInvocationError("master list is empty")
        return list(master_option)
    raise SaltInvocationError(
        f"master option {master_option!r} is neither a string nor a list of strings"
    )


def configured_master_option(opts):
    """
    The ``master`` option as configured. Once a running minion (or a ``salt-call``
    that signed in) has picked a master, ``opts["master"]`` is that one master and
    the configured failover list lives on in ``opts["master_list"]``.
    """
    master_list = opts.get("master_list")
    if "__role" in opts and isinstance(master_list, (list, tuple)) and master_list:
        return list(master_list)
    return opts.get("master")


def master_endpoints(opts):
    """
    Parse ``opts["master"]`` into a list of :class:`MasterEndpoint`.

    ``opts`` needs ``master`` and may carry ``master_port`` and ``publish_port``
    (and, for a running minion, ``master_list``).
    """
    ret_port = ha_validate.validate_port(option_or_default(opts, "master_port", DEFAULT_RET_PORT), "master_port")
    publish_port = ha_validate.validate_port(
        option_or_default(opts, "publish_port", DEFAULT_PUBLISH_PORT), "publish_port"
    )
    endpoints = []
    for entry in master_entries(configured_master_option(opts)):
        host, port = split_master_entry(entry)
        if port is not None:
            ret_port = port  # the minion overwrites master_port, later entries inherit it
        endpoints.append(
            MasterEndpoint(
                master=entry.strip(),
                host=host,
                ret_port=ret_port,
                publish_port=publish_port,
                explicit_port=port is not None,
            )
        )
    return endpoints


def endpoint_for(master, opts):
    """
    The endpoint of one ``master`` entry, given the minion's options for the ports.

    An entry that is in the configured list keeps the port it has there (it may
    have inherited one); any other entry is parsed on its own.
    """
    try:
        configured = master_endpoints(opts)
    except SaltInvocationError:
        configured = []
    for endpoint in configured:
        if endpoint.master == str(master).strip():
            return endpoint
    return master_endpoints(
        {
            "master": master,
            "master_port": opts.get("master_port"),
            "publish_port": opts.get("publish_port"),
        }
    )[0]
