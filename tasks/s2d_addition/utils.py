from s2d.lmeval.tasks import bind

load, doc_to_text, doc_to_target, process_results = bind("addition")
