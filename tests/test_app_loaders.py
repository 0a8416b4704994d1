"""The app's cache keys (fpxint/app/loaders.py): frozen, hashable values that Streamlit's caches compare
field by field, so equal choices share one cached object and a changed field loads anew."""
from __future__ import annotations

import dataclasses

import pytest

from fpxint.app.loaders import DataRef, ModelRef, TextRef, images_of


@pytest.mark.parametrize("ref, field", [(DataRef("digits_cnn", "random", 4), "limit"),
                                        (TextRef("minilm_l6", 8), "count"),
                                        (ModelRef("digits_cnn"), "name")])
def test_refs_are_frozen_values(ref, field):
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(ref, field, 1)
    twin = dataclasses.replace(ref)  # a separate object with the same fields
    assert twin is not ref and twin == ref and hash(twin) == hash(ref)
    assert len({ref, twin}) == 1


def test_text_ref_fields():
    assert TextRef("minilm_l6", 8) == TextRef("minilm_l6", 8, 0)  # STS-B pairs: no window length
    assert TextRef("smollm2_135m", 2, 256) != TextRef("smollm2_135m", 2, 128)


def test_images_are_cached_by_the_refs_value():
    """Two equal DataRefs built apart hit one cache entry; another limit is another entry, with its count."""
    a = images_of(DataRef("digits_cnn", "random", 5))
    assert images_of(DataRef("digits_cnn", "random", 5)) is a
    b = images_of(DataRef("digits_cnn", "random", 3))
    assert b is not a and len(a.images) == 5 and len(b.images) == 3
    assert a.labels is None and "random probe inputs: 5" in a.source
