# Copyright (c) mmekd contributors. All rights reserved.
"""Data-parallel training on CPU (gloo) through MMEngine's Runner.

MMEngine 0.10.7 cannot run ``--launcher pytorch`` without a GPU: its
``_init_dist_pytorch`` always calls ``torch.cuda.set_device(local_rank)`` and
``Runner.wrap_model`` gives ``MMDistributedDataParallel`` ``device_ids=
[LOCAL_RANK]``, which DDP refuses for a CPU module. The Runner only calls
``init_dist`` when no process group exists yet (``Runner.setup_env``), so
initialising the group ourselves and wrapping with ``device_ids=None`` is
enough; nothing of MMEngine is patched.
"""
import datetime
import os
from typing import Optional

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.logging import print_log

_TORCHRUN_ENV = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
                 'MASTER_PORT')


def setup_cpu_distributed(cfg: Config,
                          cuda_available: Optional[bool] = None) -> bool:
    """Prepare ``cfg`` (in place) for DDP on CPU when launched by torchrun.

    Does nothing unless ``cfg.launcher == 'pytorch'`` and there is no CUDA
    device. Otherwise it

    - initialises the default process group with the ``gloo`` backend from
      torchrun's environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
      ``MASTER_PORT``) and ``env_cfg.dist_cfg.timeout`` (seconds);
    - sets ``cfg.model_wrapper_cfg`` so that the model is wrapped in
      ``MMDistributedDataParallel`` (or the configured DDP subclass) with
      ``device_ids=None``, as DDP requires for a CPU module. Top-level
      ``find_unused_parameters`` is carried over.

    Args:
        cfg (Config): The training config, after the command-line flags
            have been merged (``cfg.launcher`` set).
        cuda_available (bool, optional): Override CUDA detection (tests).

    Returns:
        bool: Whether the CPU path was taken.
    """
    if cfg.get('launcher', 'none') != 'pytorch':
        return False
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if cuda_available:
        return False  # MMEngine's own NCCL/CUDA path
    missing = [k for k in _TORCHRUN_ENV if k not in os.environ]
    if missing:
        raise RuntimeError(
            f'--launcher pytorch needs the environment torchrun sets; '
            f'{missing} are missing. Start with tools/dist_train.sh CONFIG '
            'NPROC or torchrun --nproc_per_node=N tools/train.py CONFIG '
            '--launcher pytorch')

    dist_cfg = dict((cfg.get('env_cfg') or {}).get('dist_cfg') or {})
    backend = dist_cfg.pop('backend', 'gloo')
    if backend != 'gloo':
        print_log(
            f'env_cfg.dist_cfg.backend={backend!r} needs GPUs; no CUDA '
            'device is available, so the CPU backend gloo is used',
            logger='current')
    timeout = dist_cfg.pop('timeout', None)
    if timeout is not None:
        dist_cfg['timeout'] = datetime.timedelta(seconds=timeout)
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(
            backend='gloo',
            rank=int(os.environ['RANK']),
            world_size=int(os.environ['WORLD_SIZE']),
            **dist_cfg)

    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    # DDP of a CPU module takes no device ids (Runner.wrap_model would
    # pass [LOCAL_RANK] by default); an explicit None wins over its default.
    wrapper['device_ids'] = None
    wrapper['output_device'] = None
    cfg.model_wrapper_cfg = wrapper
    return True
