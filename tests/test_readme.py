# Copyright (c) mmekd contributors. All rights reserved.
"""Every fenced block of README.md is run or checked.

- ``python`` blocks run in a fresh interpreter (as a user pastes them), or,
  when the first line names a config (``# configs/x.py``), must be that
  file's code;
- ``bash`` blocks: each command's scripts and config files exist, its flags
  parse with the tool's own parser, its ``--cfg-options`` keys exist in the
  config, and the test that runs it for real (long runs) exists;
- ``bibtex`` blocks are well-formed entries.
"""
import ast
import os
import os.path as osp
import re
import shlex
import subprocess
import sys

import pytest
from mmengine.config import Config
from tool_loader import REPO, load_tool

README = osp.join(REPO, 'README.md')
# Docs written alongside this README and merged with it.
MERGED_LATER = set()
# Script -> the test that runs it end to end (the README's long runs) and
# what that test's source shows of it. dist_train.sh is torchrun +
# tools/train.py --launcher pytorch, which the DDP test runs directly.
RUN_BY = {
    'tools/train.py': ('tests/test_tools/test_train_test_smoke.py',
                       "'train.py'"),
    'tools/test.py': ('tests/test_tools/test_train_test_smoke.py',
                      "'test.py'"),
    'tools/export_subnet.py': ('tests/test_tools/test_export_stock_only.py',
                               "tool_path('export_subnet')"),
    'tools/deploy/export_onnx.py': ('tests/test_tools/test_onnx_export.py',
                                    "'deploy/export_onnx'"),
    'tools/dist_train.sh': ('tests/test_tools/test_train_dist.py',
                            "'torch.distributed.run'"),
    'tools/reproduce_cifar100.py': (
        'tests/test_tools/test_reproduce_cifar100.py',
        "load_tool('reproduce_cifar100')"),
    'tools/compare.py': ('tests/test_tools/test_compare.py',
                         "tool_path('compare')"),
}


def readme_blocks():
    text = open(README).read()
    return [(m[1], m[2]) for m in re.finditer(
        r'^```(\w*)\n(.*?)^```$', text, re.M | re.S)]


def bash_commands(block):
    """Commands of a bash block: continuations joined, comments dropped,
    ``a && b`` split."""
    text = block.replace('\\\n', ' ')
    cmds = []
    for line in text.splitlines():
        line = line.split('#', 1)[0].strip() if line.lstrip().startswith(
            '#') else line.strip()
        if line:
            cmds += [c.strip() for c in line.split('&&')]
    return cmds


def blocks_of(lang):
    return [b for lg, b in readme_blocks() if lg == lang]


def test_every_block_has_a_known_language():
    langs = [lang for lang, _ in readme_blocks()]
    assert set(langs) <= {'bash', 'python', 'bibtex'}, langs
    assert langs.count('bash') >= 3 and langs.count('python') >= 2


def _setup_extras():
    tree = ast.parse(open(osp.join(REPO, 'setup.py')).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and getattr(
                node.targets[0], 'id', '') == 'extras_require':
            return ast.literal_eval(node.value)
    raise AssertionError('setup.py has no extras_require')


def _check_cfg_options(config, options):
    cfg = Config.fromfile(osp.join(REPO, config))
    for opt in options:
        key = opt.split('=', 1)[0]
        node = cfg
        for part in key.split('.'):
            assert part in node, f'--cfg-options {opt}: {config} has no {key}'
            node = node[part]


def _check_python_tool(script, args, monkeypatch):
    tool = load_tool(script[len('tools/'):-len('.py')])
    monkeypatch.setattr(sys, 'argv', [script] + args)
    try:
        parsed = tool.parse_args()
    except TypeError:  # parse_args(argv)
        parsed = tool.parse_args(args)
    config = getattr(parsed, 'config', None)
    if config is not None:
        assert osp.isfile(osp.join(REPO, config)), config
        if getattr(parsed, 'cfg_options', None):
            _check_cfg_options(config, [
                a for a in args[args.index('--cfg-options') + 1:]
                if not a.startswith('--')
            ])
    return parsed


def check_command(cmd, monkeypatch):
    words = shlex.split(cmd)
    while re.match(r'^[A-Z_][A-Z0-9_]*=', words[0]):
        words.pop(0)  # VAR=value prefix
    if words[:2] == ['pip', 'install']:
        spec = words[-1]
        assert spec.startswith('-e') or words[2] == '-e', cmd
        extras = re.findall(r'\[(\w+)\]', spec)
        for extra in extras:
            assert extra in _setup_extras(), cmd
        return
    if words[:3] == ['python', '-m', 'pytest']:
        assert all(osp.exists(osp.join(REPO, w)) for w in words[3:]), cmd
        return
    if words[0] == 'python':
        script, args = words[1], words[2:]
        assert osp.isfile(osp.join(REPO, script)), cmd
        _check_python_tool(script, args, monkeypatch)
    elif words[0] == 'bash':
        script, args = words[1], words[2:]
        assert osp.isfile(osp.join(REPO, script)), cmd
        assert osp.isfile(osp.join(REPO, args[0])), cmd  # config
        assert args[1].isdigit(), cmd  # GPUs
    else:
        raise AssertionError(f'README command not checked: {cmd}')
    test_file, marker = RUN_BY[script]
    assert marker in open(osp.join(REPO, test_file)).read(), (script,
                                                              test_file)


def test_bash_commands_parse(monkeypatch, tmp_path):
    # Commands run from a clone with CIFAR-100 in data/cifar100 (tiny fake):
    # reproduce_cifar100.py checks its --data-root while parsing.
    from test_datasets.test_cifar import write_fake_cifar100
    write_fake_cifar100(str(tmp_path / 'data' / 'cifar100'), per_class=1)
    monkeypatch.chdir(tmp_path)
    cmds = [c for b in blocks_of('bash') for c in bash_commands(b)]
    assert len(cmds) >= 9
    scripts = set()
    for cmd in cmds:
        check_command(cmd, monkeypatch)
        scripts.add(shlex.split(cmd)[0])
    assert 'python' in scripts and 'pip' in scripts


def test_command_checks_catch_mistakes(monkeypatch):
    with pytest.raises(AssertionError, match='no model.kl_los'):
        check_command(
            'python tools/train.py configs/ddnn_r34_cifar100.py '
            '--cfg-options model.kl_los=None', monkeypatch)
    with pytest.raises(SystemExit):  # argparse: unknown flag
        check_command('python tools/train.py configs/ddnn_demo_digits.py '
                      '--no-such-flag', monkeypatch)
    with pytest.raises(AssertionError):
        check_command('python tools/train.py configs/no_such.py',
                      monkeypatch)


def test_config_blocks_are_the_files():
    checked = 0
    for block in blocks_of('python'):
        first, _, code = block.partition('\n')
        m = re.match(r'# (configs/\S+\.py)$', first)
        if not m:
            continue
        lines = [
            line for line in open(osp.join(REPO, m[1])).read().splitlines()
            if not line.startswith('#')
        ]
        assert code.strip() == '\n'.join(lines).strip(), m[1]
        checked += 1
    assert checked >= 1


def test_python_blocks_run_as_pasted(tmp_path):
    runnable = [
        b for b in blocks_of('python')
        if not re.match(r'# configs/\S+\.py\n', b)
    ]
    assert runnable
    for i, block in enumerate(runnable):
        script = tmp_path / f'block{i}.py'
        script.write_text(block)
        proc = subprocess.run(
            [sys.executable, str(script)], cwd=REPO, capture_output=True,
            text=True, timeout=300,
            env=dict(os.environ, OMP_NUM_THREADS='1',
                     PYTHONPATH=REPO + os.pathsep +
                     os.environ.get('PYTHONPATH', '')))
        assert proc.returncode == 0, block + proc.stderr[-3000:]
        if 'list_models' in block:
            assert 'ddnn-ekd_resnet34-w16-sub0-resnet18_1xb64_digits' in \
                proc.stdout


def test_bibtex_blocks():
    for block in blocks_of('bibtex'):
        keys = re.findall(r'^@\w+\{(\w+),', block, re.M)
        assert keys == ['zhao2021ddnn', 'taha2021knowledge']
        assert block.count('{') == block.count('}')
        for field in ('title', 'author', 'year'):
            assert len(re.findall(rf'\b{field}=', block)) == len(keys), field


def test_readme_is_the_front_door():
    text = open(README).read()
    assert len(text.splitlines()) <= 300
    assert '## Reliability\n' in text and '](docs/reliability.md)' in text
    for link in re.findall(r'\]\(([^)#:]+)\)', text):
        assert osp.exists(osp.join(REPO, link)) or link in MERGED_LATER, link
    for link in MERGED_LATER:
        assert f']({link})' in text, link


@pytest.mark.parametrize('doc', ['README.md'] + sorted(
    f'docs/{f}' for f in os.listdir(osp.join(REPO, 'docs'))
    if f.endswith('.md')))
def test_docs_speak_of_the_project_only(doc):
    text = open(osp.join(REPO, doc)).read()
    for word in ('session', ' lent ', 'device time', 'GPU time'):
        assert word not in text, (doc, word)
