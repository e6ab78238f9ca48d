"""Task plugins: data splits, the System 1 prompt, answer extraction and scoring for each task.

One module per task, each registered through the ``register_tasks`` hook like any plugin. Their
lm-eval task files live in the top-level ``tasks/`` folder (shipped as ``s2d.lm_eval_tasks``).
"""

from s2d.errors import TaskDataError
from s2d.tasks.base import Task, data_file, normalize, subset

__all__ = ["Task", "TaskDataError", "data_file", "normalize", "subset"]
