# Copyright (c) mmekd contributors. All rights reserved.
"""Read a config text as data, without executing it.

MMEngine stores the training config's text in every checkpoint
(``meta['cfg']``). ``Config.fromstring`` would execute that text, so a
checkpoint could run code. :func:`read_literal_config` accepts only what
``Config.pretty_text`` writes: assignments of literals (numbers, strings,
``None``/``True``/``False``, lists, tuples, dicts, ``dict(key=...)`` calls
and ``dict({...})``, which it writes for a dict with keys that are not
names, e.g. ``paramwise_cfg.custom_keys`` of MMPretrain's Swin/ConvNeXt/DeiT
recipes). Anything else is refused with the line it is on.
"""
import ast
from typing import Any, Dict


class LiteralConfigError(ValueError):
    """The text is not a config of plain literal assignments."""


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_value(e) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values)}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == 'dict' and not node.args
            and all(k.arg is not None for k in node.keywords)):
        return {k.arg: _value(k.value) for k in node.keywords}
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == 'dict' and len(node.args) == 1
            and isinstance(node.args[0], ast.Dict) and not node.keywords):
        return _value(node.args[0])
    if (isinstance(node, ast.UnaryOp)
            and isinstance(node.op, (ast.USub, ast.UAdd))
            and isinstance(node.operand, ast.Constant)
            and type(node.operand.value) in (int, float)):
        v = node.operand.value
        return -v if isinstance(node.op, ast.USub) else v
    raise LiteralConfigError(
        f'line {getattr(node, "lineno", "?")}: {ast.unparse(node)[:80]!r} is '
        'not a literal')


def read_literal_config(text: str) -> Dict[str, Any]:
    """``{name: value}`` of a config text made only of literal assignments.

    Args:
        text (str): Config text, e.g. a checkpoint's ``meta['cfg']``.

    Returns:
        dict: The assigned values (dicts for ``dict(...)``).

    Raises:
        LiteralConfigError: The text has a statement other than
            ``NAME = <literal>`` or a value that is not a literal (a call,
            a name, an operator, ...); nothing of it is executed.
    """
    try:
        tree = ast.parse(text, mode='exec')
    except SyntaxError as e:
        raise LiteralConfigError(f'not Python syntax: {e}') from None
    cfg = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            raise LiteralConfigError(
                f'line {stmt.lineno}: {ast.unparse(stmt)[:80]!r} is not an '
                'assignment of a literal to a name')
        cfg[stmt.targets[0].id] = _value(stmt.value)
    return cfg
