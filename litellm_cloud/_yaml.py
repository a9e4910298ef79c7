"""Load a YAML file into a pydantic model, naming the file and line of any error.

Operators edit ``tiers.yaml`` and ``fleet.yaml`` by hand; a mistake must stop the process with
``tiers.yaml:12: tiers.free.rpm: Input should be greater than 0`` rather than a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pydantic
import yaml

from ._errors import ConfigError

Model = TypeVar("Model", bound=pydantic.BaseModel)


def _line_index(node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]) -> None:
    out[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            out[(*path, key)] = key_node.start_mark.line + 1
            _line_index(value_node, (*path, key), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_index(item, (*path, i), out)


def _line_for(loc: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> int | None:
    # pydantic may point below what the file holds (a missing key): use the nearest ancestor.
    for end in range(len(loc), -1, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def load_model(path: Path, model: type[Model]) -> Model:
    """Parse ``path`` as YAML and validate it as ``model``; raise ``ConfigError`` naming the line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML: {getattr(exc, 'problem', exc)}") from exc
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _line_index(node, (), lines)
    try:
        return model.model_validate(data if data is not None else {})
    except pydantic.ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _line_for(loc, lines)
            where = f"{path}:{line}" if line else str(path)
            dotted = ".".join(str(p) for p in loc) or "(top level)"
            problems.append(f"{where}: {dotted}: {err['msg']}")
        raise ConfigError("\n".join(problems)) from exc
