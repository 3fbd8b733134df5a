# Copyright (c) mmekd contributors. All rights reserved.
"""mmekd.FusedOptimWrapperConstructor: fused (or foreach) by default where
the device has it, the config's choice kept, numerics of torch's loop."""
import logging

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MMLogger
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope

import mmekd.engine.optim.fused_constructor as fc
from mmekd.engine.optim import FusedOptimWrapperConstructor, SafeOptimWrapper

CONSTRUCTOR = 'mmekd.FusedOptimWrapperConstructor'


@pytest.fixture(autouse=True)
def mmpretrain_scope():
    # As in a Runner: configs name mmekd components under this scope.
    with DefaultScope.overwrite_default_scope('mmpretrain'):
        yield


def _tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def _build(model, constructor=CONSTRUCTOR, **optimizer):
    optimizer = dict(dict(type='SGD', lr=0.1, momentum=0.9,
                          weight_decay=5e-4), **optimizer)
    cfg = dict(type='mmekd.SafeOptimWrapper', optimizer=optimizer)
    if constructor is not None:
        cfg['constructor'] = constructor
    return build_optim_wrapper(model, cfg)


def _with_int_param(model):
    model.register_parameter(
        'index', nn.Parameter(torch.zeros(2, dtype=torch.long),
                              requires_grad=False))
    return model


def test_registered_and_chooses_fused_on_cpu():
    wrapper = _build(_tiny())
    assert isinstance(wrapper, SafeOptimWrapper)
    assert wrapper.optimizer.defaults['fused'] is True
    assert wrapper.optimizer.defaults['foreach'] is None
    assert all(g['fused'] for g in wrapper.optimizer.param_groups)


class _ListHandler(logging.Handler):

    def __init__(self, records):
        super().__init__()
        self.records = records

    def emit(self, record):
        self.records.append(record.getMessage())


def test_logs_the_choice_once():
    logger = MMLogger.get_current_instance()
    records = []
    handler = _ListHandler(records)
    logger.addHandler(handler)
    try:
        _build(_tiny())
    finally:
        logger.removeHandler(handler)
    lines = [r for r in records
             if r.startswith('FusedOptimWrapperConstructor:')]
    assert len(lines) == 1
    assert 'SGD with fused=True' in lines[0] and "['cpu']" in lines[0]


@pytest.mark.parametrize('explicit', [
    dict(foreach=True), dict(foreach=False), dict(fused=False),
    dict(fused=None), dict(fused=True)
])
def test_the_config_choice_wins(explicit):
    defaults = _build(_tiny(), **explicit).optimizer.defaults
    for key in ('fused', 'foreach'):
        assert defaults[key] == explicit.get(key), key


def test_the_default_constructor_is_unchanged():
    defaults = _build(_tiny(), constructor=None).optimizer.defaults
    assert defaults['fused'] is None and defaults['foreach'] is None


def test_non_float_param_gets_no_fused_kernel():
    # CPU has no foreach kernels: torch's own default.
    defaults = _build(_with_int_param(_tiny())).optimizer.defaults
    assert defaults['fused'] is None and defaults['foreach'] is None


def test_non_float_param_gets_foreach_where_the_device_has_it(monkeypatch):
    # As on CUDA: pretend CPU has foreach kernels (torch's foreach ops run
    # on CPU too).
    monkeypatch.setattr(fc, '_get_foreach_kernels_supported_devices',
                        lambda: ['cpu'])
    defaults = _build(_with_int_param(_tiny())).optimizer.defaults
    assert defaults['foreach'] is True and defaults['fused'] is None


def test_no_fused_kernel_on_the_device_gives_foreach_or_nothing(
        monkeypatch):
    monkeypatch.setattr(fc, '_get_fused_kernels_supported_devices',
                        lambda: ['cuda'])
    defaults = _build(_tiny()).optimizer.defaults
    assert defaults['fused'] is None and defaults['foreach'] is None
    monkeypatch.setattr(fc, '_get_foreach_kernels_supported_devices',
                        lambda: ['cpu'])
    defaults = _build(_tiny()).optimizer.defaults
    assert defaults['fused'] is None and defaults['foreach'] is True


def test_fused_true_on_an_unsupported_device_names_field_and_device(
        monkeypatch):
    monkeypatch.setattr(fc, '_get_fused_kernels_supported_devices',
                        lambda: ['cuda'])
    with pytest.raises(ValueError, match=r"optim_wrapper\.optimizer\.fused="
                       r"True: SGD .*device 'cpu'"):
        _build(_tiny(), fused=True)
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"fused=True.*'index'.*int64"):
        _build(_with_int_param(_tiny()), fused=True)


@pytest.mark.parametrize('name,fused', [('Adam', True), ('AdamW', True),
                                        ('Adagrad', True), ('RMSprop', None)])
def test_other_optimizers(name, fused):
    wrapper = build_optim_wrapper(
        _tiny(), dict(constructor=CONSTRUCTOR,
                      optimizer=dict(type=name, lr=0.01)))
    assert wrapper.optimizer.defaults.get('fused') is fused


def test_adagrad_fused_is_cpu_only(monkeypatch):
    monkeypatch.setattr(fc, '_get_fused_kernels_supported_devices',
                        lambda: ['cuda'])
    assert fc.fused_devices(torch.optim.Adagrad) == ()
    assert fc.fused_devices(torch.optim.SGD) == ('cuda', )


def test_paramwise_cfg_is_kept():
    wrapper = build_optim_wrapper(
        _tiny(), dict(constructor=CONSTRUCTOR,
                      optimizer=dict(type='SGD', lr=0.1, weight_decay=5e-4),
                      paramwise_cfg=dict(norm_decay_mult=0.0)))
    groups = wrapper.optimizer.param_groups
    assert all(g['fused'] for g in groups)
    assert sorted({g['weight_decay'] for g in groups}) == [0.0, 5e-4]


def test_fused_sgd_equals_the_for_loop():
    """3 steps of fused SGD (momentum 0.9, wd 5e-4, no nesterov) equal
    torch's for-loop SGD within 1e-6."""
    models = [_tiny(), _tiny()]
    models[1].load_state_dict(models[0].state_dict())
    fused = _build(models[0])
    loop = _build(models[1], constructor=None, foreach=False)
    assert fused.optimizer.defaults['fused'] is True
    assert loop.optimizer.defaults['fused'] is None
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(8, 3, 6, 6, generator=gen)
        y = torch.randint(0, 3, (8, ), generator=gen)
        for model, wrapper in zip(models, (fused, loop)):
            loss = nn.functional.cross_entropy(model(x), y)
            wrapper.update_params(loss)
    for (name, a), b in zip(models[0].state_dict().items(),
                            models[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
    assert not torch.equal(models[0][5].weight, _tiny()[5].weight)
    for a, b in zip(fused.optimizer.state.values(),
                    loop.optimizer.state.values()):
        torch.testing.assert_close(a['momentum_buffer'],
                                   b['momentum_buffer'], rtol=0, atol=1e-6)


def test_unwraps_a_model_wrapper():

    class Wrapper(nn.Module):

        def __init__(self, module):
            super().__init__()
            self.module = module

    ctor = FusedOptimWrapperConstructor(
        dict(optimizer=dict(type='SGD', lr=0.1)))
    wrapper = ctor(Wrapper(_with_int_param(_tiny())))
    assert wrapper.optimizer.defaults['fused'] is None
    # The constructor's config is left as it was.
    assert 'fused' not in ctor.optimizer_cfg
