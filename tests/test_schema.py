import numpy as np
import pytest

from par_pipeline.errors import ParError
from par_pipeline.prompts import build_prompts, expand_phrase, load_prompt_config
from par_pipeline.schema import load_schema


def test_mars_schema_layout():
    s = load_schema("mars")
    assert s.num_attributes == 43
    assert s.boundaries == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 20, 29, 39, 43]
    assert [g.name for g in s.groups][:9] == ["top length short", "bottom length short", "shoulder bag", "backpack", "hat",
                                              "hand bag", "hair long", "gender female", "bottom type trousers"]
    assert s.groups[11].value_names == ("black", "purple", "green", "blue", "gray", "white", "yellow", "red", "complex")
    assert len(set(s.attributes)) == 43


def test_duke_schema_layout():
    s = load_schema("duke")
    assert s.num_attributes == 36
    assert s.boundaries == [0, 1, 2, 3, 4, 5, 6, 7, 8, 14, 19, 28, 36]
    assert s.groups[1].column == "bag" and s.groups[4].attributes == ("gender female",)


def test_encode_row_one_hot_and_range():
    s = load_schema("mars")
    row = {c: "0" for c in s.label_columns}
    row.update({"pose": "3", "age": "2", "gender": "1"})
    labels = s.encode_row(row, "x.csv:2")
    assert labels.dtype == np.uint8 and labels.shape == (43,)
    assert labels[7] == 1 and labels[9 + 3] == 1 and labels[39 + 2] == 1
    for g in s.groups[9:]:
        assert labels[g.start:g.end].sum() == 1
    row["age"] = "4"
    with pytest.raises(ParError, match=r"x.csv:2: column 'age' has value 4, outside 0..3"):
        s.encode_row(row, "x.csv:2")


def test_paper_prompt_example():
    cfg = load_prompt_config()
    phrase = expand_phrase("Age≤40", cfg["expansions"])
    assert phrase == "age less than 40"
    assert cfg["template"].format(phrase=phrase) == "the pedestrian has an attribute age less than 40"
    assert expand_phrase("upperBodyShortSleeve", {}) == "upper body short sleeve"


def test_build_prompts_template_option():
    s = load_schema("mars")
    prompts = build_prompts(s)
    assert len(prompts) == 43 and prompts[0] == "the pedestrian has an attribute short sleeves"
    assert build_prompts(s, "{phrase}")[7] == "gender female"
    assert build_prompts(s, "a photo of a person, {phrase}")[4] == "a photo of a person, wearing a hat"
    with pytest.raises(ParError, match="placeholder"):
        build_prompts(s, "no placeholder")
