"""report/sections.py (a template file cut into named sections) and report/scalars.py (plain numbers)."""

import pytest

from darkknowledge.report import render
from darkknowledge.report.scalars import duration, num
from darkknowledge.report.sections import split_sections, template_sections


def test_split_sections_names_each_block_and_keeps_inner_spacing():
    text = ("what this file is\n<!-- section: head -->\n# Title\n\nBody {x}.\n\n"
            "<!-- section: tail -->\n (a leading space stays) \n")
    assert split_sections(text) == {"head": "# Title\n\nBody {x}.", "tail": " (a leading space stays) "}
    # a marker must be a whole line; anything else is text of the section
    assert split_sections("<!-- section: a -->\nx <!-- section: b -->\n") == {"a": "x <!-- section: b -->"}


def test_split_sections_refuses_a_name_used_twice():
    with pytest.raises(ValueError, match="'a' appears twice"):
        split_sections("<!-- section: a -->\nx\n<!-- section: a -->\ny\n")


def test_the_hinton_mnist_template_ships_as_package_data_and_renders():
    t = template_sections("darkknowledge.experiments", "templates/hinton_mnist.md")
    assert t["header"].startswith("# Hinton, Vinyals & Dean (2015) §3 and §6 on MNIST")
    assert render(t["short_temperature"], best_t="2", P={"best_T_30": "2.5–4"}) == (
        "Temperature: for the 2×30 student the T with the fewest mean validation errors is 2, outside the paper's "
        "2.5–4 band.")
    assert t["hard_overfits"].endswith("early stopping. ")  # the trailing space joins the next sentence


def test_num_and_duration():
    assert num(3.14159, 2, "%") == "3.14%" and num(7) == "7" and num(None, 2) == "–" and num("any T > 8") == "any T > 8"
    assert num(-7.64, 1) == "-7.6"
    assert duration(59.4) == "59 s" and duration(60) == "1.0 min" and duration(24364.67) == "406.1 min"
