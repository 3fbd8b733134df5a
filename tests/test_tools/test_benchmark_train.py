# Copyright (c) mmekd contributors. All rights reserved.
"""tools/benchmark_train.py runs end to end on CPU and prints parseable
results (timings are not checked: they are not reproducible)."""
import json
import os.path as osp
import re

import pytest
import torch
from tool_loader import load_tool

ROOT = osp.join(osp.dirname(__file__), '..', '..')


def _tool():
    return load_tool('benchmark_train')


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The demo config, narrowed to a few channels: the tool, not the net, is
# under test.
TINY = [
    osp.join(ROOT, 'configs', 'ddnn_demo_digits.py'), '--device', 'cpu',
    '--batch-size', '4', '--steps', '2', '--warmup', '1', '--repeats', '2',
    '--cfg-options', 'model.backbone.stem_channels=4',
    'model.backbone.base_channels=4', 'model.head.in_channels=32'
]


def _summary(text):
    return {
        k: (None if v == 'n/a' else float(v))
        for k, v in re.findall(r'^(\w+_ratio_\w+): (\S+)$', text, re.M)
    }


def test_benchmark_cpu(capsys, tmp_path):
    tool = _tool()
    out_json = str(tmp_path / 'res.json')
    tool.main(TINY + ['--json', out_json])
    text = capsys.readouterr().out
    for name in ('ddnn[memory_efficient]', 'ddnn[simple]', 'full alone',
                 'sub0 alone', 'sub1 alone'):
        row = re.search(rf'^{re.escape(name)}\s+([\d.]+)\s+([\d.]+)', text,
                        re.M)
        assert row, name
        assert float(row.group(1)) > 0 and float(row.group(2)) > 0
    summary = _summary(text)
    assert 0 < summary['step_ratio_memory_efficient'] < 10
    assert 0 < summary['step_ratio_simple'] < 10
    # no CUDA: memory is n/a, the saved-activation proxy is measured
    assert summary['cuda_peak_ratio_memory_efficient'] is None
    assert summary['saved_activations_ratio_memory_efficient'] < \
        summary['saved_activations_ratio_simple']
    # every live CPU tensor: the memory-efficient step holds less than
    # the simple one (it frees each net's graph before the next forward)
    assert summary['cpu_live_ratio_memory_efficient'] < \
        summary['cpu_live_ratio_simple']
    # the teacher is the largest net: its graph is the peak
    assert summary['saved_activations_ratio_memory_efficient'] == \
        pytest.approx(1.0, abs=0.05)
    res = json.load(open(out_json))
    assert res['rows']['full alone']['peak_share'] is None
    # FLOPs: the DDNN's forward is the tree (less than the sum of its nets)
    rows = res['rows']
    alone = sum(rows[f'{n} alone']['train_gflop_per_img']
                for n in ('full', 'sub0', 'sub1'))
    ddnn = rows['ddnn[memory_efficient]']['train_gflop_per_img']
    assert rows['full alone']['train_gflop_per_img'] < ddnn < alone


# Each family's demo at a tiny width.
FAMILY_DEMOS = {
    'convnext': ['model.backbone.arch.channels=[4,8,16,32]',
                 'model.head.in_channels=32'],
    'swin': ['model.backbone.arch.embed_dims=4', 'model.head.in_channels=32'],
    'vit': ['model.backbone.arch.embed_dims=16',
            'model.backbone.arch.num_heads=2',
            'model.backbone.arch.feedforward_channels=32',
            'model.head.in_channels=16'],
}


@pytest.mark.slow
@pytest.mark.parametrize('family', FAMILY_DEMOS)
def test_benchmark_every_family(family, capsys, tmp_path):
    """The DDNN step of a ConvNeXt / Swin / ViT demo against each net alone
    (the stock MMPretrain class the export gives, AdamW from the config)."""
    out_json = str(tmp_path / 'res.json')
    _tool().main([
        osp.join(ROOT, 'configs', f'ddnn_{family}_demo_digits.py'),
        '--device', 'cpu', '--batch-size', '4', '--steps', '1', '--warmup',
        '1', '--repeats', '1', '--json', out_json, '--cfg-options'
    ] + FAMILY_DEMOS[family])
    assert 'diverged: none' in capsys.readouterr().out
    res = json.load(open(out_json))
    nets = ['full', 'sub0'] + (['sub1'] if family == 'vit' else [])
    assert sorted(res['rows']) == sorted(
        ['ddnn[memory_efficient]', 'ddnn[simple]'] +
        [f'{n} alone' for n in nets])
    for row in res['rows'].values():
        assert row['step_ms'] > 0 and row['saved_activations_mb'] > 0
    # The DDNN computes the shared blocks once: fewer FLOPs than its nets
    # alone, more than the full net alone.
    rows = res['rows']
    ddnn = rows['ddnn[memory_efficient]']['train_gflop_per_img']
    assert rows['full alone']['train_gflop_per_img'] < ddnn < sum(
        rows[f'{n} alone']['train_gflop_per_img'] for n in nets)
    assert res['summary']['saved_activations_ratio_memory_efficient'] == \
        pytest.approx(1.0, abs=0.05)


def test_benchmark_cpu_amp_channels_last(capsys):
    tool = _tool()
    # Width 8: narrower strided 1x1 convolutions are refused channels-last
    # on oneDNN (mmekd/utils/onednn_fence.py), for the nets alone too.
    with pytest.raises(SystemExit, match='benchmark_train: error: .*strided 1x1'):
        tool.main(TINY + ['--channels-last', '--repeats', '1'])
    wide = [a.replace('=4', '=8').replace('=32', '=64') for a in TINY]
    tool.main(wide + ['--amp', '--channels-last', '--repeats', '1'])
    text = capsys.readouterr().out
    assert 'amp True | channels_last True' in text
    assert _summary(text)['step_ratio_memory_efficient'] > 0


def test_separate_models_use_plain_resnets():
    tool = _tool()
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS
    cfg = Config.fromfile(TINY[0])
    init_default_scope('mmpretrain')
    cfg.model.setdefault('data_preprocessor', cfg.data_preprocessor)
    ddnn = MODELS.build(cfg.model)
    cfgs = tool.separate_model_cfgs(cfg, ddnn)
    assert list(cfgs) == ['full', 'sub0', 'sub1']
    assert cfgs['full']['backbone']['type'] == 'ResNet_CIFAR'
    assert cfgs['full']['backbone']['depth'] == 34
    assert cfgs['sub0']['backbone']['depth'] == 18
    # ResNet-10 [1,1,1,1] is not a standard depth
    assert cfgs['sub1']['backbone']['type'] == 'mmekd.DepthDynamicResNetCIFAR'
    assert list(cfgs['sub1']['backbone']['stage_blocks']) == [1, 1, 1, 1]
    assert tool.input_size_from_cfg(cfg) == 16


def test_static_bytes_counts_existing_gradients_only():
    """The CUDA peak adds static bytes to the step's own allocations, which
    already hold the gradients the step makes: count only existing ones."""
    from mmengine.optim import OptimWrapper
    from mmekd.utils.memory_meters import static_bytes
    model = torch.nn.Linear(10, 4)  # 44 float32 parameters
    wrapper = OptimWrapper(
        torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    assert static_bytes(model, wrapper) == 44 * 4
    wrapper.update_params(model(torch.randn(3, 10)).sum())
    # Momentum buffers now exist; zero_grad freed the gradients.
    assert all(p.grad is None for p in model.parameters())
    assert static_bytes(model, wrapper) == 2 * 44 * 4
    model(torch.randn(3, 10)).sum().backward()
    assert static_bytes(model, wrapper) == 3 * 44 * 4


@pytest.mark.slow
@pytest.mark.isolated  # torch.compile (aot_eager: no generated code)
def test_benchmark_compiled_beside_eager(capsys, tmp_path):
    """--compile times every model eager and compiled in one run and
    reports graphs, graph breaks and recompilations (aot_eager: the capture
    without inductor's compile time)."""
    tool = _tool()
    out_json = str(tmp_path / 'res.json')
    # Two nets (ResNet-18 > [1,1,1,1]): the capture costs what the graphs
    # hold, and two nets show every row kind.
    tool.main(TINY + ['model.backbone.depth=18',
                      'model.backbone.sub_stage_blocks=[[1,1,1,1]]',
                      '--compile', '--compile-backend', 'aot_eager',
                      '--repeats', '1', '--no-mkldnn', '--profile', '--json',
                      out_json])
    text = capsys.readouterr().out
    assert 'mkldnn False' in text
    assert re.search(r'^profile of ddnn\[memory_efficient\] compiled, 5 '
                     r'steps', text, re.M)
    # the convolutions' backward (without oneDNN: the slow kernel)
    assert re.search(r'aten::\w*conv\w*_backward', text)
    res = json.load(open(out_json))
    rows = res['rows']
    for name in ('ddnn[memory_efficient]', 'ddnn[simple]', 'full alone'):
        assert not rows[name]['compiled']
        compiled = rows[name + ' compiled']
        assert compiled['compiled'] and compiled['step_ms'] > 0
        assert compiled['graph_breaks'] == 0
        assert compiled['recompiles'] == 0
    assert rows['ddnn[simple] compiled']['graphs'] == 1
    # two nets, [1,1,1,1] a prefix of [2,2,2,2]: more than one segment
    assert rows['ddnn[memory_efficient] compiled']['graphs'] > 1
    summary = res['summary']
    assert summary['default_mode'] == 'memory_efficient'
    assert summary['compiled_vs_eager_default_mode'] == \
        summary['compiled_vs_eager_memory_efficient'] > 0
    assert re.search(r'^ddnn\[simple\] compiled\s+[\d.]+\s+1\s+0\s+0$', text,
                     re.M)


def test_profile_reports_the_nonfinite_check_share(capsys, tmp_path):
    """--profile measures the optim wrapper's non-finite check (its
    profiler range) against the profiled step; --no-mkldnn holds for the
    run only."""
    tool = _tool()
    out_json = str(tmp_path / 'res.json')
    enabled = torch.backends.mkldnn.enabled
    tool.main(TINY + ['--only', 'simple', '--profile', '--repeats', '1',
                      '--no-mkldnn', '--json', out_json])
    assert torch.backends.mkldnn.enabled == enabled
    text = capsys.readouterr().out
    assert 'mkldnn False' in text
    line = re.search(r'mmekd\.nonfinite_check \(the non-finite check, host '
                     r'time\): ([\d.]+) ms of a ([\d.]+) ms profiled step',
                     text)
    assert line, text[-2000:]
    check_ms, step_ms = map(float, line.groups())
    assert 0 < check_ms < step_ms
    res = json.load(open(out_json))
    row = res['rows']['ddnn[simple]']
    assert row['nonfinite_check_share'] == pytest.approx(
        res['summary']['nonfinite_check_share_simple'])
    assert 0 < row['nonfinite_check_share'] < 1
