# Copyright (c) mmekd contributors. All rights reserved.
"""A CheckpointHook whose files are never left half-written."""
import os
import os.path as osp
import re
from contextlib import contextmanager

from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from mmekd.registry import HOOKS
from mmekd.utils.atomic_save import atomic_write, fsync_and_replace
from mmekd.utils.finite import check_finite
from mmekd.vocabulary import unwrap_model

# What an interrupted save leaves: ``<name>.pth.tmp`` (a checkpoint) and
# ``last_checkpoint.tmp<pid>``.
_STALE_TMP = re.compile(r'(\.pth\.tmp|^last_checkpoint\.tmp\d+)$')


def save_checkpoint_atomically(runner, out_dir: str, filename: str,
                               **kwargs) -> None:
    """``runner.save_checkpoint(out_dir, filename, **kwargs)`` to a temp file
    that is fsynced and renamed to ``filename`` (a local ``out_dir``).

    Raises:
        NonFiniteStateError: The model holds NaN or infinite values; nothing
            is written.
    """
    model = unwrap_model(runner.model)
    check_finite(
        model.state_dict(), f'The model at iteration {runner.iter}',
        advice=f'Not saving {filename}: training diverged. Resume from '
        'an earlier checkpoint with a lower learning rate or gradient '
        'clipping.')
    tmp_name = f'{filename}.tmp'
    # The class's method: AtomicCheckpointHook routes runner.save_checkpoint
    # of the best checkpoint here.
    type(runner).save_checkpoint(runner, out_dir, tmp_name, **kwargs)
    if is_main_process():  # save_checkpoint is master-only
        fsync_and_replace(
            osp.join(out_dir, tmp_name), osp.join(out_dir, filename))


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` that survives being killed.

    MMEngine 0.10.7 writes a checkpoint in place (``LocalBackend.put``), so a
    crash during the write leaves a truncated ``epoch_N.pth``/``iter_N.pth``.
    It also deletes the oldest checkpoint (``max_keep_ckpts``) *before*
    writing the new one and only then updates ``last_checkpoint``, so a
    crash in between leaves ``last_checkpoint`` naming a deleted file and
    ``--resume`` fails. This hook, for local directories:

    1. writes every checkpoint (regular and ``save_best``) to
       ``<name>.tmp``, fsyncs it and renames it over ``<name>``;
    2. rewrites ``last_checkpoint`` the same way;
    3. removes outdated checkpoints only after 1 and 2, and the previous
       best checkpoint only after the new best one is complete;
    4. refuses to save a model whose parameters or buffers hold NaN or
       infinite values (:class:`mmekd.utils.finite.NonFiniteStateError`,
       naming the tensors), so a diverged model is never kept as a
       checkpoint, let alone as the best one;
    5. removes temp files an interrupted save left behind when training
       (re)starts.

    So at any moment ``last_checkpoint`` names a complete file, and a best
    checkpoint exists once one was saved. Remote
    back-ends (``backend_args``/``s3://``...) keep MMEngine's behaviour.
    Arguments are those of :class:`CheckpointHook`.
    """

    def _is_local(self) -> bool:
        return isinstance(self.file_backend, LocalBackend)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not (self._is_local() and is_main_process()):
            return
        for folder in {self.out_dir, runner.work_dir}:
            if not osp.isdir(folder):
                continue
            for name in sorted(os.listdir(folder)):
                if _STALE_TMP.search(name):
                    os.remove(osp.join(folder, name))
                    print_log(
                        f'Removed {osp.join(folder, name)}, left by a save '
                        'that was interrupted', logger='current')

    def _save_atomic(self, runner, filename: str, **kwargs) -> None:
        """``runner.save_checkpoint(out_dir, filename)`` via a temp file."""
        save_checkpoint_atomically(runner, self.out_dir, filename, **kwargs)

    @contextmanager
    def _atomic_runner_saves(self, runner):
        """Route the parent's direct ``runner.save_checkpoint`` calls (the
        best checkpoint) through :meth:`_save_atomic`."""

        def save(out_dir, filename, *args, **kwargs):
            assert out_dir == self.out_dir
            names = ('file_client_args', )
            kwargs.update(zip(names, args))
            self._save_atomic(runner, filename, **kwargs)

        runner.save_checkpoint = save
        try:
            yield
        finally:
            del runner.save_checkpoint  # back to the class's method

    @contextmanager
    def _deferred_removals(self):
        """Collect the parent's removals of the previous best checkpoint
        (it removes before it saves) and carry them out afterwards."""
        removed = []
        backend = self.file_backend
        backend.remove = removed.append
        try:
            yield
        finally:
            del backend.remove  # back to the class's method
        # Only reached when the new best checkpoint was saved.
        current = {getattr(self, 'best_ckpt_path', None),
                   *getattr(self, 'best_ckpt_path_dict', {}).values()}
        for path in removed:
            if path not in current and osp.isfile(path):
                os.remove(path)

    def _save_best_checkpoint(self, runner, metrics) -> None:
        if not self._is_local():
            return super()._save_best_checkpoint(runner, metrics)
        with self._deferred_removals(), self._atomic_runner_saves(runner):
            super()._save_best_checkpoint(runner, metrics)

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._is_local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        # Same bookkeeping as CheckpointHook (the saved message hub already
        # lists the new file in keep_ckpt_ids), but delete after saving.
        outdated = None
        if self.max_keep_ckpts > 0 and not (
                self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))

        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir,
                                                     ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        self._save_atomic(
            runner,
            ckpt_filename,
            file_client_args=self.file_client_args,
            save_optimizer=self.save_optimizer,
            save_param_scheduler=self.save_param_scheduler,
            meta=meta,
            by_epoch=self.by_epoch,
            backend_args=self.backend_args,
            **self.args)
        if not is_main_process():
            return
        atomic_write(
            osp.join(runner.work_dir, 'last_checkpoint'), self.last_ckpt)
        if outdated is not None:
            path = osp.join(self.out_dir, self.filename_tmpl.format(outdated))
            if osp.isfile(path):
                os.remove(path)
