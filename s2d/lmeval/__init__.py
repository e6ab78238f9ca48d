"""Everything that touches lm-evaluation-harness: the glue its task files call (``tasks.py``),
the ``s2d`` LM that routes requests through a method and backend (``model.py``), and the runner
behind ``s2d eval`` (``run.py``). lm_eval is imported only inside these modules."""
