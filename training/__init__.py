"""Training: config -> strategy -> pipeline -> model -> `fit`, run directories, resume.

Entry points: `training.config.load_config`, `training.trainer.train`,
`training.pretrain.pretrain_backbone`. Model families plug in through
`training.families.FAMILIES`.
"""
