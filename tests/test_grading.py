"""Graders on tricky cases taken from the benchmarks' real answers; each asserts the exact verdict."""

import pytest

from cola.tasks import get_task
from cola.tasks.base import Sample
from cola.tasks.grading import extract_label, extract_math, extract_number, label_done, math_done, number_done

GSM8K = [  # (model output, gold, verdict)
    ("18", "18", True),
    ("$18", "18", True),
    ("18.0", "18", True),
    ("1,000", "1000", True),
    ("The answer is 70000.", "70000", True),
    ("540 meters", "540", True),
    ("49 - 27 = 22", "22", True),
    ("-5", "-5", True),
    ("- 5", "-5", True),
    ("-\xa05", "-5", True),  # a no-break space after the sign (a chain of SmolLM2 wrote one)
    ("$\t7", "7", True),
    ("5", "-5", False),
    ("0.5", "5", False),
    ("20 dollars\nso 30 in total", "20", True),  # only the first line holds the direct answer
    ("I don't know", "18", False),
    ("Answer: 3 apples and 4 pears", "3", True),
]

MATH = [
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}", True),
    ("\\boxed{1/2}", "\\frac12", True),
    ("\\boxed{0.5}", "\\frac{1}{2}", True),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{(3, \\pi/2)}", "\\left( 3, \\frac{\\pi}{2} \\right)", True),
    ("\\boxed{[2, 5)}", "[2,5)", True),
    ("\\boxed{(2, 5)}", "[2,5)", False),
    ("\\boxed{\\sqrt{18}}", "3\\sqrt{2}", True),
    ("\\boxed{1+2x}", "2x+1", True),
    ("\\boxed{10.0}", "10", True),
    ("\\boxed{6}", "5", False),
    ("The answer is \\boxed{\\dfrac{3}{4}}.", "\\frac{3}{4}", True),
    ("$x=4$", "4", True),
    ("no idea", "4", False),
]

MC = [  # (output, labels, gold, verdict)
    ("B", "ABCD", "B", True),
    ("(C)", "ABCD", "B", False),
    ("The answer is B.", "ABCD", "B", True),
    ("Answer: D", "ABCD", "D", True),
    ("3", "1234", "3", True),
    ("3. the moon", "1234", "4", False),
    ("E", "ABCDE", "E", True),
    ("Among the options", "ABCD", "A", False),  # the A of 'Among' is no label
    ("A plant needs light to grow.", "ABCD", "A", False),  # the article opening a sentence is no label
    ("A plant needs light, so the answer is B.", "ABCD", "B", True),
    ("It grows. A plant needs light.", "ABCD", "A", False),
    ("A. A plant needs light", "ABCD", "A", True),
    ("A) a plant", "ABCD", "A", True),
    ("A", "ABCD", "A", True),
    ("A B", "ABCD", "A", True),
    ("The answer is A plant", "ABCD", "A", True),  # not opening a sentence: the label
    ("A is not a correct option.", "ABCD", "A", True),  # a verb follows: the label, not the article
    ("A and C are both plants.", "ABCD", "A", True),
]


def _qa(name, gold):
    task = get_task(name)
    return task, Sample(id="x", question="q", gold=gold)


@pytest.mark.parametrize("output, gold, verdict", GSM8K)
def test_gsm8k(output, gold, verdict):
    task, sample = _qa("gsm8k", gold)
    assert task.grade(task.extract(output, sample), sample) is verdict


@pytest.mark.parametrize("output, gold, verdict", MATH)
def test_math(output, gold, verdict):
    task, sample = _qa("math", gold)
    assert task.grade(task.extract(output, sample), sample) is verdict


@pytest.mark.parametrize("output, labels, gold, verdict", MC)
def test_multiple_choice(output, labels, gold, verdict):
    task = get_task("arc_easy")
    sample = Sample(id="x", question="q", gold=gold, choices=tuple((lab, f"option {lab}") for lab in labels))
    assert task.grade(task.extract(output, sample), sample) is verdict


def test_early_stop_never_changes_the_answer():
    """is_done may fire only when no continuation could change the extracted answer."""
    full = "49 - 27 = 22\nThat is because 49 minus 27 is 22, not 11."
    for cut in range(len(full) + 1):
        if number_done(full[:cut]):
            assert extract_number(full[:cut]) == extract_number(full) == "22"
    text = "The answer is \\boxed{\\frac{3}{4}} and also \\boxed{5}"
    for cut in range(len(text) + 1):
        if math_done(text[:cut]):
            assert extract_math(text[:cut]) == extract_math(text) == "\\frac{3}{4}"
    labels = list("ABCD")
    for text in ["As I see it, C is right", "B) because", "A", "A plant needs light. B", "A  B", "A. A plant",
                 "Sure. A\nplant", "A is not a correct option.", "A pl", "A plant is green, B"]:
        for cut in range(len(text) + 1):
            if label_done(text[:cut], labels):
                assert extract_label(text[:cut], labels) == extract_label(text, labels)
    assert not label_done("A", labels)  # could still become 'Answer'
    assert not label_done("A ", labels)  # could still become the article of 'A plant'
    assert label_done("A plant needs light. B ", labels) and extract_label("A plant needs light. B ", labels) == "B"


@pytest.mark.parametrize(
    "output, gold, verdict",
    [("The capital of France is Paris.", "Paris", True), ("Parisian food", "Paris", False), ("42 units", "42", True),
     ("Lyon\nnot Paris", "Paris", False)],
)
def test_qa_jsonl(output, gold, verdict):
    task, sample = _qa("qa_jsonl", gold)
    assert task.grade(task.extract(output, sample), sample) is verdict
