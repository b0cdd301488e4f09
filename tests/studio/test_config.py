"""Labeling config → controls and vocabulary, table-driven over tests/fixtures/label_configs."""

from __future__ import annotations

import pytest

from state.contracts import vocabulary_fingerprint
from studio.config import EXAMPLE_CONFIG, parse_label_config
from studio.controls import ChoicesControl, Knobs, ProjectVocabulary, TaxonomyControl
from studio.errors import LabelConfigError
from tests.backends._fixtures import config, payload


def test_example_config_parses() -> None:
    vocab = parse_label_config(EXAMPLE_CONFIG)
    assert vocab.labels == ("cat", "dog", "puppy", "Animal", "Cat")


@pytest.mark.parametrize(
    ("name", "labels"),
    [
        ("multilabel", ("cat", "dog", "puppy", "Person", "outdoor")),
        ("taxonomy", ("Animal", "Cat", "dog", "Animal / Other", "Scene", "Outdoor", "Scene / Other")),
        ("taxonomy_leafs_only", ("Cat", "Dog", "Car")),
        ("multi_control", ("cat", "dog", "Indoor", "Kitchen", "Outdoor", "good", "blurry")),
        ("single_choice", ("indoor", "outdoor")),
        ("two_images", ("cat", "dog", "car")),
    ],
)
def test_vocabulary_is_the_ordered_union_of_model_labels(name: str, labels: tuple[str, ...]) -> None:
    vocab = parse_label_config(config(name))

    assert vocab.labels == labels
    assert vocab.fingerprint == vocabulary_fingerprint(list(labels))
    assert vocab.model_version("mkt-p3-r7") == f"mkt-p3-r7+{vocab.fingerprint}"


@pytest.mark.parametrize(
    ("name", "controls"),
    [
        # name, tag class, value key, multiple, max tags, knobs
        ("multilabel", [("tags", ChoicesControl, "image", True, 3, Knobs(max_tags=3))]),
        ("taxonomy", [("taxo", TaxonomyControl, "url", True, None, Knobs())]),
        ("taxonomy_leafs_only", [("taxo", TaxonomyControl, "image", True, 2, Knobs(max_tags=2))]),
        ("single_choice", [("scene", ChoicesControl, "image", False, 1, Knobs())]),
        (
            "multi_control",
            [
                ("objects", ChoicesControl, "image", True, None, Knobs(threshold=0.4)),
                ("scene", TaxonomyControl, "image", True, None, Knobs()),
                ("quality", ChoicesControl, "image", False, 1, Knobs()),
                ("review", ChoicesControl, "image", True, None, Knobs(skip=True)),
            ],
        ),
        (
            "two_images",
            [
                ("before_tags", ChoicesControl, "before", True, None, Knobs()),
                ("after_tags", ChoicesControl, "after", True, None, Knobs()),
            ],
        ),
    ],
)
def test_controls_and_knobs(name: str, controls: list[tuple[str, type, str, bool, int | None, Knobs]]) -> None:
    vocab = parse_label_config(config(name))
    got = [(c.name, type(c), c.value_key, c.multiple, c.max_tags, c.knobs) for c in vocab.controls]
    assert got == controls


def test_choices_targets_honour_alias_predicted_values_and_choice_thresholds() -> None:
    tags = parse_label_config(config("multilabel")).control("tags")
    targets = {t.key: (t.value, t.model_labels, t.threshold) for t in tags.targets}

    assert targets == {
        "cat": ("cat", ("cat",), None),
        "dog": ("dog", ("dog", "puppy"), None),  # whitespace around names is dropped
        "person": ("person", ("Person",), None),  # LS stores the alias; the model scores the value
        "outdoor": ("outdoor", ("outdoor",), 0.7),  # found inside a nested <View>
    }


def test_taxonomy_targets_are_paths_from_the_root() -> None:
    taxo = parse_label_config(config("taxonomy")).control("taxo")
    targets = {t.key: (t.path, t.model_labels) for t in taxo.targets}

    assert targets == {
        "Animal": (("Animal",), ("Animal",)),
        "Animal / Cat": (("Animal", "Cat"), ("Cat",)),
        "Animal / Dog": (("Animal", "Dog"), ("dog",)),
        # "Other" appears under two parents: its path disambiguates the model label.
        "Animal / Other": (("Animal", "Other"), ("Animal / Other",)),
        "Scene": (("Scene",), ("Scene",)),
        "Scene / outdoor": (("Scene", "outdoor"), ("Outdoor",)),
        "Scene / Other": (("Scene", "Other"), ("Scene / Other",)),
    }


def test_leafs_only_taxonomy_leaves_inner_nodes_out() -> None:
    taxo = parse_label_config(config("taxonomy_leafs_only")).control("taxo")
    assert [t.path for t in taxo.targets] == [("Animal", "Cat"), ("Animal", "Dog"), ("Vehicle", "Car")]


def test_skipped_and_foreign_controls() -> None:
    vocab = parse_label_config(config("multi_control"))

    assert [c.name for c in vocab.active] == ["objects", "scene", "quality"]
    assert "needs review" not in vocab.labels  # model_skip
    assert "sentiment" not in [c.name for c in vocab.controls]  # Choices on a Text object
    assert vocab.value_keys == ("image",)


def test_unknown_control_name_lists_the_known_ones() -> None:
    vocab = parse_label_config(config("multi_control"))
    with pytest.raises(LabelConfigError, match="Unknown control name 'nope'") as info:
        vocab.control("nope")
    assert "objects" in info.value.message and info.value.status_code == 422


def test_config_from_a_real_setup_call() -> None:
    vocab = parse_label_config(payload("ls_setup")["schema"])
    assert [c.name for c in vocab.controls] == ["tags", "taxo"]
    assert vocab.labels[:4] == ("cat", "dog", "puppy", "outdoor")


@pytest.mark.parametrize(
    ("name", "what"),
    [
        ("bad_empty", "the labeling config is empty"),
        ("bad_broken_xml", "not valid XML"),
        ("bad_no_image", "no <Image> object"),
        ("bad_no_tag_control", "no <Choices> or <Taxonomy> attached to an <Image>"),
        ("bad_choices_not_on_image", "no <Choices> or <Taxonomy> attached to an <Image>"),
        ("bad_empty_vocabulary", "no label to predict"),
        ("bad_no_choices", "has no <Choice> the model can predict"),
        ("bad_unknown_to_name", "no object tag is called 'img'"),
        ("bad_threshold", 'model_threshold="high"'),
        ("bad_max_tags", 'model_max_tags="0"'),
        ("bad_skip", 'model_skip="maybe"'),
        ("bad_image_value", 'value="https://example.com/fixed.jpg"'),
    ],
)
def test_malformed_configs_explain_what_why_and_fix(name: str, what: str) -> None:
    with pytest.raises(LabelConfigError) as info:
        parse_label_config(config(name))
    err = info.value

    assert what in err.what
    assert err.fix is not None and "Example:" in err.fix and '<Image name="image" value="$image"/>' in err.fix
    assert "Fix:" in err.message
    assert err.status_code == 422


@pytest.mark.parametrize("threshold", ["-0.1", "1.5", "nan", ""])
def test_choice_threshold_must_be_a_probability(threshold: str) -> None:
    xml = config("single_choice").replace(
        '<Choice value="indoor"/>', f'<Choice value="indoor" model_threshold="{threshold}"/>'
    )
    with pytest.raises(LabelConfigError, match="model_threshold"):
        parse_label_config(xml)


def test_vocabulary_is_hashable_and_immutable() -> None:
    vocab = parse_label_config(config("multilabel"))
    assert isinstance(vocab, ProjectVocabulary)
    assert hash(vocab) == hash(parse_label_config(config("multilabel")))
    with pytest.raises(AttributeError):
        vocab.labels = ()  # type: ignore[misc]


def test_a_10000_choice_config_is_one_vocabulary_parsed_once() -> None:
    labels = [f"tag {i:05d}" for i in range(10_000)]
    xml = (
        '<View><Image name="image" value="$image"/><Choices name="tags" toName="image" choice="multiple">'
        + "".join(f'<Choice value="{label}"/>' for label in labels)
        + "</Choices></View>"
    )

    vocab = parse_label_config(xml)

    assert vocab.labels == tuple(labels) and len(vocab.controls[0].targets) == 10_000
    assert vocab.fingerprint == vocabulary_fingerprint(labels)
    # Label Studio sends the same config with every /setup and /predict: it is parsed once.
    assert parse_label_config("".join([xml[:100], xml[100:]])) is vocab


@pytest.mark.parametrize(
    ("xml", "fragment"),
    [
        # Billion laughs: lxml refuses the entity amplification at once.
        (
            '<!DOCTYPE View [<!ENTITY a0 "lol">'
            + "".join(f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">' for i in range(1, 10))
            + ']><View><Image name="i" value="$i"/><Choices name="t" toName="i">'
            + '<Choice value="&a9;"/></Choices></View>',
            "not valid XML",
        ),
        # An external entity is never resolved (no file read, no request).
        (
            '<!DOCTYPE View [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<View><Image name="i" value="$i"/><Choices name="t" toName="i"><Choice value="&x;"/></Choices></View>',
            "not valid XML",
        ),
        # Blank choices name no label the model could score.
        (
            '<View><Image name="i" value="$i"/><Choices name="t" toName="i"><Choice value="  "/></Choices></View>',
            "whose value '  ' is blank",
        ),
        # Two taxonomy paths that join to one key: Label Studio's ["A / B"] and ["A", "B"].
        (
            '<View><Image name="i" value="$i"/><Taxonomy name="t" toName="i">'
            '<Choice value="A / B"/><Choice value="A"><Choice value="B"/></Choice></Taxonomy></View>',
            "cannot tell apart",
        ),
    ],
    ids=["billion-laughs", "external-entity", "blank-choice", "taxonomy-key-collision"],
)
def test_hostile_configs_are_a_label_config_error(xml: str, fragment: str) -> None:
    with pytest.raises(LabelConfigError, match=fragment):
        parse_label_config(xml)


def test_model_labels_are_stripped_so_workers_take_them() -> None:
    # Workers strip labels and refuse repeats: " cat" next to "cat" made every request fail.
    vocab = parse_label_config(
        '<View><Image name="i" value="$i"/><Choices name="t" toName="i" choice="multiple">'
        '<Choice value=" cat"/><Choice value="cat"/><Choice value="dog "/></Choices></View>'
    )
    assert vocab.labels == ("cat", "dog")
    assert [(t.value, t.model_labels) for t in vocab.controls[0].targets] == [
        (" cat", ("cat",)),
        ("cat", ("cat",)),
        ("dog ", ("dog",)),
    ]


def test_a_blank_choice_is_refused_unless_the_model_skips_its_control() -> None:
    blank = '<Choice value="cat"/><Choice value=" "/>'
    with pytest.raises(LabelConfigError, match="(?s)blank.*predicted_values") as info:
        parse_label_config(f'<View><Image name="i" value="$i"/><Choices name="t" toName="i">{blank}</Choices></View>')
    assert info.value.status_code == 422
    # A blank choice the model scores through predicted_values is fine; so is one in a skipped control.
    vocab = parse_label_config(
        '<View><Image name="i" value="$i"/>'
        '<Choices name="t" toName="i"><Choice value="cat"/><Choice value=" " predicted_values="dog"/></Choices>'
        f'<Choices name="s" toName="i" model_skip="true">{blank}</Choices></View>'
    )
    assert vocab.labels == ("cat", "dog")
    assert [t.key for t in vocab.control("s").targets] == ["cat"]


def test_taxonomy_names_that_differ_only_in_spaces_are_one_name() -> None:
    # "dog" and "dog " are the same model label: both nodes get their path, as for any repeat.
    vocab = parse_label_config(
        '<View><Image name="i" value="$i"/><Taxonomy name="t" toName="i">'
        '<Choice value="A"><Choice value="dog"/></Choice><Choice value="B "><Choice value="dog "/></Choice>'
        "</Taxonomy></View>"
    )
    assert vocab.labels == ("A", "A / dog", "B", "B / dog")
    assert [t.path for t in vocab.controls[0].targets] == [("A",), ("A", "dog"), ("B ",), ("B ", "dog ")]
