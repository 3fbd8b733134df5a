# DDNN + EKD model skeleton: fill in backbone depth/sub_stage_blocks and the head's
# num_classes/in_channels. Every field below is a documented default.
model = dict(
    type='mmekd.DDNNClassifier',
    backbone=dict(
        type='mmekd.DepthDynamicResNet',
        depth=34,
        sub_stage_blocks=[[2, 2, 2, 2]],
        block_choice='first',      # which k blocks of a stage a sub-net keeps
        # BatchNorm weights shared by all nets, running statistics per net
        # ('shared': statistics shared too; 'private': weights private too)
        norm_sharing='stats',
        out_indices=(0, 1, 2, 3),  # all stages: attention distillation
    ),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='mmekd.MultiNetClsHead',
        num_classes=1000,
        in_channels=512,
        private_fc=False,          # one classifier shared by all nets
        loss=dict(type='CrossEntropyLoss', loss_weight=1.0),
    ),
    # EKD: full net (teacher) -> every sub-net (students), teacher detached.
    kl_loss=dict(type='mmekd.KLDivLoss', tau=4.0, loss_weight=1.0),
    at_loss=dict(
        type='mmekd.AttentionTransferLoss',
        p=2.0,
        mode='activation',
        loss_weight=10.0),
    at_stages=(0, 1, 2, 3),
    # Loss levers (docs/levers.md). Label-CE weight of every sub-net
    # (0: the sub-nets learn from distillation only) and of the full net.
    sub_ce_weight=1.0,
    full_loss_weight=1.0,
    # Nets trained per step: 'all'; 'sandwich' (full + smallest sub-net);
    # 'sandwich_random' (also one other sub-net, drawn from the runner's seed
    # and iteration: a resumed run draws the same). Evaluation runs all nets.
    train_nets='all',
    # KL on the teacher's top-k classes only (None: all classes).
    kl_topk=None,
    predict_net='full',
    eval_all_nets=True,
)
# Data-parallel training (tools/dist_train.sh): keep the memory-efficient
# step under DDP (per-net backwards, then one gradient all-reduce).
model_wrapper_cfg = dict(
    type='mmekd.DDNNDistributedDataParallel',
    broadcast_buffers=False,
    find_unused_parameters=False)
