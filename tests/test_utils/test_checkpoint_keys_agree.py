# Copyright (c) mmekd contributors. All rights reserved.
"""The checkpoint checks of tools/test.py and of the export agree: they
share one comparison (``compare_state_dict``)."""
import pytest

from mmekd.apis import ExportError
from mmekd.apis import check_exact as export_check
from mmekd.registry import MODELS
from mmekd.utils import CheckpointMismatchError
from mmekd.utils import check_loadable as load_check


@pytest.fixture
def model(tiny_ddnn_cfg):
    return MODELS.build(tiny_ddnn_cfg)


def test_both_accept_what_one_accepts(model):
    state = model.state_dict()
    no_counter = {k: v for k, v in state.items()
                  if not k.endswith('num_batches_tracked')}
    ddp = {f'module.{k}': v for k, v in state.items()}
    for sd in (state, no_counter, ddp):
        load_check(model, sd)
        export_check(model, sd)


def test_both_refuse_what_one_refuses(model):
    state = model.state_dict()
    missing = dict(state)
    missing.pop('head.fc.weight')
    for sd in (missing, ):
        with pytest.raises(CheckpointMismatchError, match='head.fc.weight'):
            load_check(model, sd)
        with pytest.raises(ExportError, match='head.fc.weight'):
            export_check(model, sd)
