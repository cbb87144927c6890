"""Unit tests for the network-namespace lab's plumbing that needs no root: reasons to skip, recipe templating."""

import ipaddress

import pytest

from tests.support import frontdoor as fdl
from tests.support import netns_lab as nl


def test_a_missing_tool_is_named_with_its_debian_package(monkeypatch):
    monkeypatch.setattr(nl.os, "geteuid", lambda: 0)
    monkeypatch.setattr(nl, "which", lambda tool: None if tool == "keepalived" else f"/usr/sbin/{tool}")
    with pytest.raises(nl.NetnsUnavailable, match=r"missing keepalived: install the Debian package\(s\) keepalived"):
        nl.require(("ip", "keepalived"))


def test_not_root_is_a_reason(monkeypatch):
    monkeypatch.setattr(nl.os, "geteuid", lambda: 1000)
    with pytest.raises(nl.NetnsUnavailable, match="needs root.*uid 1000"):
        nl.require()


def test_each_lab_gets_a_private_subnet_and_a_unique_prefix(tmp_path):
    subnet = nl.random_subnet()
    assert subnet.prefixlen == 24 and subnet.subnet_of(ipaddress.ip_network("10.0.0.0/8"))
    first, second = nl.NetnsLab(tmp_path), nl.NetnsLab(tmp_path)
    assert first.prefix != second.prefix
    assert first.address(10) == str(first.subnet.network_address + 10)


def test_the_recipes_are_templated_or_the_test_fails_loudly(tmp_path):
    recipe = tmp_path / "recipe.conf"
    recipe.write_text("virtual_ipaddress { 192.0.2.100/24 dev eth0 }\n")
    assert fdl.template(recipe, {fdl.EXAMPLE_VIP: "10.1.2.100/24"}) == "virtual_ipaddress { 10.1.2.100/24 dev eth0 }\n"
    with pytest.raises(AssertionError, match="not found"):
        fdl.template(recipe, {"priority 150": "priority 100"})


@pytest.mark.parametrize("path", [fdl.KEEPALIVED_CONF, fdl.HAPROXY_CFG])
def test_the_example_recipes_check_the_ha_health_endpoint(path):
    text = path.read_text()
    assert "4510" in text and "/health" in text
