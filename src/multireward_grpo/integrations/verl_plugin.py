"""Import hook for verl: ``VERL_USE_EXTERNAL_MODULES=multireward_grpo.integrations.verl_plugin``.

verl imports the modules named in that variable in every process that
imports verl (the driver, the Ray actor running the trainer, the workers);
this one registers our estimators (``mr_na``, ``mr_an``, ``mr_single``,
``mr_gdpo``) and applies the hook that hands them the reward components.
See :mod:`multireward_grpo.integrations.verl` for the recipe.
"""

from multireward_grpo.integrations.verl import install

install()
