"""The reference answer check's verdicts on a corpus of tricky answers, as a test fixture.

The Parallel-R1 code scores accuracy with its copy of verl's `math_dapo.compute_score`: the
response is decoded without special tokens (so the six tags are gone), its last 300 characters are
searched with `(?i)Final Answer\\s*:\\s*([^\\n]+)`, and the last match is compared with the ground
truth after Minerva's normalisation. Its copy differs from verl's own file only in that pattern
(verl's default is `Answer\\s*:`), which `is_correct_minerva` takes as a parameter; so this script
loads verl's file (pinned in requirements-verl-reward.txt) and passes the reference's pattern.

Usage: python make_reward_fixture.py OUT.json (see make_reward_fixture.sh).
"""

import importlib.util
import json
import pathlib
import sys
import sysconfig

PATTERN = r"(?i)Final Answer\s*:\s*([^\n]+)"
TAGS = ["<Parallel>", "</Parallel>", "<Path>", "</Path>", "<Summary>", "</Summary>"]

BLOCK = "<Parallel><Path>20*3=60. 7*3=21. 60+21=81.</Path><Path>27+27=54. 54+27=81.</Path></Parallel>\n<Summary>Checked: 81.</Summary>\n"

# (response, ground truth): the ordinary shapes math answers take, and the edges of the check.
CORPUS = [
    ("Final Answer: 5", "5"),
    ("Final Answer: x = 5", "5"),
    ("Final Answer: 5", "x = 5"),
    ("Final Answer: y=2x+3", "2x+3"),
    ("Final Answer: \\frac12", "\\frac{1}{2}"),
    ("Final Answer: \\frac{1}{2}", "\\frac12"),
    ("Final Answer: \\dfrac{1}{2}", "\\frac{1}{2}"),
    ("Final Answer: 1/2", "\\frac{1}{2}"),
    ("Final Answer: \\sqrt2", "\\sqrt{2}"),
    ("Final Answer: 2\\sqrt3", "2\\sqrt{3}"),
    ("Final Answer: 90^\\circ", "90"),
    ("Final Answer: 90^{\\circ}", "90"),
    ("Final Answer: 90 degrees", "90"),
    ("Final Answer:\n42", "42"),
    ("Final Answer: \n\n42", "42"),
    ("Final Answer:", "42"),
    ("Final Answer: 42.", "42"),
    ("Final Answer: $42$", "42"),
    ("Final Answer: $42$.", "42"),
    ("Final Answer: \\$42", "42"),
    ("Final Answer: 42 dollars", "42"),
    ("Final Answer: 18 apples", "18"),
    ("Final Answer: 1,200", "1200"),
    ("Final Answer: $1,200$", "1200"),
    ("Final Answer: 1,000,000", "1000000"),
    ("Final Answer: 12,34", "1234"),
    ("Final Answer: 1{,}200", "1200"),
    ("Final Answer: 5.0", "5"),
    ("Final Answer: 0.5", ".5"),
    ("Final Answer: -3", "-3"),
    ("Final Answer: \u22123", "-3"),
    ("Final Answer: \\boxed{42}", "42"),
    ("Final Answer: \\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
    ("Final Answer: \\text{(B)}", "(B)"),
    ("Final Answer: \\textbf{yes}", "yes"),
    ("Final Answer: \\overline{12}", "12"),
    ("Final Answer: \\text{Yes}", "yes"),
    ("Final Answer: 3 cm", "3"),
    ("Final Answer: 3\\text{ cm}", "3"),
    ("Final Answer: 3 \\text{m}", "3"),
    ("Final Answer: 12 students", "12"),
    ("Final Answer: 7 hours", "7"),
    ("Final Answer: a 5", "5"),
    ("Final Answer: an 8", "8"),
    ("Final Answer: 1, 2, and 3", "1,2,3"),
    ("Final Answer: 1, 2 \\text{and} 3", "1,2,3"),
    ("Final Answer: (1, 2)", "(1,2)"),
    ("Final Answer: \\pi", "\\pi"),
    ("Final Answer: 2^3", "8"),
    ("Final Answer: \u00b2", "2"),
    ("Final Answer: \uff14\uff12", "42"),
    ("final answer : 7", "7"),
    ("FINAL ANSWER: 7", "7"),
    ("Final answer:7", "7"),
    ("The answer is 7.", "7"),
    ("Answer: 7", "7"),
    ("Final Answer 7", "7"),
    ("Final Answer: 3\nSo wait.\nFinal Answer: 4", "4"),
    ("Final Answer: 3\nSo wait.\nFinal Answer: 4", "3"),
    ("Final Answer: 3 Final Answer: 4", "4"),
    ("Final Answer: 3\n" + "x" * 400, "3"),
    ("Final Answer: 3\n" + "x" * 250, "3"),
    ("x" * 290 + "Final Answer: 12", "12"),
    ("y" * 295 + "Final Answer: 12", "12"),
    ("Final Answer: 5" + "<Parallel>" * 40, "5"),
    ("27*3=84.\n" + BLOCK + "Final Answer: 81", "81"),
    (BLOCK * 3 + "Final Answer: 81", "81"),
    ("\u00e9" * 400 + "Final Answer: 9", "9"),
    ("Final Answer: 9\u00e9", "9"),
    ("Final Answer: 3\x1c", "3"),
    ("", "0"),
    ("Final Answer: [INVALID]", "[INVALID]"),
    ("Final Answer:  \t 42  ", "42"),
    ("Final Answer: 42\r", "42"),
    ("Final Answer: 4\\;2", "42"),
    ("Final Answer: 4\\!2", "4\\!2"),
    ("Final Answer: \\$\\$ 5", "5"),
    ("Final Answer: $\\frac{1}{2}$ and $3$", "3"),
    ("Final Answer: 10\\%", "10"),
    ("Final Answer: 10%", "10%"),
    ("Final Answer: \\mbox{cats}", "cats"),
    ("Final Answer: 7\\mathrm{th}", "7"),
    ("Final Answer: 5 \\ldots", "5"),
    ("Final Answer: \\infty", "\\infty"),
]


def load_reference():
    site = pathlib.Path(sysconfig.get_paths()["purelib"])
    path = site / "verl" / "utils" / "reward_score" / "math_dapo.py"
    spec = importlib.util.spec_from_file_location("math_dapo", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(out):
    math_dapo = load_reference()
    cases = []
    for response, truth in CORPUS:
        decoded = response
        for tag in TAGS:
            decoded = decoded.replace(tag, "")
        correct, pred = math_dapo.is_correct_minerva(decoded[-300:], truth, answer_pattern=PATTERN)
        cases.append({"response": response, "truth": truth, "correct": correct, "pred": pred})
    document = {
        "reference": "verl==0.5.0 verl/utils/reward_score/math_dapo.py is_correct_minerva, "
        "with the Parallel-R1 pattern " + PATTERN + ", on the last 300 characters of the "
        "response without its tags",
        "cases": cases,
    }
    pathlib.Path(out).write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n")
    right = sum(c["correct"] for c in cases)
    print(f"{len(cases)} cases, {right} correct by the reference, written to {out}")


if __name__ == "__main__":
    main(sys.argv[1])
