# Copyright (c) mmekd contributors. All rights reserved.
"""Every tool that writes files refuses an output that is one of its inputs
(before writing anything) and replaces its outputs atomically."""
import hashlib
import os
import os.path as osp
import sys

import pytest
import torch
from tool_loader import load_tool, tool_path

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'test_apis'))
from tiny_ddnn import tiny_model_files  # noqa: E402


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """The tiny DDNN config and checkpoint, in a folder of their own."""
    d = str(tmp_path_factory.mktemp('inputs'))
    cfg, ckpt, _ = tiny_model_files(d)
    return d, cfg, ckpt


def _digest(path):
    with open(path, 'rb') as f:
        return hashlib.sha256(f.read()).hexdigest()


def _run(tool, argv, monkeypatch):
    monkeypatch.setattr(sys, 'argv', [tool_path(tool), *argv])
    load_tool(tool).main()


# tool: (argv from (folder, config, checkpoint), the output and the input
# the error names). Each output resolves to an input.
CASES = {
    # The reported ones: the converted / exported file over the source.
    'convert_torchvision':
    lambda d, cfg, ckpt: ([cfg, ckpt, ckpt], ('out', ckpt),
                          ('checkpoint', ckpt)),
    'export_subnet':
    lambda d, cfg, ckpt: ([cfg, ckpt, d, '--net', 'sub0', '--name',
                           'tiny_ddnn'], ('exported config',
                                          osp.join(d, 'tiny_ddnn.py')),
                          ('config', cfg)),
    'extract_slim':
    lambda d, cfg, ckpt: ([cfg, ckpt, osp.join(d, 'slim'), '--onnx', ckpt],
                          ('onnx', ckpt), ('checkpoint', ckpt)),
    'deploy/export_onnx':
    lambda d, cfg, ckpt: ([cfg, ckpt, ckpt, '--net', 'sub0'],
                          ('out', ckpt), ('checkpoint', ckpt)),
    'test':
    lambda d, cfg, ckpt: ([cfg, ckpt, '--out', cfg, '--out-item', 'metrics',
                           '--work-dir', osp.join(d, 'work')],
                          ('out', cfg), ('config', cfg)),
    'analysis/benchmark_inference':
    lambda d, cfg, ckpt: ([cfg, ckpt, '--out', ckpt], ('out', ckpt),
                          ('checkpoint', ckpt)),
    'analysis/eval_recalibrated':
    lambda d, cfg, ckpt: ([cfg, ckpt, '--out', ckpt], ('out', ckpt),
                          ('checkpoint', ckpt)),
    'analysis/subnet_costs':
    lambda d, cfg, ckpt: ([cfg, ckpt, '--out-dir', d, '--results',
                           osp.join(d, 'tiny_ddnn_costs.csv')],
                          ('.csv', osp.join(d, 'tiny_ddnn_costs.csv')),
                          ('results', osp.join(d, 'tiny_ddnn_costs.csv'))),
    'benchmark_epoch':
    lambda d, cfg, ckpt: ([cfg, '--json', cfg], ('json', cfg),
                          ('config', cfg)),
}


@pytest.mark.parametrize('tool', sorted(CASES))
def test_output_that_is_an_input_is_refused(files, tool, monkeypatch):
    d, cfg, ckpt = files
    results = osp.join(d, 'tiny_ddnn_costs.csv')  # read as JSON
    with open(results, 'w') as f:
        f.write('{}')
    argv, (out_name, out), (in_name, src) = CASES[tool](d, cfg, ckpt)
    before = {p: _digest(p) for p in (cfg, ckpt, results)}
    listing = sorted(os.listdir(d))
    with pytest.raises(SystemExit) as e:
        _run(tool, argv, monkeypatch)
    assert (f'the output {out_name} {out} is the input {in_name} {src}: '
            'writing it would destroy the input') in str(e.value)
    assert '\n' not in str(e.value)
    assert {p: _digest(p) for p in before} == before
    assert sorted(os.listdir(d)) == listing  # nothing written


def test_symlink_to_the_input_is_refused(files, tmp_path, monkeypatch):
    d, cfg, ckpt = files
    link = str(tmp_path / 'link.pth')
    os.symlink(ckpt, link)
    with pytest.raises(SystemExit, match=f'the output out {link} is the '
                       f'input checkpoint {ckpt}'):
        _run('deploy/export_onnx', [cfg, ckpt, link, '--net', 'sub0'],
             monkeypatch)


class Crash(Exception):
    pass


def test_export_replaces_outputs_atomically(files, tmp_path, monkeypatch):
    """A save that dies half-way keeps the previous export whole."""
    d, cfg, ckpt = files
    out = tmp_path / 'out'
    out.mkdir()
    exported = out / 'sub0.pth'
    exported.write_bytes(b'the previous export')
    save = torch.save

    def dying_save(obj, f, *args, **kwargs):
        save(obj, f, *args, **kwargs)
        with open(f, 'r+b') as fh:  # truncated, as by a full disk
            fh.truncate(os.path.getsize(f) // 2)
        raise Crash

    monkeypatch.setattr(torch, 'save', dying_save)
    with pytest.raises(Crash):
        _run('export_subnet',
             [cfg, ckpt, str(out), '--net', 'sub0', '--name', 'sub0'],
             monkeypatch)
    assert exported.read_bytes() == b'the previous export'
    assert not [f for f in os.listdir(out) if '.tmp' in f]
