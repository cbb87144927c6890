"""
The options an operator wrote for a minion, read the way the salt-minion daemon
reads them (``salt.config.minion_config``): its config file, then every file its
``default_include`` matches (``minion.d/*.conf`` next to it by default), then every
file its ``include`` names, each of those following its own ``include``.

Salt itself merges the files (``salt.config.include_config``: later files win, lists
of the included files are merged, nested includes followed). Before that, every file
is checked without side effects (:mod:`ha_config_file`): a file Salt cannot use would
make ``include_config`` raise, exit or rename it, so it is reported as a
:class:`ConfigFileProblem` instead and left out of the merge together with the
``default_include``/``include`` file whose include tree holds it.

Salt's merge is not one merge: ``minion_config`` takes the config file, then updates
it (``dict.update``) with the merged ``default_include`` files, then with the merged
``include`` files. Lists are merged only among the files of one of these *layers*
(:data:`LAYERS`); an option a later layer sets replaces the earlier layers' value
whole. For the options of :data:`MERGED_LISTS` (``engines``) an operator expects a
merge, so a list Salt drops that way is a :class:`ConfigFileProblem` too (effect
:data:`REPLACED`). Each file's own options are kept in :attr:`MinionConfig.sources`.
"""

import dataclasses
import glob
import logging
import os

import salt.config

import ha_config_file
import ha_text

log = logging.getLogger(__name__)

DEFAULT_INCLUDE = salt.config.DEFAULT_MINION_OPTS["default_include"]

# ConfigFileProblem.effect: what the salt-minion does with the file at start-up.
EXITS = "exits"  # it exits (or crashes) at start-up
RENAMED = "renamed"  # a broken *_schedule.conf: renamed to *YAMLError, Salt runs without it
IGNORED = "ignored"  # a broken file named by a nested include: Salt logs an error, skips it
UNREADABLE_HERE = "unreadable here"  # this process cannot read it (the daemon's user may)
BAD_VALUE = "bad value"  # include/default_include is not a path or a list of paths
NO_MATCH = "no match"  # an include entry that matches no file (Salt logs a warning)
REPLACED = "replaced"  # an engines list a later layer replaces whole (Salt never starts those engines)

# Salt's merge layers, in order (salt.config.minion_config): the config file, then the
# default_include files, then the include files. Within a layer include_config merges
# lists (salt.utils.dictupdate.update with merge_lists); between layers a plain
# dict.update replaces every option the later layer sets.
LAYERS = ("conf_file", "default_include", "include")

# List options whose entries are plugins an operator adds file by file: a later layer
# silently replacing the list drops plugins (HA411).
MERGED_LISTS = ("engines",)

# Options a salt-call process overrides from its own command line (``-t``/``--timeout``
# defaults to 60 and lands in auth_timeout); the daemon never sees those values.
SALT_CALL_CLI_OPTIONS = ("auth_timeout",)


@dataclasses.dataclass(frozen=True)
class ConfigFileProblem:
    """
    A config file the minion reads that cannot be used as it is.

    ``path``: the file; ``option``: what makes Salt read it (``conf_file``,
    ``default_include`` or ``include``), or for effect :data:`REPLACED` the option
    Salt drops from it (``engines``); ``problem``: what is wrong, escaped, in one
    line; ``effect``: what the salt-minion does about it (this module's effect
    constants); ``pattern``: the ``default_include``/``include`` entry that matched it
    (None for the config file itself); ``included_by``: the file whose ``include``
    names it when that is not the config file, else None; ``replaced_by``: for
    effect :data:`REPLACED`, the files whose value Salt keeps instead.
    """

    path: str
    option: str
    problem: str
    effect: str
    pattern: object = None
    included_by: str = None
    replaced_by: tuple = ()

    @property
    def fatal(self):
        """The salt-minion does not start while the file is there."""
        return self.effect in (EXITS, BAD_VALUE)


@dataclasses.dataclass(frozen=True)
class ConfigSource:
    """
    One file merged into the minion's options: ``path``; ``layer``: the option that
    makes Salt read it (``conf_file``, ``default_include`` or ``include``, also for
    a file named by the ``include`` of such a file); ``options``: what the file
    itself holds; ``included_by``: the file whose ``include`` names it, or None.
    """

    path: str
    layer: str
    options: dict
    included_by: str = None


@dataclasses.dataclass(frozen=True)
class MinionConfig:
    """
    ``options``: what the operator wrote, merged as Salt merges it; ``files``: the
    files merged, in Salt's order; ``problems``: :class:`ConfigFileProblem` tuple;
    ``sources``: the :class:`ConfigSource` of every file of ``files``, same order.
    """

    options: dict
    files: tuple
    problems: tuple
    sources: tuple = ()


def include_matches(value, including_file):
    """
    ``[(entry, [path, ...])]``: the files Salt reads for an ``include``/``default_include``
    ``value`` written in ``including_file``, in Salt's order (each entry ``~``-expanded,
    relative to the including file's folder, its glob matches sorted). Raises
    ``ValueError`` for a value Salt cannot use (not a path or a list of paths).
    """
    if not value:
        return []
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not all(isinstance(entry, str) for entry in entries):
        raise ValueError(f"{value!r} is not a file path or a list of file paths")
    matches = []
    for entry in entries:
        path = os.path.expanduser(entry)
        if not os.path.isabs(path):
            path = os.path.join(os.path.dirname(including_file), path)
        matches.append((entry, sorted(glob.glob(path))))
    return matches


def effect_of(err, nested):
    """What the salt-minion does with a file that raised ``err`` (a ConfigFileError)."""
    if err.kind == ha_config_file.UNREADABLE:
        return UNREADABLE_HERE
    if err.kind == ha_config_file.INVALID_YAML and ha_config_file.is_schedule_file(err.path):
        return RENAMED
    if nested and err.kind in ha_config_file.SALT_CONFIGURATION_ERRORS:
        return IGNORED  # include_config's nested call does not exit on config errors
    return EXITS


def unmatched_include(path, option, entry, pattern=None, included_by=None):
    """The problem of an ``include`` ``entry`` written in ``path`` that matches no file."""
    problem = f"has include {entry!r}, which matches no file"
    return ConfigFileProblem(path, option, problem, NO_MATCH, pattern, included_by)


def check_include_tree(path, option, pattern, included_by=None, chain=()):
    """
    ``(problems, sources)`` of ``path`` and of every file its ``include`` names,
    followed as Salt follows them (:class:`ConfigSource`, layer ``option``). ``chain``:
    the real paths of the files including ``path`` (an include cycle makes Salt
    recurse until it crashes).
    """
    try:
        options = ha_config_file.load_config_file(path)
    except ha_config_file.ConfigFileError as err:
        if err.kind == ha_config_file.MISSING:
            return [], []  # removed since the glob matched it
        log.debug("ha.lint: cannot use %r: %s", path, err.problem)
        effect = effect_of(err, nested=bool(chain))
        return [ConfigFileProblem(path, option, err.problem, effect, pattern, included_by)], []
    chain = chain + (os.path.realpath(path),)
    source = ConfigSource(path, option, options, included_by)
    try:
        matches = include_matches(options.get("include"), path)
    except ValueError as err:
        problem = ConfigFileProblem(path, option, f"has include {err}", BAD_VALUE, pattern, included_by)
        return [problem], [source]
    problems, sources = [], [source]
    for entry, found in matches:
        if not found:
            problems.append(unmatched_include(path, option, entry, pattern, included_by))
        for nested in found:
            if os.path.realpath(nested) in chain:
                problems.append(
                    ConfigFileProblem(
                        path, option,
                        f"includes {nested!r}, which includes it back: an include cycle, Salt "
                        "follows it until it crashes",
                        EXITS, pattern, included_by,
                    )
                )
                continue
            nested_problems, nested_sources = check_include_tree(nested, option, entry, path, chain)
            problems += nested_problems
            sources += nested_sources
    return problems, sources


def read_included(conf_file, option, value):
    """
    ``(options, sources, problems)`` of the files an ``option`` (``default_include``
    or ``include``) of ``conf_file`` names: every include tree checked, the usable
    ones merged by ``salt.config.include_config``.
    """
    try:
        matches = include_matches(value, conf_file)
    except ValueError as err:
        return {}, [], [ConfigFileProblem(conf_file, option, f"has {option} {err}", BAD_VALUE)]
    usable, sources, problems = [], [], []
    for entry, found in matches:
        if not found and option == "include":
            problems.append(unmatched_include(conf_file, option, entry))
        for path in found:
            tree_problems, tree_sources = check_include_tree(path, option, entry)
            problems += tree_problems
            if any(problem.effect != NO_MATCH for problem in tree_problems):
                continue  # Salt would exit, crash, rename or log an error reading this tree
            usable.append(path)
            sources += tree_sources
    if not usable:
        return {}, sources, problems
    escaped_paths = [glob.escape(path) for path in usable]  # include_config globs every entry
    try:
        options = salt.config.include_config(escaped_paths, conf_file, verbose=False)
    except (OSError, UnicodeDecodeError) as err:
        problem = f"has {option} files that changed while they were read: {str(err)!r}"
        log.debug("ha.lint: %s", problem)
        return {}, [], problems + [ConfigFileProblem(conf_file, option, problem, UNREADABLE_HERE)]
    return options, sources, problems


def read_minion_config(conf_file):
    """
    The options written for the minion whose config file is ``conf_file``, read as
    the salt-minion daemon reads them (see the module docstring): a
    :class:`MinionConfig`. A missing ``conf_file`` (Salt runs on its defaults) or a
    ``default_include`` matching nothing is no problem; every file that cannot be
    used is a :class:`ConfigFileProblem` and contributes no option, and so is every
    list of :data:`MERGED_LISTS` that a later layer replaces (:func:`replaced_lists`).
    """
    if not conf_file:
        return MinionConfig({}, (), ())
    problems, sources = [], []
    try:
        options = ha_config_file.load_config_file(conf_file)
        sources.append(ConfigSource(conf_file, "conf_file", options))
    except ha_config_file.ConfigFileError as err:
        options = {}
        if err.kind != ha_config_file.MISSING:
            log.debug("ha.lint: cannot use %r: %s", conf_file, err.problem)
            problems.append(ConfigFileProblem(conf_file, "conf_file", err.problem, effect_of(err, False)))
    merged = dict(options)
    for option, default in (("default_include", DEFAULT_INCLUDE), ("include", [])):
        included, read_sources, found = read_included(conf_file, option, options.get(option, default))
        merged.update(included)
        sources += read_sources
        problems += found
    problems += replaced_lists(sources)
    return MinionConfig(merged, tuple(source.path for source in sources), tuple(problems), tuple(sources))


# --- which file's value Salt keeps ------------------------------------------------------


def replacing_sources(sources, layer, option):
    """
    The sources of a later layer than ``layer`` that set ``option``: Salt's
    ``dict.update`` of that layer replaces the value of a file of ``layer`` whole (a
    value of None or an empty list replaces it too).
    """
    rank = LAYERS.index(layer)
    return [other for other in sources if LAYERS.index(other.layer) > rank and option in other.options]


def kept_sources(sources, option):
    """
    The sources whose ``option`` is in the merged options: those of the last layer
    that sets it (Salt merges their lists); ``[]`` when no file sets it.
    """
    setting = [source for source in sources if option in source.options]
    if not setting:
        return []
    last = max(LAYERS.index(source.layer) for source in setting)
    return [source for source in setting if LAYERS.index(source.layer) == last]


def entry_names(value):
    """The plugin names of an ``engines``-style value (list of names or one-key mappings, or a mapping)."""
    items = value.items() if isinstance(value, dict) else value if isinstance(value, list) else [value]
    names = []
    for item in items:
        if isinstance(item, tuple):
            item = item[0]
        elif isinstance(item, dict):
            item = next(iter(item), item)
        names.append(ha_text.printable(item))
    return names


def sets(files):
    """``sets`` for one file, ``set`` for several."""
    return "sets" if len(files) == 1 else "set"


def replaced_lists(sources):
    """
    A :data:`REPLACED` :class:`ConfigFileProblem` for each non-empty list of
    :data:`MERGED_LISTS` that Salt drops because a later layer sets that option.
    Not covered: a file named by a file's own ``include`` replaces that file's value too.
    """
    problems = []
    for option in MERGED_LISTS:
        for source in sources:
            replacing = replacing_sources(sources, source.layer, option) if source.options.get(option) else []
            if not replacing:
                continue
            names = ", ".join(entry_names(source.options[option]))
            others = ", ".join(repr(other.path) for other in replacing)
            layer = "the config file" if source.layer == "conf_file" else f"a {source.layer} file"
            problem = (
                f"sets {option} [{names}], which Salt ignores: {others} {sets(replacing)} {option} too, and Salt "
                f"replaces the {option} of {layer} with theirs (a plain dict update; it merges "
                f"{option} lists only between files of one layer, such as the minion.d drop-ins)"
            )
            problems.append(
                ConfigFileProblem(
                    source.path, option, problem, REPLACED,
                    replaced_by=tuple(other.path for other in replacing),
                )
            )
    return problems


# The minion options salt.config.apply_minion_config prefixes with root_dir when relative.
ROOT_DIR_RELATIVE_OPTIONS = ("pki_dir", "cachedir", "sock_dir", "extension_modules", "pidfile")


def daemon_options(running_options, written_options):
    """
    The running daemon's options as seen from any process: ``running_options``
    (``__opts__``) with the options a salt-call command line overrides put back to
    Salt's defaults, then ``written_options`` (:attr:`MinionConfig.options`) on top.
    """
    reset = {key: salt.config.DEFAULT_MINION_OPTS[key] for key in SALT_CALL_CLI_OPTIONS}
    merged = {**running_options, **reset, **written_options}
    # Salt puts root_dir in front of these when they are relative; the running value has it.
    for key in ROOT_DIR_RELATIVE_OPTIONS:
        written = written_options.get(key)
        if isinstance(written, str) and not written.startswith("/") and key in running_options:
            merged[key] = running_options[key]
    return merged
