# Copyright (c) mmekd contributors. All rights reserved.
"""Imported first by ``mmekd/__init__.py``: warnings filters that must be in
place before mmpretrain (and mmcv) are imported.

mmcv-lite ships no compiled ops, so importing ``mmcv.cnn`` (which mmpretrain
does) warns that ``MultiScaleDeformableAttention``, a detection op that no
mmekd model uses, is missing. Only that message is silenced. torch's advice
to use fewer DataLoader workers is shown once instead of for every loader.
"""
import warnings

warnings.filterwarnings(
    'ignore',
    message='Fail to import ``MultiScaleDeformableAttention``',
    category=UserWarning)


def _show_dataloader_advice_once(show):
    """Wrap ``warnings.showwarning``: torch's advice on DataLoader workers
    (more workers than CPUs) is shown once per process and text. torch gives
    it for every loader and iterator (train, val, test, each epoch), and a
    'once' filter cannot dedupe it: every change to the warning filters
    (MMEngine makes some) resets Python's record of warnings shown."""
    shown = set()

    def showwarning(message, category, filename, lineno, file=None,
                    line=None):
        text = str(message)
        if text.startswith('This DataLoader will create'):
            if text in shown:
                return
            shown.add(text)
        show(message, category, filename, lineno, file, line)

    showwarning.mmekd_wrapped = True
    return showwarning


if not getattr(warnings.showwarning, 'mmekd_wrapped', False):
    warnings.showwarning = _show_dataloader_advice_once(warnings.showwarning)
