# Copyright (c) mmekd contributors. All rights reserved.
"""A runner for testing that writes only into its own folder."""
import os.path as osp

from mmengine.dist import master_only

from .console import SetupToLogFileRunner


class EvalRunner(SetupToLogFileRunner):
    """:class:`SetupToLogFileRunner` that dumps its config into its own
    timestamped log folder (``work_dir/<timestamp>/``) instead of
    ``work_dir``.

    MMEngine's runner writes ``work_dir/<config name>``: testing a
    checkpoint in the work dir of the run that trained it would overwrite
    the training config saved there (with its ``--cfg-options``). A test
    creates nothing outside its log folder but what it is asked to
    (``--out``).

    Example::

        runner = EvalRunner.from_cfg(cfg)
        runner.test()  # config in work_dir/<timestamp>/<config name>
    """

    @master_only
    def dump_config(self) -> None:
        name = (osp.basename(self.cfg.filename)
                if self.cfg.filename is not None else f'{self.timestamp}.py')
        self.cfg.dump(osp.join(self.log_dir, name))
