# Copyright (c) mmekd contributors. All rights reserved.
"""Load a script of ``tools/`` as a module (the tools are scripts, not a
package). ``tests/`` is on ``sys.path`` through its ``conftest.py``."""
import importlib.util
import os.path as osp
from types import ModuleType

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def tool_path(name: str) -> str:
    """``tools/<name>.py``; ``name`` may hold a sub-folder
    (``'deploy/export_onnx'``)."""
    return osp.join(REPO, 'tools', f'{name}.py')


def load_tool(name: str) -> ModuleType:
    """A fresh module of ``tools/<name>.py``."""
    spec = importlib.util.spec_from_file_location(
        '_tool_' + name.replace('/', '_'), tool_path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
