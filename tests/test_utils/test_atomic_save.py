# Copyright (c) mmekd contributors. All rights reserved.
"""Atomic outputs and the output-is-an-input check of the tools."""
import os

import mmengine
import pytest

from mmekd.utils import (OutputIsInputError, atomic_output, atomic_write,
                         check_outputs_not_inputs)


class Crash(Exception):
    pass


def test_atomic_output_replaces_only_a_complete_file(tmp_path):
    path = tmp_path / 'results.json'
    path.write_text('old')
    with pytest.raises(Crash):
        with atomic_output(str(path)) as tmp:
            assert tmp == str(tmp_path / f'results.tmp{os.getpid()}.json')
            with open(tmp, 'w') as f:
                f.write('{"half": ')  # killed half-way
            raise Crash
    assert path.read_text() == 'old'
    assert os.listdir(tmp_path) == ['results.json']  # no temp file left

    # The temp name keeps the extension: writers that pick the format from
    # it (mmengine.dump, savefig, DumpResults) work.
    with atomic_output(str(path)) as tmp:
        mmengine.dump(dict(top1=1.5), tmp)
        assert path.read_text() == 'old'  # untouched until complete
    assert mmengine.load(str(path)) == dict(top1=1.5)
    assert os.listdir(tmp_path) == ['results.json']

    atomic_write(str(tmp_path / 'last_checkpoint'), 'x.pth')
    assert (tmp_path / 'last_checkpoint').read_text() == 'x.pth'


def test_output_that_is_an_input_is_refused(tmp_path, monkeypatch):
    ckpt = tmp_path / 'd' / 'model.pth'
    ckpt.parent.mkdir()
    ckpt.write_bytes(b'weights')
    os.symlink(ckpt, tmp_path / 'link.pth')
    os.link(ckpt, tmp_path / 'hard.pth')
    monkeypatch.chdir(tmp_path)
    inputs = dict(config='cfg.py', checkpoint=str(ckpt))
    for out in (str(ckpt), 'd/../d/model.pth', 'link.pth', 'hard.pth'):
        with pytest.raises(OutputIsInputError) as e:
            check_outputs_not_inputs(dict(out=out), inputs)
        assert str(e.value) == (
            f'the output out {out} is the input checkpoint {ckpt}: writing '
            'it would destroy the input; choose another output path')
    # Not existing yet, same real path: still the input.
    with pytest.raises(OutputIsInputError, match='is the input config'):
        check_outputs_not_inputs(dict(out='./cfg.py'), inputs)
    check_outputs_not_inputs(dict(out='d/other.pth', none=None), inputs)
    check_outputs_not_inputs(dict(out='d/other.pth'), dict(results=None))
