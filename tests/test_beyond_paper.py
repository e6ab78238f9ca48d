"""scripts/beyond_paper.py's report: the probe's choice and the stepwise-against-answer-only lines
come from the rows, whatever they hold."""


def row(task, trainer, distilled, seconds, target=0.5, kept=10):
    return {"task": task, "trainer": trainer, "kept": kept, "target_accuracy": target, "system1": 0.1,
            "system1_tokens": 5.0, "system2": 0.4, "system2_tokens": 30.0, "distilled": distilled,
            "distilled_tokens": 2.0, "train_seconds": seconds, "stepwise": None}


def test_the_reading_compares_the_two_trainers_of_each_task_and_flags_wrong_targets(script):
    b = script("beyond_paper")
    rows = [row("a", "lora", 0.40, 100), row("a", "stepwise", 0.50, 300),
            row("b", "lora", 0.20, 10, target=0.0, kept=4), row("b", "stepwise", 0.10, 10, target=0.0, kept=4),
            row("c", "lora", 0.30, 10)]  # no stepwise run yet: no line
    a, b_line = b.reading(rows)
    assert a == "- a: stepwise beats answer-only (50.0% against 40.0%, +10.0 points) in 3.0x the training time."
    assert "trails" in b_line and "-10.0 points" in b_line and "kept 4 inputs and none" in b_line


def test_the_probe_picks_the_largest_gain_and_says_when_there_is_none(script):
    b = script("beyond_paper")
    rows = [{"digits": d, "system1": s1, "system1_tokens": 5.0, "system2-cot": s2, "system2-cot_tokens": 40.0}
            for d, s1, s2 in ((2, 0.2, 0.0), (3, 0.0, 0.0))]  # an old probe: no `worked` key (columns)
    probe = {"rows": rows, "digits": 3}
    assert b.probe_gain(probe) == 0.0
    text = b.render({"command": "x", "date": "d", "commit": "c", "probe": probe})
    assert "Few-shot CoT beats System 1 at no digit count" in text and "| 2 | columns | 20.0 (5.0) |" in text
    rows.append({"worked": "place_value", "digits": 2, "system1": 0.2, "system1_tokens": 5.0,
                 "system2-cot": 0.5, "system2-cot_tokens": 40.0})
    text = b.render({"command": "x", "date": "d", "commit": "c",
                     "probe": {"rows": rows, "digits": 2, "worked": "place_value"}})
    assert "use 2 digits with `place_value` steps, the largest CoT gain (+30.0 points)." in text
