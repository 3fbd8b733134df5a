# Knowledge Evolution on a DDNN: the quick-start digits demo (a narrow CIFAR
# ResNet-34 [3,4,6,3] with ResNet-18 [2,2,2,2] and ResNet-10 [1,1,1,1] inside,
# trained with EKD) for 3 generations x 4 epochs with one KELS split (s=0.5)
# of the shared weights. One run gives six nets: the dense full/sub0/sub1 and
# their slim (half-width) networks, each extractable with
# tools/extract_slim.py ... --net NET.
_base_ = ['../ddnn_demo_digits.py']

train_cfg = dict(
    _delete_=True, type='mmekd.KnowledgeEvolutionTrainLoop',
    val_interval=100)
param_scheduler = None  # the hook's generation_schedule, every generation
custom_hooks = [
    dict(
        type='mmekd.KnowledgeEvolutionHook',
        num_generations=3,
        epochs_per_generation=4,
        generation_schedule=[
            dict(type='LinearLR', start_factor=0.1, by_epoch=True, begin=0,
                 end=1, convert_to_iter_based=True),
            dict(type='CosineAnnealingLR', by_epoch=True, begin=1),
        ],
        split_mode='kels',
        split_rate=0.5,
        seed=0),
]
default_hooks = dict(checkpoint=dict(interval=4, max_keep_ckpts=1))
