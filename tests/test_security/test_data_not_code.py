# Copyright (c) mmekd contributors. All rights reserved.
"""Text and files from users are read as data, never executed."""
import pickle

import pytest
from mmengine.config import Config

from mmekd.utils.literal_config import LiteralConfigError, read_literal_config
from payloads import RunsShell
from tool_loader import load_tool


def test_stored_config_round_trips_as_literals():
    # The in1k family configs (MMPretrain's recipes) have dicts whose keys
    # are not names (paramwise_cfg.custom_keys: '.pos_embed'), which
    # pretty_text writes as dict({...}).
    for path in ('configs/ddnn_demo_digits.py', 'configs/ddnn_r50_imagenet.py',
                 'configs/ke/ke_resnet18_kels-s0.5_10x200e_flowers102.py',
                 'configs/ddnn_convnext-small_in1k.py',
                 'configs/ddnn_swin-small_in1k.py',
                 'configs/ddnn_deit-small_in1k.py'):
        cfg = Config.fromfile(path)
        assert Config(read_literal_config(cfg.pretty_text)).to_dict() == \
            cfg.to_dict()


@pytest.mark.parametrize('text, where', [
    ("__import__('os').system('touch x')\nmodel = dict()", 'line 1'),
    ("model = dict(a=__import__('os').getcwd())", 'line 1'),
    ('import os', 'line 1'),
    ('model = dict()\nx = [1, 2][0]', 'line 2'),
    ('model = dict(**evil)', 'line 1'),
    ('a = b = 1', 'line 1'),
    ('model = lambda: 0', 'line 1'),
    ("model = dict({'.a': __import__('os').getcwd()})", 'line 1'),
    ("model = dict({'.a': 1}, b=2)", 'line 1'),
    ("model = dict({'.a': 1}, {'.b': 2})", 'line 1'),
])
def test_anything_but_literals_is_refused(tmp_path, text, where):
    with pytest.raises(LiteralConfigError, match=where):
        read_literal_config(text)


def test_subnet_costs_reads_results_as_json_only(tmp_path):
    tool = load_tool('analysis/subnet_costs')
    marker = tmp_path / 'pwned'
    evil = tmp_path / 'results.pkl'
    evil.write_bytes(pickle.dumps({'full/top1': RunsShell(marker)}))
    with pytest.raises(SystemExit, match=r'results\.pkl is not a JSON file '
                       r'.*Only JSON is read'):
        tool.load_results(str(evil))
    assert not marker.exists()
    good = tmp_path / 'results.json'
    good.write_text('{"full/top1": 70.5, "sub0/top1": 68.25}')
    assert tool.load_results(str(good)) == {'full': {1: 70.5},
                                            'sub0': {1: 68.25}}
    good.write_text('[1, 2]')
    with pytest.raises(SystemExit, match='must hold a JSON object'):
        tool.load_results(str(good))
