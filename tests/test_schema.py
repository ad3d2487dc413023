import pytest

from par_pipeline.data.schema import load_schema
from par_pipeline.data.texts import attribute_texts, expand_phrase, load_prompt_config
from par_pipeline.errors import ParError


def test_mars_schema_layout():
    s = load_schema("mars")
    assert s.num_attributes == 43
    assert s.boundaries == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 20, 29, 39, 43]
    assert s.group_names[:9] == ["top length short", "bottom length short", "shoulder bag", "backpack", "hat",
                                 "hand bag", "hair long", "gender female", "bottom type trousers"]
    assert s.groups[11].value_names == ("black", "purple", "green", "blue", "gray", "white", "yellow", "red", "complex")
    assert s.groups[0].value_names == ("no", "yes") and len(set(s.attributes)) == 43
    assert list(s.csv_columns[:5]) == ["person_id", "camera_id", "tracklets_id", "motion", "pose"]


def test_duke_schema_layout():
    s = load_schema("duke")
    assert s.num_attributes == 36 and len(s.groups) == 12
    assert s.boundaries == [0, 1, 2, 3, 4, 5, 6, 7, 8, 14, 19, 28, 36]
    assert s.groups[1].column == "bag" and s.groups[4].attributes == ("gender female",)


# The reference implementation's attribute words, verbatim (Event-AHU/VTF_PAR dataset/preprocess/*.py).
REFERENCE_MARS = (
    "top short, bottom short, shoulder bag, backpack, hat, hand bag, long hair, female, bottom skirt, "
    "frontal, lateral-frontal, lateral, lateral-back, back, pose varies, walking, running, riding, staying, "
    "motion varies, top black, top purple, top green, top blue, top gray, top white, top yellow, top red, "
    "top complex, bottom white, bottom purple, bottom black, bottom green, bottom gray, bottom pink, "
    "bottom yellow, bottom blue, bottom brown, bottom complex, young, teenager, adult, old"
).split(", ")
REFERENCE_DUKE = (
    "carring backpack, carring shoulder bag, carring hand bag, shoes boots, female, heaed hat, shoes, "
    "top long, pose frontal, pose lateral-frontal, pose lateral, pose lateral-back, pose back, pose varies, "
    "motion walking, motion running, motion riding, motion staying, motion varies, top color black, "
    "top color white, top color red, top color purple, top color gray, top color blue, top color green, "
    "top color brown, top color complex, bottom color black, bottom color white, bottom color red, "
    "bottom color grey, bottom color blue, bottom color green, bottom color brown, "
    "bottom color complex"
).split(", ")


@pytest.mark.parametrize("name,words", [("mars", REFERENCE_MARS), ("duke", REFERENCE_DUKE)])
def test_reference_words_verbatim(name, words):
    texts = attribute_texts(load_schema(name))
    assert texts["words"] == words


def test_paper_prompt_example():
    cfg = load_prompt_config()
    phrase = expand_phrase("Age≤40", cfg["expansions"])
    assert phrase == "age less than 40"
    assert cfg["template"].format(phrase=phrase) == "the pedestrian has an attribute age less than 40"
    assert expand_phrase("upperBodyShortSleeve", {}) == "upper body short sleeve"


def test_text_sources():
    s = load_schema("mars")
    texts = attribute_texts(s)
    assert set(texts) == {"words", "prompts", "phrases"} and all(len(v) == 43 for v in texts.values())
    assert (
        texts["prompts"][0] == "the pedestrian has an attribute short sleeves"
        and texts["phrases"][7] == "gender female"
    )
    assert attribute_texts(s, "a photo of a person, {phrase}")["prompts"][4] == "a photo of a person, wearing a hat"
    with pytest.raises(ParError, match="placeholder"):
        attribute_texts(s, "no placeholder")


def test_encode_row_one_hot_and_range():
    s = load_schema("mars")
    row = {c: "0" for c in s.label_columns}
    row.update({"pose": "3", "age": "2", "gender": "1"})
    labels = s.encode_row(row, "x.csv:2")
    assert labels.shape == (43,) and labels[7] == 1 and labels[9 + 3] == 1 and labels[39 + 2] == 1
    for g in s.groups[9:]:
        assert labels[g.start:g.end].sum() == 1
    row["age"] = "4"
    with pytest.raises(ParError, match=r"x.csv:2: column 'age' has value 4, outside 0..3"):
        s.encode_row(row, "x.csv:2")
