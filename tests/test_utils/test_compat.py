# Copyright (c) mmekd contributors. All rights reserved.
"""MMEngine's ``digit_version`` under ``torch.compile`` (torch 2.11 failed to
trace it inside ``mmengine.runner.amp.autocast``)."""
import sys
import types

import pytest
import torch
import torch.nn as nn
from mmengine.utils.dl_utils import TORCH_VERSION
from packaging.version import InvalidVersion

import mmekd  # noqa: F401  (registers the Dynamo-safe version checks)
from mmekd.utils import (is_dynamo_safe_version_fn,
                         register_dynamo_safe_version_checks)

VERSIONS = ('2.11.0+cu130', '2.14.1', '1.5.0', '1.10.0a0', '0.13.2rc1',
            '2.0.0.post1', '0.40.2', TORCH_VERSION, torch.__version__)


def _version_fns():
    import mmengine.optim.optimizer.amp_optimizer_wrapper as amp_wrapper
    import mmengine.runner.amp as amp
    import mmengine.utils as utils
    import mmengine.utils.version_utils as version_utils
    import mmpretrain.models.backbones.convmixer as convmixer
    return dict(
        version_utils=version_utils.digit_version,
        utils=utils.digit_version,
        amp=amp.digit_version,
        amp_wrapper=amp_wrapper.digit_version,
        convmixer=convmixer.digit_version)


def test_registered_in_every_module():
    fns = _version_fns()
    wrapper = fns['version_utils']
    assert is_dynamo_safe_version_fn(wrapper)
    assert all(fn is wrapper for fn in fns.values()), fns
    # The wrapper is traced (it copies the folded tuple), never folded.
    assert not getattr(wrapper, '_dynamo_marked_constant', False)
    assert not is_dynamo_safe_version_fn(wrapper.__wrapped__)
    assert wrapper.__name__ == 'digit_version'


def test_registration_is_idempotent_and_rebinds_late_holders():
    wrapper = _version_fns()['version_utils']
    holder = types.ModuleType('_mmekd_test_version_holder')
    holder.digit_version = wrapper.__wrapped__  # imported the original
    sys.modules[holder.__name__] = holder
    try:
        assert register_dynamo_safe_version_checks()
        assert register_dynamo_safe_version_checks()
    finally:
        del sys.modules[holder.__name__]
    assert holder.digit_version is wrapper
    assert all(fn is wrapper for fn in _version_fns().values())


@pytest.mark.parametrize('version', VERSIONS)
@pytest.mark.parametrize('length', [4, 5])
def test_eager_results_unchanged(version, length):
    wrapper = _version_fns()['version_utils']
    expected = wrapper.__wrapped__(version, length)
    assert wrapper(version, length) == expected
    assert wrapper(version, length=length) == expected
    assert type(wrapper(version, length)) is tuple
    if length == 4:
        assert wrapper(version) == expected


def test_eager_errors_unchanged():
    wrapper = _version_fns()['version_utils']
    with pytest.raises(InvalidVersion):
        wrapper.__wrapped__('not a version')
    with pytest.raises(InvalidVersion):
        wrapper('not a version')


@pytest.mark.parametrize('fullgraph', [True, False])
def test_compiled_autocast_matches_eager(fullgraph):
    from mmengine.runner.amp import autocast
    from mmengine.utils import digit_version

    torch.manual_seed(0)
    linear = nn.Linear(8, 4)
    x = torch.randn(2, 8)

    def step(x):
        new = digit_version(TORCH_VERSION) >= digit_version('1.5.0')
        old = (digit_version('1.5.0') <= digit_version(torch.__version__) <
               digit_version('1.10.0'))
        with autocast(device_type='cpu', dtype=torch.bfloat16):
            y = linear(x)
        return y, (1.0 if new else 0.0) + (10.0 if old else 0.0)

    expected = step(x)
    assert expected[0].dtype == torch.bfloat16  # autocast was entered
    assert expected[1] == 1.0
    torch._dynamo.reset()
    try:
        compiled = torch.compile(step, backend='eager', fullgraph=fullgraph)
        torch.testing.assert_close(compiled(x), expected)
        torch.testing.assert_close(compiled(x + 1), step(x + 1))
    finally:
        torch._dynamo.reset()
