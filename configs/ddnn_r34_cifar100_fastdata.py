# DDNN + EKD on CIFAR-100 (as ddnn_r34_cifar100.py) with the fast data path
# for small datasets on a GPU: training batches gathered from memory in the
# main process (mmekd.InMemoryBatchDataset, no workers, no per-sample
# pipeline) and pad 4 + random crop 32 + horizontal flip done on the device
# for the whole batch (mmekd.GPUAugmentPreprocessor): the same recipe as the
# stock pipeline of ddnn_r34_cifar100.py. See docs/performance.md.
_base_ = ['./ddnn_r34_cifar100.py']

data_preprocessor = dict(
    type='mmekd.GPUAugmentPreprocessor', padding=4, flip_prob=0.5)
train_dataloader = dict(
    num_workers=0,
    persistent_workers=False,
    collate_fn=dict(type='mmekd.batch_collate'),
    dataset=dict(
        _delete_=True,
        type='mmekd.InMemoryBatchDataset',
        dataset=dict(
            type='mmekd.CIFAR100',
            data_root={{_base_.data_root}},
            split='train',
            val_per_class=50,
            subset='train',
            pipeline=[dict(type='PackInputs')])))
env_cfg = dict(cudnn_benchmark=True)
