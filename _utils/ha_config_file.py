"""
One Salt config file read as ``salt.config._read_conf_file`` reads it, without its
side effects (Salt renames a broken ``*_schedule.conf``), and with what is wrong
with it said in one escaped line.

The ``ha`` states read their drop-ins with :func:`parse_config`; ``ha.lint`` reads a
config file with :func:`load_config_file`, and :mod:`ha_minion_config` checks every
file a minion reads with it before Salt merges them.
"""

import salt.utils.files
import salt.utils.yaml
from salt.exceptions import CommandExecutionError

# ConfigFileError.kind values: why a file cannot be used.
NOT_A_PATH = "not a path"
MISSING = "missing"
DIRECTORY = "directory"
NOT_UTF8 = "not UTF-8"
UNREADABLE = "unreadable"
INVALID_YAML = "invalid YAML"
NOT_A_MAPPING = "not a mapping"

# Kinds that salt.config._read_conf_file turns into a SaltConfigurationError (which
# include_config can skip); the other kinds raise OSError/UnicodeDecodeError out of it.
SALT_CONFIGURATION_ERRORS = (INVALID_YAML, NOT_A_MAPPING)


class ConfigFileError(CommandExecutionError):
    """
    A config file Salt cannot use, or that cannot be read.

    ``path`` and ``problem`` (what is wrong, file-sourced parts escaped); ``kind``
    (one of this module's kind constants); ``fatal``: Salt refuses to start with it
    as its config file or a ``default_include``/``include`` file (a read failure of
    this process, or a broken ``_schedule.conf`` that Salt renames and starts
    without, is not fatal).
    """

    def __init__(self, path, problem, kind, fatal=True):
        super().__init__(f"config file {path!r} {problem}")
        self.path = path
        self.problem = problem
        self.kind = kind
        self.fatal = fatal


def is_schedule_file(path):
    """Salt renames a ``*_schedule.conf`` it cannot parse to ``*YAMLError`` and starts without it."""
    return str(path).endswith("_schedule.conf")


def yaml_problem(err):
    """A YAML error in one line: what is wrong and where (1-based line and column)."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is None or not problem:
        return " ".join(str(err).split())
    context = f"{err.context}: " if getattr(err, "context", None) else ""
    return f"{context}{problem} (line {mark.line + 1}, column {mark.column + 1})"


def parse_config(data, path):
    """
    The options of a config file's ``data`` (str or bytes) read as Salt reads it
    (``salt.config._read_conf_file``): an empty or false document is ``{}``; invalid
    YAML or a document that is not a mapping raises :class:`ConfigFileError`
    naming ``path`` and the problem (escaped).
    """
    try:
        loaded = salt.utils.yaml.safe_load(data)
    except salt.utils.yaml.YAMLError as err:
        raise ConfigFileError(
            path,
            f"is not valid YAML: {yaml_problem(err)!r}",
            INVALID_YAML,
            fatal=not is_schedule_file(path),
        ) from err
    if not loaded:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigFileError(
            path, f"holds a {type(loaded).__name__}, not a mapping of options", NOT_A_MAPPING
        )
    return loaded


def load_config_file(path):
    """
    Read a minion YAML config file: ``{}`` for an empty file, the mapping otherwise.

    Raises :class:`ConfigFileError` (a ``CommandExecutionError``) naming ``path`` when
    it is missing, unreadable, not UTF-8, not YAML, or not a mapping.
    """
    if not isinstance(path, str) or not path:
        raise ConfigFileError(path, "is not a file path", NOT_A_PATH, fatal=False)
    try:
        with salt.utils.files.fopen(path, "r") as handle:
            text = handle.read()
    except FileNotFoundError as err:
        raise ConfigFileError(path, "does not exist", MISSING, fatal=False) from err
    except IsADirectoryError as err:
        raise ConfigFileError(path, "is a directory", DIRECTORY) from err
    except UnicodeDecodeError as err:
        raise ConfigFileError(
            path, f"cannot be read: it is not UTF-8 text ({err.reason})", NOT_UTF8
        ) from err
    except OSError as err:
        raise ConfigFileError(
            path, f"cannot be read by this process: {err.strerror or err}", UNREADABLE, fatal=False
        ) from err
    return parse_config(text, path)
