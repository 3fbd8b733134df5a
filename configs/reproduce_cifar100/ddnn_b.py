# Reproduction row, bottleneck family: the DDNN of ddnn_b_ekd.py without
# distillation.
_base_ = ['./ddnn_b_ekd.py']
model = dict(kl_loss=None, at_loss=None)
