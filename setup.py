# Copyright (c) mmekd contributors. All rights reserved.
"""Install mmekd: ``pip install -e .`` (add ``[tests]`` for the test suite)."""
import os.path as osp
from importlib import metadata

from setuptools import find_packages, setup


def read_version() -> str:
    scope = {}
    with open(osp.join('mmekd', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), scope)
    return scope['__version__']


def mmcv_requirement() -> str:
    """Full ``mmcv`` where a user already has it, else ``mmcv-lite``.

    Both install the same ``mmcv`` package (mmcv-lite lacks the compiled
    ops, which MMPretrain does not need); installing mmcv-lite over a full
    mmcv would replace its files.
    """
    try:
        metadata.version('mmcv')
        return 'mmcv>=2.0.0,<2.4.0'
    except metadata.PackageNotFoundError:
        return 'mmcv-lite>=2.0.0,<2.4.0'


install_requires = [
    'torch>=2.0',
    'torchvision',
    'numpy',
    'mmengine>=0.10.7,<1.0.0',
    mmcv_requirement(),
    'mmpretrain>=1.2.0,<1.3.0',
    # The demo's embedded dataset: scikit-learn ships real handwritten digits.
    'scikit-learn',
    # mmengine's analysis tools and the cost plot.
    'matplotlib',
]

extras_require = {
    'tests': ['pytest', 'onnx', 'onnxruntime'],
    'onnx': ['onnx', 'onnxruntime'],
}

setup(
    name='mmekd',
    version=read_version(),
    description='Depth-level dynamic networks with Embedded Knowledge '
    'Distillation and Knowledge Evolution for MMPretrain',
    long_description=open('README.md').read() if osp.exists('README.md')
    else '',
    long_description_content_type='text/markdown',
    license='Apache License 2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests', 'demo')),
    include_package_data=True,
    python_requires='>=3.8',
    install_requires=install_requires,
    extras_require=extras_require,
    zip_safe=False,
)
