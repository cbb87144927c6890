"""Values from peers, files and configs shown escaped (ha_text)."""

import logging

import pytest

import ha_text


@pytest.mark.parametrize(
    "text,shown",
    [
        ("plain text", "plain text"),
        ("two\nlines", "two\\nlines"),
        ("cr\rlf\r\n", "cr\\rlf\\r\\n"),
        ("tab\there", "tab\\there"),
        ("bell\x07 esc\x1b[31m", "bell\\x07 esc\\x1b[31m"),
        ("nel\x85 ls\u2028", "nel\\x85 ls\\u2028"),
        ("quotes ' \" and \\ stay", "quotes ' \" and \\ stay"),
        ("café", "café"),
        (ValueError("in\nan error"), "in\\nan error"),
        (None, "None"),
    ],
    ids=repr,
)
def test_printable(text, shown):
    assert ha_text.printable(text) == shown
    assert ha_text.printable(shown) == shown  # printable text stays as it is


@pytest.mark.parametrize(
    "err,text",
    [
        (ValueError("bad\nvalue"), "ValueError: bad\\nvalue"),
        (KeyError("master"), "KeyError: 'master'"),
        (RuntimeError(), "RuntimeError"),
        (ConnectionRefusedError(111, "Connection refused"), "ConnectionRefusedError: [Errno 111] Connection refused"),
    ],
    ids=repr,
)
def test_describe_error(err, text):
    assert ha_text.describe_error(err) == text


def test_log_fault_escapes_the_message_in_the_warning_and_the_traceback(caplog):
    logger = logging.getLogger("tests.log_fault")
    try:
        raise ValueError("x\nforged: a line of its own")
    except ValueError as err:
        caught = err
    with caplog.at_level("DEBUG", logger="tests.log_fault"):
        fault = ha_text.log_fault(logger, "the probe of master 'm1'", caught)
    assert fault == "ValueError: x\\nforged: a line of its own"
    warning, debug = caplog.records
    assert (warning.levelname, debug.levelname) == ("WARNING", "DEBUG")
    assert warning.getMessage() == f"salt-ha: the probe of master 'm1' failed: {fault}"
    assert "test_log_fault_escapes_the_message" in debug.getMessage()  # the frames are there
    assert debug.getMessage().endswith(fault)
    assert not any(line.startswith("forged") for line in debug.getMessage().splitlines())


@pytest.mark.parametrize(
    "value, shown",
    [("web1", "'web1'"), ("a\nb", "'a\\nb'"), (None, "None"), ("x" * 100, "'" + "x" * 76 + "...")],
    ids=["plain", "newline", "none", "long"],
)
def test_shown_is_repr_shortened(value, shown):
    assert ha_text.shown(value) == shown
