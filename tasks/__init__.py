"""lm-eval task files for s2d's tasks, one folder per task (YAML plus a one-line utils.py).

Installed as the package ``s2d.lm_eval_tasks``; point lm-eval at this folder with
``lm_eval --include_path $(s2d tasks-path) ...`` (or ``--include_path tasks`` in a checkout).
"""
