# Copyright (c) mmekd contributors. All rights reserved.
import os
import os.path as osp
import pickle
import re
import sys

import numpy as np
import pytest

import mmekd  # noqa: F401
from mmekd.datasets import load_cifar_batch
from mmekd.registry import DATASETS

sys.path.insert(0, osp.join(osp.dirname(__file__), '..', 'test_security'))
from payloads import python2_pickle  # noqa: E402


def write_fake_cifar100(root, per_class=4, num_classes=100, test=True,
                        protocol=None):
    """A CIFAR-100 folder in the standard pickle layout, image i of class c
    filled with the value (c + i) % 256 so images can be identified;
    ``protocol`` 'python2' writes the files as Python 2 did."""
    folder = os.path.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    labels = [c for i in range(per_class) for c in range(num_classes)]
    index = [i for i in range(per_class) for c in range(num_classes)]
    data = np.stack([
        np.full(3 * 32 * 32, (c + i) % 256, dtype=np.uint8)
        for c, i in zip(labels, index)
    ])
    files = ['train'] + (['test'] if test else [])
    meta = {'fine_label_names': [f'class{c}' for c in range(num_classes)]}
    for name, batch in [(n, {'data': data, 'fine_labels': labels})
                        for n in files] + [('meta', meta)]:
        with open(os.path.join(folder, name), 'wb') as f:
            if protocol == 'python2':
                f.write(python2_pickle(batch))
            else:
                pickle.dump(batch, f, protocol=protocol)
    return root


def build(**kwargs):
    return DATASETS.build(dict(type='mmekd.CIFAR100', **kwargs))


def test_local_files_no_md5_and_val_split(tmp_path):
    root = write_fake_cifar100(str(tmp_path), per_class=4)
    full = build(data_root=root)
    assert len(full) == 400
    train = build(data_root=root, val_per_class=1, subset='train')
    val = build(data_root=root, val_per_class=1, subset='val')
    assert len(train) == 300 and len(val) == 100
    # The held-out image of every class is its last one in file order
    # (index 3), and train keeps indices 0..2.
    val_values = {(d['gt_label'], int(d['img'][0, 0, 0])) for d in
                  (val.get_data_info(i) for i in range(len(val)))}
    assert val_values == {(c, (c + 3) % 256) for c in range(100)}
    train_values = {(d['gt_label'], int(d['img'][0, 0, 0])) for d in
                    (train.get_data_info(i) for i in range(len(train)))}
    assert not train_values & val_values
    small = build(data_root=root, val_per_class=1, subset='train',
                  max_per_class=2)
    assert len(small) == 200
    assert full.metainfo['classes'][:2] == ('apple', 'aquarium_fish')
    test = build(data_root=root, split='test')
    assert len(test) == 400


def test_missing_data_names_the_folder_and_variable(tmp_path):
    with pytest.raises(FileNotFoundError) as e:
        build(data_root=str(tmp_path / 'missing'))
    msg = str(e.value)
    assert 'is not a directory' in msg and "'cifar-100-python/'" in msg
    assert 'cifar-100-python.tar.gz' in msg
    assert 'CIFAR100_ROOT=/path/to/cifar100 python tools/train.py' in msg
    # An existing folder without the extracted archive in it.
    with pytest.raises(FileNotFoundError,
                       match="has no 'cifar-100-python/' folder.*"
                       r'\$CIFAR100_ROOT'):
        build(data_root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="'cifar-10-batches-py/'.*"
                       'dataset.data_root=PATH'):
        DATASETS.build(dict(type='mmekd.CIFAR10', data_root=str(tmp_path)))


def test_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match='data_root'):
        build(data_root=str(tmp_path / 'missing'))
    root = write_fake_cifar100(str(tmp_path / 'a'), test=False)
    with pytest.raises(FileNotFoundError, match='test'):
        build(data_root=root, split='test')
    with pytest.raises(ValueError, match='subset'):
        build(data_root=root, subset='holdout', val_per_class=1)
    with pytest.raises(ValueError, match='val_per_class > 0'):
        build(data_root=root, subset='val')
    with pytest.raises(ValueError, match='leaves no training image'):
        build(data_root=root, subset='train', val_per_class=4)
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        build(data_root=root, split='val')


class _Evil:

    def __reduce__(self):
        return (os.system, ('echo pwned > /dev/null', ))


def test_tampered_pickle_is_refused(tmp_path):
    root = write_fake_cifar100(str(tmp_path))
    with open(os.path.join(root, 'cifar-100-python', 'train'), 'wb') as f:
        pickle.dump({'data': _Evil(), 'fine_labels': []}, f)
    with pytest.raises(ValueError, match='refusing to unpickle'):
        build(data_root=root)


@pytest.mark.parametrize('protocol', [2, 'python2'])
def test_repacked_files_load(tmp_path, protocol):
    """Protocol 2 (Python 3 writes bytes as ``_codecs.encode``) and Python
    2's files (byte strings, dtype ``('u1', 0, 1)``) give the images and
    labels of the default protocol."""
    want = build(data_root=write_fake_cifar100(
        str(tmp_path / 'default'), per_class=2))
    got = build(data_root=write_fake_cifar100(
        str(tmp_path / 'repacked'), per_class=2, protocol=protocol))
    assert len(got) == len(want) == 200
    for i in (0, 57, 199):
        a, b = got.get_data_info(i), want.get_data_info(i)
        assert np.array_equal(a['img'], b['img']) and a['img'].flags.writeable
        assert a['gt_label'] == b['gt_label']
    assert got.get_data_info(57)['img'][0, 0, 0] == 57 % 100


def test_codecs_encode_is_only_protocol_2_bytes(tmp_path):
    import codecs

    from payloads import Reduce
    path = tmp_path / 'batch'
    for args in (('abc', 'rot13'), (b'abc', 'latin1'), ('\u0100', 'latin1'),
                 ('abc', )):
        path.write_bytes(pickle.dumps({'x': Reduce(codecs.encode, args)},
                                      protocol=2))
        with pytest.raises(ValueError, match=r'_codecs\.encode\(.* is not '
                           r"allowed: only _codecs\.encode\(text, 'latin1'\)"):
            load_cifar_batch(str(path))
    path.write_bytes(pickle.dumps({'x': b'\x00\xff', 'y': b''}, protocol=2))
    assert load_cifar_batch(str(path)) == {'x': b'\x00\xff', 'y': b''}


def test_wrong_rows_and_labels_name_the_file(tmp_path):
    """One line with the file, the 3072 bytes a row needs and what the
    file has (numpy's reshape error named neither)."""
    root = write_fake_cifar100(str(tmp_path), per_class=1)
    train = osp.join(root, 'cifar-100-python', 'train')
    with open(train, 'wb') as f:
        pickle.dump({'data': np.zeros((40, 3000), np.uint8),
                     'fine_labels': [0] * 40}, f)
    with pytest.raises(ValueError) as e:
        build(data_root=root)
    assert str(e.value) == (
        f"{train} is not a valid CIFAR pickle batch: 'data' must hold uint8 "
        'rows of 3072 bytes (one 3x32x32 image each; shape (N, 3072) or '
        '(N, 3, 32, 32)), found an array of shape (40, 3000) and dtype '
        'uint8')
    for data in (np.zeros((2, 3072), np.float32), np.zeros((2, 32, 32, 3),
                                                           np.uint8)):
        with open(train, 'wb') as f:
            pickle.dump({'data': data, 'fine_labels': [0, 1]}, f)
        with pytest.raises(ValueError, match=r"'data' must hold uint8 rows "
                           '.*found an array of shape ' +
                           re.escape(str(data.shape))):
            build(data_root=root)
    with open(train, 'wb') as f:
        pickle.dump({'data': np.zeros((3, 3072), np.uint8),
                     'fine_labels': [0, 1]}, f)
    with pytest.raises(ValueError, match=f'{train}: the labels must be a '
                       r'list of one int per image \(3 images\), found a '
                       'list of 2'):
        build(data_root=root)


@pytest.mark.slow
@pytest.mark.skipif(not osp.isfile(osp.join(
    os.environ.get('CIFAR100_ROOT', 'data/cifar100'), 'cifar-100-python',
    'train')), reason='no CIFAR-100 at $CIFAR100_ROOT')
def test_real_cifar100_reads_as_numpy_reads_it():
    """The real training file (a Python 2 pickle, 150 MB) gives what
    numpy's own unpickling gives."""
    path = osp.join(os.environ.get('CIFAR100_ROOT', 'data/cifar100'),
                    'cifar-100-python', 'train')
    got = load_cifar_batch(path)
    with open(path, 'rb') as f:
        want = pickle.load(f, encoding='latin1')  # a file we trust
    assert sorted(got) == sorted(want)
    assert got['data'].dtype == np.uint8 and got['data'].shape == (50000,
                                                                    3072)
    assert np.array_equal(got['data'], want['data'])
    assert all(got[k] == want[k] for k in want if k != 'data')


def test_digits_embedded_dataset():
    train = DATASETS.build(dict(type='mmekd.Digits', split='train'))
    val = DATASETS.build(dict(type='mmekd.Digits', split='val'))
    assert len(train) + len(val) == 1797
    assert len(val) == 355
    img = val.get_data_info(0)['img']
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    assert img.max() <= 255 and (img[..., 0] == img[..., 2]).all()
    labels = [val.get_data_info(i)['gt_label'] for i in range(len(val))]
    assert set(labels) == set(range(10))
    with pytest.raises(ValueError, match='split'):
        DATASETS.build(dict(type='mmekd.Digits', split='test'))


def test_in_memory_batches_equal_the_stock_pipeline(tmp_path):
    import torch
    from mmengine.dataset import default_collate
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner

    root = write_fake_cifar100(str(tmp_path), per_class=3)
    packed = dict(type='mmekd.CIFAR100', data_root=root, val_per_class=1,
                  subset='train', pipeline=[dict(type='PackInputs')])
    stock = DATASETS.build(packed)
    fast = DATASETS.build(dict(type='mmekd.InMemoryBatchDataset',
                               dataset=packed))
    assert len(fast) == len(stock) == 200
    assert fast.metainfo['classes'] == stock.metainfo['classes']
    indices = [5, 0, 199, 17]
    expected = default_collate([stock[i] for i in indices])
    batch = fast.__getitems__(indices)
    assert batch['inputs'].dtype == torch.uint8
    assert torch.equal(batch['inputs'], expected['inputs'])
    assert [int(s.gt_label) for s in batch['data_samples']] == [
        int(s.gt_label) for s in expected['data_samples']]
    single = fast[17]
    assert torch.equal(single['inputs'], stock[17]['inputs'])

    # Through MMEngine's dataloader builder (as the Runner, in the default
    # scope of our configs): every image once per epoch, whole batches.
    init_default_scope('mmpretrain')
    loader = Runner.build_dataloader(
        dict(batch_size=64, num_workers=0,
             sampler=dict(type='DefaultSampler', shuffle=True),
             collate_fn=dict(type='mmekd.batch_collate'),
             dataset=dict(type='mmekd.InMemoryBatchDataset',
                          dataset=packed)), seed=0)
    seen = []
    for batch in loader:
        assert batch['inputs'].shape[1:] == (3, 32, 32)
        assert len(batch['data_samples']) == len(batch['inputs'])
        # The batch path (``__getitems__``), not one sample at a time.
        assert any(batch['data_samples'][0] is s
                   for s in loader.dataset._data_samples)
        seen += [int(x) for x in batch['inputs'][:, 0, 0, 0]]
        labels = torch.cat([s.gt_label for s in batch['data_samples']])
        # Image i of class c holds (c + i) % 256, train keeps i in 0..1.
        assert all(int(v) - int(c) in (0, 1)
                   for v, c in zip(batch['inputs'][:, 0, 0, 0], labels))
    assert len(seen) == 200


def test_in_memory_batches_reject_cpu_augmentation(tmp_path):
    root = write_fake_cifar100(str(tmp_path), per_class=2)
    with pytest.raises(ValueError, match='RandomCrop'):
        DATASETS.build(dict(
            type='mmekd.InMemoryBatchDataset',
            dataset=dict(type='mmekd.CIFAR100', data_root=root,
                         pipeline=[dict(type='RandomCrop', crop_size=32,
                                        padding=4),
                                   dict(type='PackInputs')])))


def test_batch_collate_stacks_single_samples():
    import torch
    from mmpretrain.structures import DataSample

    from mmekd.datasets import batch_collate
    samples = [dict(inputs=torch.full((3, 2, 2), i, dtype=torch.uint8),
                    data_samples=DataSample().set_gt_label(i))
               for i in range(3)]
    batch = batch_collate(samples)
    assert batch['inputs'].shape == (3, 3, 2, 2)
    assert batch_collate(batch) is batch
    with pytest.raises(ValueError, match='empty'):
        batch_collate([])


class _Images:
    """A minimal dataset of given images (no pipeline)."""
    metainfo = dict(classes=('a', 'b'))

    def __init__(self, imgs):
        self.imgs = imgs

    def __len__(self):
        return len(self.imgs)

    def get_data_info(self, i):
        return dict(img=self.imgs[i], gt_label=i % 2)


@pytest.mark.parametrize('imgs, message', [
    ([], 'empty'),
    ([np.zeros((4, 4, 3), np.uint8),
      np.zeros((5, 4, 3), np.uint8)], 'one shape'),
    ([np.zeros((4, 4, 3), np.float32)] * 2, 'uint8'),
])
def test_in_memory_batches_reject_bad_images(imgs, message):
    from mmekd.datasets import InMemoryBatchDataset
    with pytest.raises(ValueError, match=message):
        InMemoryBatchDataset(_Images(imgs))


def test_in_memory_batches_grey_images():
    from mmekd.datasets import InMemoryBatchDataset
    ds = InMemoryBatchDataset(_Images([np.full((4, 4), i, np.uint8)
                                       for i in range(3)]))
    batch = ds.__getitems__([2, 0])
    assert batch['inputs'].shape == (2, 1, 4, 4)
    assert batch['inputs'][:, 0, 0, 0].tolist() == [2, 0]


def test_channel_order(tmp_path):
    folder = tmp_path / 'cifar-100-python'
    folder.mkdir()
    data = np.random.default_rng(0).integers(0, 256, (2, 3 * 32 * 32),
                                             dtype=np.uint8)
    for name in ('train', 'test'):
        with open(folder / name, 'wb') as f:
            pickle.dump({'data': data, 'fine_labels': [0, 1]}, f)
    rgb = build(data_root=str(tmp_path))
    bgr = build(data_root=str(tmp_path), channel_order='bgr')
    planes = data.reshape(2, 3, 32, 32)
    for i in range(2):
        # The file stores the R, G, B planes in that order.
        assert np.array_equal(rgb.get_data_info(i)['img'],
                              planes[i].transpose(1, 2, 0))
        assert np.array_equal(bgr.get_data_info(i)['img'],
                              planes[i, ::-1].transpose(1, 2, 0))
    with pytest.raises(ValueError, match="channel_order must be 'rgb' or "
                       "'bgr', got 'RGB'"):
        build(data_root=str(tmp_path), channel_order='RGB')
