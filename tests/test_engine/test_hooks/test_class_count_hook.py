# Copyright (c) mmekd contributors. All rights reserved.
"""ClassCountHook: the classes of the data against model.head.num_classes,
on the custom-folder config (docs/custom_data.md)."""
import os.path as osp
import sys
from types import SimpleNamespace

import pytest
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.registry import DefaultScope
from mmengine.runner import Runner
from tool_loader import REPO

from mmekd.engine.hooks import ClassCountError, ClassCountHook

sys.path.insert(0, osp.join(REPO, 'tests', 'test_configs'))
from test_custom_folder import write_folder  # noqa: E402

CONFIG = osp.join(REPO, 'configs', 'ddnn_r34_custom_folder.py')


def fake_runner(tmp_path, monkeypatch, num_classes, head_classes=None):
    """The custom-folder config's val loader and evaluator on 3 class
    folders, with NUM_CLASSES=num_classes, and a model whose head has
    head_classes (default: NUM_CLASSES) outputs."""
    root = write_folder(str(tmp_path / 'data'), dict(train=1, val=1))
    monkeypatch.setenv('DATA_ROOT', root)
    monkeypatch.setenv('NUM_CLASSES', str(num_classes))
    cfg = Config.fromfile(CONFIG)
    assert cfg.default_hooks.class_count.type == 'mmekd.ClassCountHook'
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        loader = Runner.build_dataloader(
            dict(cfg.val_dataloader, num_workers=0,
                 persistent_workers=False))
        evaluator = Evaluator(cfg.val_evaluator)
    head = SimpleNamespace(num_classes=head_classes or num_classes)
    return SimpleNamespace(
        model=SimpleNamespace(head=head), val_dataloader=loader,
        val_evaluator=evaluator, test_dataloader=loader,
        test_evaluator=evaluator,
        logger=SimpleNamespace(warnings=[]))


def _log(runner):
    runner.logger.warning = runner.logger.warnings.append
    return runner.logger.warnings


def test_matching_classes_pass(tmp_path, monkeypatch):
    runner = fake_runner(tmp_path, monkeypatch, 3)
    warnings = _log(runner)
    ClassCountHook().before_val(runner)
    assert warnings == []


def test_too_few_outputs_is_an_error(tmp_path, monkeypatch):
    runner = fake_runner(tmp_path, monkeypatch, 2)
    with pytest.raises(ClassCountError, match=r'val_dataloader: the data has '
                       r'3 classes \(CustomDataset with classes \[cat, dog, '
                       r'fox\]\), but model.head.num_classes=2.*NUM_CLASSES='
                       '3'):
        ClassCountHook().before_val(runner)


def test_more_outputs_warn_and_name_the_meaningless_topk(
        tmp_path, monkeypatch):
    """The issue's case: NUM_CLASSES left at its default 10 (top-1 and
    top-5 reported) on fewer class folders: top-5 is 100 % whatever the
    model learns."""
    runner = fake_runner(tmp_path, monkeypatch, 10)
    warnings = _log(runner)
    hook = ClassCountHook()
    hook.before_test(runner)
    assert len(warnings) == 1
    out = warnings[0]
    assert ('test_dataloader: model.head.num_classes=10, but the data has '
            'only 3 classes (CustomDataset with classes [cat, dog, fox]). '
            'top-5 is meaningless here') in out
    assert 'top-1' not in out
    hook.before_test(runner)  # once per dataloader
    assert len(warnings) == 1
