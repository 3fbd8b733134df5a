# Copyright (c) mmekd contributors. All rights reserved.
from .attention_transfer_loss import AttentionTransferLoss, attention_map
from .ekd_loss import EKDLoss
from .kl_div_loss import KLDivLoss

__all__ = ['KLDivLoss', 'AttentionTransferLoss', 'attention_map', 'EKDLoss']
