from s2d.lmeval.tasks import bind
from s2d.tasks.mt_bench_judge import aggregate_inconsistent, aggregate_ratio  # noqa: F401

load, doc_to_text, doc_to_target, process_results = bind("mt_bench_judge")
