"""
Values from peers, files and configs shown safely in log lines, findings, comments
and errors: escaped, so that a newline or a bidi override in a value cannot forge a
second log line or reorder what an operator reads.
"""

import traceback

SHOWN_LIMIT = 80


def printable(text):
    """
    ``str(text)`` with every non-printable character escaped as ``repr`` does (a
    newline becomes ``\\n``); printable text unchanged.
    """
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def shown(value, limit=SHOWN_LIMIT):
    """``value`` escaped (``repr``) and shortened to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def describe_error(err):
    """``TypeName: message`` of an exception, the message made :func:`printable`."""
    message = printable(err)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def log_fault(logger, subject, err):
    """
    Log an unexpected exception: a warning ``salt-ha: <subject> failed: <TypeName:
    message>`` and, at debug, its traceback, every line of the exception's text
    made :func:`printable` (``subject`` shows its values with ``repr``). Returns
    ``TypeName: message`` for the caller's report.
    """
    fault = describe_error(err)
    logger.warning("salt-ha: %s failed: %s", subject, fault)
    frames = "".join(traceback.format_tb(err.__traceback__))
    logger.debug("salt-ha: traceback of that failure (most recent call last):\n%s%s", frames, fault)
    return fault
