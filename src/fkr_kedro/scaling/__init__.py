"""The scaling study of quantized accuracy (Zhou et al., arXiv 2508.18609), one package:

* :mod:`.config`: the typed ``scaling`` parameters, checked before anything is trained;
* :mod:`.sweep`: the tasks, training each model size, and the resumable sweep of GPTQ points;
* :mod:`.fit`: the task-stratified law fitted per task, bootstrap intervals and the conclusion.

Its Kedro datasets are in :mod:`fkr_kedro.datasets.scaling_sweep`, its figure in
:func:`fkr_kedro.reporting.figures.scaling_predicted_vs_observed`, its nodes in
:mod:`fkr_kedro.pipelines.scaling`.
"""
