# Copyright (c) mmekd contributors. All rights reserved.
"""Check the classes of the data against the classifier's outputs."""
from typing import Optional, Sequence, Tuple

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper

from mmekd.registry import HOOKS
from mmekd.utils.refusal import RefusalError


class ClassCountError(RefusalError, ValueError):
    """The data has more classes than the classifier has outputs."""


def dataset_classes(dataset) -> Tuple[Optional[int], str]:
    """How many classes ``dataset`` has, and where that was read.

    The ``classes`` of its metainfo (for MMPretrain's ``CustomDataset`` on
    class folders, the folder names), else the largest label + 1.

    Returns:
        tuple: ``(count, description)``; ``(None, '')`` if the dataset says
        neither.
    """
    classes = (getattr(dataset, 'metainfo', None) or {}).get('classes')
    name = type(dataset).__name__
    if classes:
        shown = ', '.join(map(str, list(classes)[:6])) + (
            ', ...' if len(classes) > 6 else '')
        return len(classes), f'{name} with classes [{shown}]'
    labels = getattr(dataset, 'get_gt_labels', None)
    if labels is None:
        return None, ''
    labels = list(labels())
    if not labels:
        return None, ''
    return int(max(labels)) + 1, f'{name} with labels up to {max(labels)}'


def _topk(evaluator) -> Sequence[int]:
    metrics = getattr(evaluator, 'metrics', None) or []
    return sorted({int(k) for m in metrics
                   for k in (getattr(m, 'topk', None) or ())})


@HOOKS.register_module()
class ClassCountHook(Hook):
    """Compare ``model.head.num_classes`` with the classes of every dataset
    the run reads, once per dataloader, before its first batch.

    - Fewer outputs than classes in the data: :class:`ClassCountError`
      (the head cannot predict some classes; labels past its range fail).
    - More outputs than classes: a warning naming the top-k accuracies that
      become meaningless (with k at least the number of classes in the data,
      every image counts as a hit once the absent classes rank last).

    A model without ``head.num_classes`` or a dataset that names neither
    its classes nor its labels is not checked. In the default runtime as
    ``default_hooks.class_count``.

    Example::

        default_hooks = dict(class_count=dict(type='mmekd.ClassCountHook'))
    """

    priority = 'VERY_HIGH'

    def __init__(self) -> None:
        self._checked = set()

    def before_train(self, runner) -> None:
        self._check(runner, 'train_dataloader', runner.train_dataloader,
                    None)

    def before_val(self, runner) -> None:
        self._check(runner, 'val_dataloader', runner.val_dataloader,
                    runner.val_evaluator)

    def before_test(self, runner) -> None:
        self._check(runner, 'test_dataloader', runner.test_dataloader,
                    runner.test_evaluator)

    def _check(self, runner, key: str, loader, evaluator) -> None:
        if key in self._checked:
            return
        self._checked.add(key)
        model = runner.model.module if is_model_wrapper(
            runner.model) else runner.model
        outputs = getattr(getattr(model, 'head', None), 'num_classes', None)
        count, what = dataset_classes(getattr(loader, 'dataset', None))
        if not isinstance(outputs, int) or count is None or count == outputs:
            return
        if outputs < count:
            raise ClassCountError(
                f'{key}: the data has {count} classes ({what}), but '
                f'model.head.num_classes={outputs}: the head cannot '
                f'predict {count - outputs} of them. Set '
                f'model.head.num_classes={count} (and '
                f'data_preprocessor.num_classes; the custom-folder config '
                f'takes NUM_CLASSES={count})')
        meaningless = [k for k in _topk(evaluator) if k >= count]
        runner.logger.warning(
            f'{key}: model.head.num_classes={outputs}, but the data has '
            f'only {count} classes ({what}). ' + (
                ', '.join(f'top-{k}' for k in meaningless) +
                f' {"is" if len(meaningless) == 1 else "are"} meaningless '
                f'here: with k >= {count} classes every image counts as a '
                'hit once the absent classes rank last. '
                if meaningless else '') +
            f'Set model.head.num_classes={count} (the custom-folder config '
            f'takes NUM_CLASSES={count}).')
