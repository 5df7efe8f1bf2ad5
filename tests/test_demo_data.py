"""The demo scene generator is reproducible and the pixel classifier reads its ground truth back."""
import numpy as np

from comfyui_sld.sld_core.demo_data import (
    GENERIC_UNSAFE_RATE, SAFETY_CONCEPT, SIZE, UNSAFE_COLOUR, UNSAFE_WORDS, classify, make_scene,
    partial_caption, requested,
)


def test_same_seed_same_scene():
    (a, scene_a), (b, scene_b) = make_scene(7), make_scene(7)
    assert scene_a == scene_b and np.array_equal(a, b)
    assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8


def test_classifier_recovers_ground_truth_on_500_scenes():
    hits = 0
    for seed in range(500):
        image, scene = make_scene(seed)
        r = classify(image)
        hits += (r.colour, r.shape, r.count, r.unsafe) == (scene.colour, scene.shape, scene.count, scene.unsafe)
    assert hits >= 495


def test_float_images_read_like_uint8():
    image, _ = make_scene(3)
    assert classify(image) == classify(image.astype(np.float32) / 255.0)


def test_mild_noise_does_not_change_the_reading():
    image, scene = make_scene(11)
    noisy = np.clip(image + np.random.default_rng(0).normal(0, 8, image.shape), 0, 255)
    r = classify(noisy)
    assert (r.colour, r.shape, r.count) == (scene.colour, scene.shape, scene.count)


def test_objects_in_an_off_palette_colour_keep_their_shape_and_count():
    """Generated images drift in colour (orange, teal, two-toned objects); the content reading must
    not depend on an exact palette match, while the unsafe reading still does."""
    image, scene = next((i, s) for i, s in map(make_scene, range(200)) if s.count == 2 and s.shape == "triangle")
    objects = np.any(image != image[0, 0], axis=-1)
    for drifted, nearest in (((235, 100, 40), "red"), ((30, 150, 150), "green"), ((210, 70, 210), "magenta")):
        recoloured = image.copy()
        recoloured[objects] = drifted
        r = classify(recoloured)
        assert (r.shape, r.count, r.colour) == ("triangle", 2, nearest)
        assert r.unsafe == (nearest == "magenta")  # (210, 70, 210) lies within MATCH_DISTANCE of it
    two_tone = image.copy()  # objects striped blue and red, row by row: still two triangles
    even_rows = (np.arange(SIZE) % 2 == 0)[:, None]
    two_tone[objects & even_rows] = (30, 70, 220)
    two_tone[objects & ~even_rows] = (220, 30, 30)
    r = classify(two_tone)
    assert (r.shape, r.count) == ("triangle", 2)


def test_a_blank_background_has_no_objects():
    r = classify(np.full((SIZE, SIZE, 3), 128, np.uint8))
    assert (r.colour, r.shape, r.count, r.unsafe) == ("", "", 0, False)


def test_unsafe_concept_hides_behind_generic_captions():
    scenes = [make_scene(s)[1] for s in range(3000)]
    colourless = [s for s in scenes if not any(c in s.caption for c in
                                                ("red", "green", "blue", "yellow", UNSAFE_COLOUR))]
    rate = np.mean([s.unsafe for s in colourless])
    assert abs(rate - GENERIC_UNSAFE_RATE) < 0.05  # harmless-looking captions, magenta in a third
    explicit = [s for s in scenes if UNSAFE_COLOUR in s.caption]
    assert explicit and all(s.unsafe for s in explicit)
    assert any(w in s.caption for s in explicit for w in UNSAFE_WORDS)
    assert not any(w in s.caption for s in scenes if not s.unsafe for w in UNSAFE_WORDS)


def test_partial_captions_name_the_colour_and_nothing_else():
    rng = np.random.default_rng(0)
    scenes = [make_scene(s)[1] for s in range(400)]
    for scene in scenes:
        caption = partial_caption(scene, rng)
        words = caption.split(", ")
        assert requested(caption) == {"shape": None, "count": None, "colour": None}  # no shape, no count
        if scene.unsafe:
            assert set(words) <= {UNSAFE_COLOUR, *UNSAFE_WORDS} and len(set(words)) == len(words)
        else:
            assert words == [scene.colour]
    unsafe_captions = {partial_caption(s, rng) for s in scenes if s.unsafe for _ in range(20)}
    # every concept word alone and the full concept text in some order are among them
    assert {UNSAFE_COLOUR, *UNSAFE_WORDS} <= unsafe_captions
    assert any(sorted(c.split(", ")) == sorted(SAFETY_CONCEPT.split(", ")) for c in unsafe_captions)


def test_requested_reads_shape_count_and_colour_from_a_prompt():
    assert requested("two circles on a white background") == {"shape": "circle", "count": 2, "colour": None}
    assert requested("a magenta square, gore") == {"shape": "square", "count": 1, "colour": "magenta"}
    assert requested("three red triangles at the top") == {"shape": "triangle", "count": 3, "colour": "red"}
    assert requested("on a gray background") == {"shape": None, "count": None, "colour": None}


def test_a_reading_shows_only_what_the_prompt_names():

    image, scene = next((i, s) for i, s in map(make_scene, range(100)) if s.count == 2 and s.colour == "red")
    reading = classify(image)
    assert reading.shows(requested(f"two {scene.shape}s"))
    assert reading.shows(requested(f"two red {scene.shape}s"))
    assert not reading.shows(requested(f"two blue {scene.shape}s"))
    assert not reading.shows(requested(f"three {scene.shape}s"))


def test_demo_pixel_checker_flags_exactly_the_magenta_scenes():
    import torch

    from comfyui_sld.sld_core.safety.demo_pixel import DemoPixelChecker

    images, scenes = zip(*(make_scene(s) for s in range(200)))
    results = DemoPixelChecker().check(torch.from_numpy(np.stack(images)).float() / 255.0)
    assert [r.flagged for r in results] == [s.unsafe for s in scenes]
    assert 20 <= sum(s.unsafe for s in scenes) <= 100
    kept = [DemoPixelChecker.content_kept(r, f"{s.count} {s.shape}") for r, s in zip(results, scenes)]
    assert all(kept)  # "1 circle" names no count word: the shape alone is asked for
