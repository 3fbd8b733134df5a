# Copyright (c) mmekd contributors. All rights reserved.
import os
import pickle

import numpy as np
import pytest

import mmekd  # noqa: F401
from mmekd.registry import DATASETS


def write_fake_cifar100(root, per_class=4, num_classes=100, test=True):
    """A CIFAR-100 folder in the standard pickle layout, image i of class c
    filled with the value (c + i) % 256 so images can be identified."""
    folder = os.path.join(root, 'cifar-100-python')
    os.makedirs(folder, exist_ok=True)
    labels = [c for i in range(per_class) for c in range(num_classes)]
    index = [i for i in range(per_class) for c in range(num_classes)]
    data = np.stack([
        np.full(3 * 32 * 32, (c + i) % 256, dtype=np.uint8)
        for c, i in zip(labels, index)
    ])
    files = ['train'] + (['test'] if test else [])
    for name in files:
        with open(os.path.join(folder, name), 'wb') as f:
            pickle.dump({'data': data, 'fine_labels': labels}, f)
    with open(os.path.join(folder, 'meta'), 'wb') as f:
        pickle.dump(
            {'fine_label_names': [f'class{c}' for c in range(num_classes)]},
            f)
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
