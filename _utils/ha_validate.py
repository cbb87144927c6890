"""
Validators for the numbers users write: ports, timeouts, intervals, flags. Each
returns the value in its canonical type or raises ``SaltInvocationError`` naming
what was checked and the bad value (escaped), so every caller words errors alike.
"""

from salt.exceptions import SaltInvocationError

MAX_TIMEOUT = 300
MAX_INTERVAL = 86400


def _number(value, convert, what, kind):
    """``convert(value)``, refusing booleans and what does not convert, as ``<what> <value> is not <kind>``."""
    if isinstance(value, bool):
        raise SaltInvocationError(f"{what} {value!r} is not {kind}")
    try:
        return convert(value)
    except (TypeError, ValueError) as err:
        raise SaltInvocationError(f"{what} {value!r} is not {kind}") from err


def validate_port(value, what):
    """``value`` (an int or a string of digits) as a TCP port number 1-65535."""
    port = _number(value, int, what, "a port number")
    if str(port) != str(value).strip() and not isinstance(value, int):
        raise SaltInvocationError(f"{what} {value!r} is not a port number")
    if not 1 <= port <= 65535:
        raise SaltInvocationError(f"{what} {value!r} is out of range (1-65535)")
    return port


def validate_timeout(timeout, what="timeout", maximum=MAX_TIMEOUT):
    """``timeout`` as a float of seconds in (0, maximum]."""
    value = _number(timeout, float, what, "a number of seconds")
    if not 0 < value <= maximum:
        raise SaltInvocationError(f"{what} {timeout!r} is out of range (0-{maximum:g}]")
    return value


def validate_seconds(value, what, minimum):
    """A whole number of seconds in [minimum, MAX_INTERVAL] (an int written unquoted)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise SaltInvocationError(f"{what} {value!r} is not a whole number of seconds (write it unquoted)")
    if value < minimum or value > MAX_INTERVAL:
        raise SaltInvocationError(f"{what} {value!r} is out of range ({minimum}-{MAX_INTERVAL} seconds)")
    return value


def validate_flag(value, what):
    """``value`` when it is True or False."""
    if not isinstance(value, bool):
        raise SaltInvocationError(f"{what} {value!r} is not True or False")
    return value
