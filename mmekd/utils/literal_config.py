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
import re
from typing import Any, Dict

from .refusal import RefusalError


class LiteralConfigError(RefusalError, ValueError):
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


def describe_stored_config(meta: Dict[str, Any]) -> str:
    """One sentence on the config a checkpoint was trained with, read as
    data from its ``meta`` (MMEngine stores ``cfg``, the config's text, and
    ``experiment_name``, ``<config stem>_<timestamp>``).

    Example::

        >>> describe_stored_config(dict(
        ...     experiment_name='ddnn_demo_digits_20261203_173428',
        ...     cfg="model = dict(type='mmekd.DDNNClassifier', "
        ...         "backbone=dict(type='ResNet_CIFAR', depth=18), "
        ...         "head=dict(num_classes=10))"))
        "It was trained with config 'ddnn_demo_digits' (experiment
        ddnn_demo_digits_20261203_173428; its stored config has model
        mmekd.DDNNClassifier, backbone ResNet_CIFAR depth=18, head
        num_classes=10)."  # (one line)

    Returns:
        str: The sentence, or ``''`` if the meta names no config.
    """
    name = meta.get('experiment_name')
    text = meta.get('cfg')
    summary = ''
    if isinstance(text, str):
        try:
            model = read_literal_config(text).get('model')
        except LiteralConfigError:
            summary = 'its stored config is not plain data and was not read'
        else:
            if isinstance(model, dict):
                summary = _model_summary(model)
    if isinstance(name, str):
        stem = re.sub(r'_\d{8}_\d{6}$', '', name)
        return (f'It was trained with config {stem!r} (experiment {name}'
                + (f'; {summary}' if summary else '') + ').')
    return f'{summary[0].upper()}{summary[1:]}.' if summary else ''


def _model_summary(model: Dict[str, Any]) -> str:
    """``'its stored config has model T, backbone T depth=.., head ..'``."""
    pieces = [f"model {model.get('type')}"]
    for part, keys in (('backbone', ('depth', 'stem_channels',
                                     'base_channels', 'stage_blocks',
                                     'sub_stage_blocks', 'sub_depths')),
                       ('neck', ()),
                       ('head', ('num_classes', 'in_channels'))):
        sub = model.get(part)
        if not isinstance(sub, dict):
            continue
        fields = ' '.join(f'{k}={sub[k]!r}'.replace(' ', '')
                          for k in keys if k in sub)
        pieces.append(' '.join(p for p in (part, str(sub.get('type', '')),
                                            fields) if p))
    return 'its stored config has ' + ', '.join(pieces)
