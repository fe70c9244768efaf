"""Configuration errors of the ``lt-lightning`` command line as one line naming the option, not a traceback.

jsonargparse wraps an error raised while a class is built (``dataset must be one of [...], got 'foo'``) in a long
message ending in a dump of the whole namespace. :func:`config_error` digs the original error out of the chain and
names the command-line option it came from (``--data.init_args.dataset``) when the message starts with an argument
of the class being built.

Example:
    >>> from jsonargparse import Namespace
    >>> config = Namespace(data=Namespace(class_path="x.DM", init_args=Namespace(dataset="foo", root="data")))
    >>> str(config_error(ValueError("dataset must be one of ['digits'], got 'foo'"), config))
    "--data.init_args.dataset: dataset must be one of ['digits'], got 'foo'"
"""

from __future__ import annotations

import re
from typing import Any

GROUPS = ("data", "model", "trainer")


class ConfigError(ValueError):
    """A bad value or a missing file met while the command line's classes were built (a ``ValueError``)."""


def root_cause(err: BaseException) -> BaseException:
    """The deepest exception of ``err``'s cause / context chain that jsonargparse did not raise itself."""
    chain = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    own = [e for e in chain if not _raised_by_jsonargparse(e)]
    return own[-1] if own else chain[-1]


def config_error(err: BaseException, config: Any) -> ConfigError:
    """A :class:`ConfigError` with ``err``'s real message, prefixed by the option it names when it can be found."""
    cause = root_cause(err)
    message = str(cause).strip() or type(cause).__name__
    message = message.splitlines()[0] if "Given value" in message else " ".join(message.split())
    option = _option_for(message, config)
    return ConfigError(f"{option}: {message}" if option else message)


def _raised_by_jsonargparse(err: BaseException) -> bool:
    tb = err.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and "jsonargparse" in last


def _option_for(message: str, config: Any) -> str | None:
    """``--<group>.init_args.<name>`` when ``message`` starts with ``name`` and exactly one group has that argument
    (``--trainer.<name>`` for the trainer)."""
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\b", message)
    if match is None or config is None:
        return None
    name = match.group(1)
    found = []
    for group in GROUPS:
        section = config.get(group) if hasattr(config, "get") else None
        if section is None:
            continue
        init_args = section.get("init_args") if hasattr(section, "get") else None
        if init_args is not None and hasattr(init_args, "get") and name in init_args:
            found.append(f"--{group}.init_args.{name}")
        elif group == "trainer" and hasattr(section, "get") and name in section:
            found.append(f"--trainer.{name}")
    return found[0] if len(found) == 1 else None
