# Copyright (c) mmekd contributors. All rights reserved.
import pytest
import torch
import torch.nn.functional as F
from mmpretrain.structures import DataSample

from mmekd.models import GPUAugmentPreprocessor, random_pad_crop_flip
from mmekd.registry import MODELS


def _images(n=16, size=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=gen,
                         dtype=torch.uint8)


def test_crop_and_flip_match_per_image_reference():
    x = _images()
    gen = torch.Generator().manual_seed(3)
    out, offsets, flips = random_pad_crop_flip(
        x, padding=2, flip_prob=0.5, generator=gen)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = F.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        r, c = offsets[i].tolist()
        ref = padded[i, :, r:r + 8, c:c + 8]
        if flips[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref)
    # both branches and several positions are exercised
    assert 0 < int(flips.sum()) < len(x)
    assert len({tuple(o) for o in offsets.tolist()}) > 4
    assert offsets.min() >= 0 and offsets.max() <= 4


def test_no_padding_always_flip_and_crop_size():
    x = _images(n=4)
    out, offsets, flips = random_pad_crop_flip(x, padding=0, flip_prob=1.0)
    assert torch.equal(out, x.flip(-1)) and flips.all()
    assert not offsets.any()
    out, _, _ = random_pad_crop_flip(x, padding=0, crop_size=5,
                                     flip_prob=0.0)
    assert out.shape == (4, 3, 5, 5)
    with pytest.raises(ValueError, match='crop_size'):
        random_pad_crop_flip(x, padding=1, crop_size=11)


def _preprocessor(**kwargs):
    return MODELS.build(
        dict(
            type='mmekd.GPUAugmentPreprocessor',
            mean=[100.0] * 3,
            std=[50.0] * 3,
            num_classes=10,
            **kwargs))


def _data(x):
    return dict(
        inputs=x,
        data_samples=[
            DataSample().set_gt_label(i % 10) for i in range(len(x))
        ])


def test_preprocessor_augments_training_only_and_normalises():
    x = _images()
    pre = _preprocessor(padding=2, seed=7)
    plain = MODELS.build(
        dict(type='ClsDataPreprocessor', mean=[100.0] * 3, std=[50.0] * 3))
    # evaluation: exactly the plain preprocessor
    assert torch.equal(pre(_data(x), False)['inputs'],
                       plain(_data(x), False)['inputs'])
    # training: the plain normalisation of the augmented uint8 batch
    # (zero padding in pixel space, as RandomCrop(pad_val=0))
    aug, _, _ = random_pad_crop_flip(
        x, 2, generator=torch.Generator().manual_seed(7))
    got = _preprocessor(padding=2, seed=7)(_data(x), True)
    assert torch.equal(got['inputs'], plain(_data(aug), False)['inputs'])
    assert [int(s.gt_label) for s in got['data_samples']] == [
        i % 10 for i in range(len(x))
    ]


def test_preprocessor_seed_determinism_and_list_inputs():
    x = _images()
    a = _preprocessor(seed=1)
    b = _preprocessor(seed=1)
    c = _preprocessor(seed=2)
    out_a = [a(_data(x), True)['inputs'] for _ in range(2)]
    out_b = [b(_data(list(x)), True)['inputs'] for _ in range(2)]
    out_c = c(_data(x), True)['inputs']
    assert torch.equal(out_a[0], out_b[0]) and torch.equal(out_a[1], out_b[1])
    assert not torch.equal(out_a[0], out_a[1])  # a stream, not a fixed crop
    assert not torch.equal(out_a[0], out_c)


def test_bad_arguments():
    with pytest.raises(ValueError, match='padding'):
        GPUAugmentPreprocessor(padding=-1)
    with pytest.raises(ValueError, match='flip_prob'):
        GPUAugmentPreprocessor(flip_prob=2)
    with pytest.raises(ValueError, match='crop_size'):
        GPUAugmentPreprocessor(crop_size=0)
