from s2d.lmeval.tasks import bind, mean_ignore_none  # noqa: F401

load, doc_to_text, doc_to_target, process_results = bind("triviaqa_bias")
