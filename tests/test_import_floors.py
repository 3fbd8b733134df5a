# Copyright (c) mmekd contributors. All rights reserved.
"""Every import inside ``mmekd/`` points down the floors (``STYLE.md``):

    vocabulary, registry, version            words and registries
      < utils                                tools of every layer
      < datasets, evaluation, models,        the components
        visualization
      < engine, apis (never each other)      training loop, deployment
      < patches, the package itself          what ``import mmekd`` does

Read from the source (``ast``), not by importing: an upward import, a
cycle, or an import of an mmekd module inside a function (a cycle being
hidden) fails here.
"""
import ast
import os
import os.path as osp
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'mmekd')

FLOORS = {
    'mmekd.vocabulary': 0, 'mmekd.registry': 0, 'mmekd.version': 0,
    'mmekd.utils': 1,
    'mmekd.datasets': 2, 'mmekd.evaluation': 2, 'mmekd.models': 2,
    'mmekd.visualization': 2,
    'mmekd.engine': 3, 'mmekd.apis': 3,
    'mmekd.patches': 4, 'mmekd': 4,
}
# Floors whose rooms must not import each other.
APART = [('mmekd.engine', 'mmekd.apis')]


def _modules() -> Dict[str, str]:
    """``{module name: path}`` of every module of the package."""
    found = {}
    for folder, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith('.py'):
                continue
            path = osp.join(folder, name)
            rel = osp.relpath(path, osp.dirname(ROOT))[:-3].split(os.sep)
            if rel[-1] == '__init__':
                rel = rel[:-1]
            found['.'.join(rel)] = path
    return found


MODULES = _modules()


def _floor_of(module: str) -> Tuple[str, int]:
    """The floor's name and level of ``module`` (the longest prefix)."""
    parts = module.split('.')
    for i in range(len(parts), 0, -1):
        prefix = '.'.join(parts[:i])
        if prefix in FLOORS:
            return prefix, FLOORS[prefix]
    raise AssertionError(f'{module} is on no floor: add it to FLOORS')


def _resolve(module: str, node: ast.AST) -> List[str]:
    """The mmekd modules an import statement of ``module`` loads."""
    is_pkg = MODULES[module].endswith('__init__.py')
    targets = []
    if isinstance(node, ast.Import):
        targets = [a.name for a in node.names]
    else:
        base = node.module or ''
        if node.level:
            anchor = module.split('.')
            if not is_pkg:
                anchor = anchor[:-1]
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = '.'.join(anchor + ([base] if base else []))
        for alias in node.names:
            sub = f'{base}.{alias.name}'
            targets.append(sub if sub in MODULES else base)
    out = []
    for t in targets:
        if t == 'mmekd' or t.startswith('mmekd.'):
            # ``import mmekd.a.b`` loads mmekd.a.b (the deepest module).
            while t not in MODULES and '.' in t:
                t = t.rsplit('.', 1)[0]
            out.append(t)
    return out


def _imports() -> Tuple[Dict[str, Set[str]], List[str]]:
    """Module-level edges, and every import of an mmekd module made inside
    a function or class body."""
    edges: Dict[str, Set[str]] = {m: set() for m in MODULES}
    hidden = []
    for module, path in MODULES.items():
        tree = ast.parse(open(path).read(), path)

        def walk(node, nested: bool):
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.Import, ast.ImportFrom)):
                    for target in _resolve(module, child):
                        if nested:
                            hidden.append(f'{module}:{child.lineno} imports '
                                          f'{target} inside a function')
                        elif target != module:
                            edges[module].add(target)
                inner = nested or isinstance(
                    child, (ast.FunctionDef, ast.AsyncFunctionDef,
                            ast.ClassDef, ast.Lambda))
                walk(child, inner)

        walk(tree, False)
    return edges, hidden


EDGES, HIDDEN = _imports()


def test_every_module_is_on_a_floor():
    for module in MODULES:
        _floor_of(module)


def test_no_import_of_mmekd_inside_a_function():
    assert HIDDEN == []


def test_imports_point_down():
    upward = []
    for module, targets in EDGES.items():
        floor, level = _floor_of(module)
        for target in targets:
            t_floor, t_level = _floor_of(target)
            if t_level > level:
                upward.append(f'{module} (floor {level}) -> {target} '
                              f'(floor {t_level})')
            for a, b in APART:
                if {floor, t_floor} == {a, b}:
                    upward.append(f'{module} -> {target}: {a} and {b} '
                                  'never import each other')
    assert upward == []


def _cycle() -> Optional[List[str]]:
    state: Dict[str, int] = {}
    stack: List[str] = []

    def visit(m: str) -> Optional[List[str]]:
        state[m] = 1
        stack.append(m)
        for t in sorted(EDGES[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                found = visit(t)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(MODULES):
        if m not in state:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycle():
    cycle = _cycle()
    assert cycle is None, ' -> '.join(cycle)


@pytest.mark.parametrize('source, expected', [
    ('from mmekd.models.plain_net import plain_net', 'mmekd.models.plain_net'),
    ('from ..backbones import NetTree', 'mmekd.models.backbones'),
    ('from . import split', 'mmekd.models.ke.split'),
])
def test_the_resolver_reads_imports(source, expected):
    """The checks above can fail: the resolver finds real edges."""
    node = ast.parse(source).body[0]
    assert _resolve('mmekd.models.ke.slim_extraction', node) == [expected]
