"""The one plugin pattern: a typed config dataclass that validates itself, found by its name.

Every kind of plugin (model, dataset, method, schedule, analysis, probe) has a base config
class that owns a `Registry`. A plugin is a frozen dataclass subclassing that base with a
`name`; defining it registers it, and the registry imports every module of its kind's
package the first time it is asked for a name, so a new module there is found without
editing any list. The config section then names the plugin:

    method: {name: prune, amount: 0.9}

or points at a plugin class anywhere on the import path, the Hydra way:

    method: {_target_: mypkg.methods.MyPruning, amount: 0.9}

Either way `Registry.parse` returns the validated config (one line per error, naming the
key and the valid choices); what the plugin does is a method of that config class.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from compress.config import from_mapping
from compress.errors import ConfigError

P = TypeVar("P", bound="Plugin")

TARGET = "_target_"


class Registry(Generic[P]):
    """The plugins of one kind, by name, in the order their modules were imported."""

    def __init__(self, kind: str, package: str) -> None:
        self.kind = kind
        self.package = package
        self._classes: dict[str, type[P]] = {}
        self._loaded = False
        self._loading = False
        # Threads asking for their first name at once (jobs in one process) wait for the
        # whole package instead of reading the names half of it registered so far.
        self._lock = threading.RLock()

    def add(self, cls: type[P]) -> None:
        known = self._classes.get(cls.name)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise ValueError(f"{self.kind} {cls.name!r} is registered twice: {known} and {cls}")
        self._classes[cls.name] = cls

    def _load(self) -> None:
        """Import every module of the kind's package once (each defines its plugins).

        Names are then ordered by module, as the package lists them, so that the order in
        messages does not depend on which plugin module something imported first; plugins
        registered from elsewhere (a `_target_` class with a `name`) come last.
        """
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:  # a plugin module asking for names itself
                return
            self._loading = True
            try:
                package = importlib.import_module(self.package)
                modules = [
                    module.name
                    for module in pkgutil.walk_packages(package.__path__, f"{self.package}.")
                ]
                for module in modules:
                    importlib.import_module(module)
            finally:  # a failed import must fail again, not leave names missing
                self._loading = False
            rank = {module: index for index, module in enumerate(modules)}
            ordered = sorted(
                self._classes.items(), key=lambda item: rank.get(item[1].__module__, len(rank))
            )
            self._classes = dict(ordered)
            self._loaded = True

    def names(self) -> tuple[str, ...]:
        self._load()
        return tuple(self._classes)

    def get(self, name: Any) -> type[P]:
        """The plugin class registered as `name`, or a ConfigError naming the choices."""
        self._load()
        if name not in self._classes:
            what = f"unknown {self.kind} '{name}'"  # None when the section names none
            raise ConfigError(f"{what}; choose one of: {', '.join(self._classes)}")
        return self._classes[name]

    def target(self, path: Any, where: str) -> type[P]:
        """The plugin class at the dotted import `path` (a `_target_`)."""
        cls = import_target(path, where)
        base = self._base()
        if not (isinstance(cls, type) and issubclass(cls, base)):
            raise ConfigError(
                f"{where}.{TARGET}: '{path}' is not a {self.kind} config "
                f"(a subclass of {base.__module__}.{base.__qualname__})"
            )
        return cls

    def _base(self) -> type[P]:
        # Every registered class shares the kind's base; the first one names it.
        self._load()
        for cls in self._classes.values():
            for klass in cls.__mro__:
                if klass.__dict__.get("registry") is self:
                    return klass
        raise ValueError(f"no {self.kind} plugin is registered")

    def parse(self, section: Mapping[str, Any] | None, where: str) -> P:
        """The validated config of the plugin `section` names (by `name` or `_target_`)."""
        values = {key: plain(value) for key, value in dict(section or {}).items()}
        if TARGET in values:
            cls = self.target(values.pop(TARGET), where)
            values.pop("name", None)
        else:
            cls = self.get(values.pop("name", None))
        return from_mapping(cls, values, where)


def import_target(path: Any, where: str) -> Any:
    """The object at the dotted import `path` (a `_target_`), or a one-line ConfigError.

    The working directory is importable too, as it is for `python -m`: a user's own module
    next to their config works without setting PYTHONPATH.
    """
    module, _, attr = str(path).rpartition(".")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        return getattr(importlib.import_module(module), attr)
    except Exception as error:  # a module that fails to import is bad input too
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{where}.{TARGET}: cannot import '{path}' ({detail})") from error


def plain(value: Any) -> Any:
    """Hydra's DictConfig / ListConfig as dict / list, so a section composed in a notebook
    type-checks like the resolved containers the command line passes."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return [plain(item) for item in value]
    return value


@dataclass(frozen=True)
class Plugin:
    """Base of every plugin config: subclasses with a `name` register themselves."""

    name: ClassVar[str]
    registry: ClassVar[Registry[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            cls.registry.add(cls)
