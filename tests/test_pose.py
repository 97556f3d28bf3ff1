"""Pose control images: COCO keypoints drawn as OpenPose's body picture (imaging/skeleton.py), and the
`preprocess` pose request through the real server with tiny random-weight ViTPose and RT-DETR models
(testing/tiny_controlnets.py) in each layout an artist may have."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from server.config import ServerConfig
from server.imaging import skeleton
from shared.client import Client, ServerError
from shared.messages import Image, Preprocess
from testing.serving import running_server, url
from testing.tiny_controlnets import write_tiny_person_detector, write_tiny_pose_model
from testing.tiny_models import _ExplodesWhenUnpickled

# --- drawing ----------------------------------------------------------------------------------------------

COCO_NAMES = ("nose", "left eye", "right eye", "left ear", "right ear", "left shoulder", "right shoulder",
              "left elbow", "right elbow", "left wrist", "right wrist", "left hip", "right hip", "left knee",
              "right knee", "left ankle", "right ankle")


def coco_person(scores: float | list[float] = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """COCO keypoint i at (10 + 20 i, 300 - 10 i): every point apart from every other."""
    keypoints = np.array([[10 + 20 * i, 300 - 10 * i] for i in range(17)], np.float32)
    return keypoints, np.broadcast_to(np.asarray(scores, np.float32), (17,)).copy()


@pytest.mark.parametrize(("openpose", "coco"), [
    (0, "nose"), (2, "right shoulder"), (3, "right elbow"), (4, "right wrist"), (5, "left shoulder"),
    (6, "left elbow"), (7, "left wrist"), (8, "right hip"), (9, "right knee"), (10, "right ankle"),
    (11, "left hip"), (12, "left knee"), (13, "left ankle"), (14, "right eye"), (15, "left eye"),
    (16, "right ear"), (17, "left ear"),
])
def test_openpose_points_are_cocos_in_openposes_order(openpose, coco):
    keypoints, scores = coco_person()
    points = skeleton.openpose_points(keypoints, scores)
    assert points.shape == (18, 2)
    assert tuple(points[openpose]) == tuple(keypoints[COCO_NAMES.index(coco)])


@pytest.mark.parametrize(("left", "right", "neck"), [
    (0.9, 0.9, (120.0, 245.0)),  # midway between the shoulders, (110, 250) and (130, 240)
    (0.9, 0.1, None),
    (0.1, 0.9, None),
])
def test_the_neck_is_midway_between_the_shoulders_where_both_are_kept(left, right, neck):
    keypoints, scores = coco_person()
    shoulders = COCO_NAMES.index("left shoulder"), COCO_NAMES.index("right shoulder")
    keypoints[list(shoulders)] = (110, 250), (130, 240)
    scores[list(shoulders)] = left, right
    found = skeleton.openpose_points(keypoints, scores)[skeleton.NECK]
    assert (None if np.isnan(found).all() else tuple(found)) == neck


@pytest.mark.parametrize(("score", "point", "kept"), [
    (0.3, (50.0, 60.0), True),  # at the threshold
    (0.29, (50.0, 60.0), False),
    (0.0, (50.0, 60.0), False),
    (1.0, (np.nan, 60.0), False),
    (1.0, (np.inf, 60.0), False),
])
def test_a_point_under_the_threshold_or_off_the_map_is_left_out(score, point, kept):
    keypoints, scores = coco_person()
    keypoints[0], scores[0] = point, score
    nose = skeleton.openpose_points(keypoints, scores, threshold=0.3)[0]
    assert (not np.isnan(nose).any()) == kept
    assert not np.isnan(skeleton.openpose_points(keypoints, scores)[2:]).any()  # the others stay


def test_keypoints_of_another_shape_are_refused():
    with pytest.raises(ValueError, match="17"):
        skeleton.openpose_points(np.zeros((18, 2)), np.ones(18))


def shade(colour: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(int(c * skeleton.LIMB_SHADE) for c in colour)


def standing(height: int = 512) -> np.ndarray:
    """OpenPose points of a figure standing in a 512 px picture (scaled to `height`), limbs well apart."""
    points = {0: (256, 60), 1: (256, 120), 2: (196, 120), 3: (176, 200), 4: (166, 280), 5: (316, 120),
              6: (336, 200), 7: (346, 280), 8: (216, 280), 9: (206, 380), 10: (200, 480), 11: (296, 280),
              12: (306, 380), 13: (312, 480), 14: (240, 48), 15: (272, 48), 16: (226, 56), 17: (286, 56)}
    return np.array([points[i] for i in range(18)], np.float64) * height / 512


@pytest.mark.parametrize(("limb", "dimmed"), [
    ((1, 2), (153, 0, 0)),  # neck - right shoulder: red
    ((2, 3), (153, 102, 0)),  # right upper arm: orange
    ((5, 6), (102, 153, 0)),  # left upper arm: yellow-green
    ((8, 9), (0, 153, 51)),  # right thigh: green
    ((12, 13), (0, 51, 153)),  # left shin: blue
    ((1, 0), (0, 0, 153)),  # neck - nose: deep blue
])
def test_a_limb_is_its_openpose_colour_dimmed_and_a_point_its_full_colour(limb, dimmed):
    picture = skeleton.draw(512, 512, [standing()])
    assert picture.shape == (512, 512, 3) and picture.dtype == np.uint8
    x, y = np.round(standing()[list(limb)].mean(axis=0)).astype(int)
    assert tuple(picture[y, x]) == dimmed
    x, y = standing()[limb[1]].astype(int)
    assert tuple(picture[y, x]) == skeleton.COLOURS[limb[1]]
    assert not picture[:20].any() and not picture[:, :100].any()  # black around the figure


def test_a_point_left_out_takes_its_limbs_with_it():
    points = standing()
    points[3] = np.nan  # the right elbow
    picture = skeleton.draw(512, 512, [points])
    for a, b in ((2, 3), (3, 4)):  # upper arm, forearm
        x, y = np.round(standing()[[a, b]].mean(axis=0)).astype(int)
        assert not picture[y, x].any()
    x, y = standing()[4].astype(int)
    assert tuple(picture[y, x]) == skeleton.COLOURS[4]  # the wrist stays, as a dot


def test_limbs_and_points_grow_with_the_picture():
    """4 px half-width at 512 px, so a limb 6 px off its line is drawn at 1024 px and not at 512."""
    for side, drawn in ((512, False), (1024, True)):
        picture = skeleton.draw(side, side, [standing(side)])
        x, y = np.round(standing(side)[[9, 10]].mean(axis=0)).astype(int)  # right shin, nearly upright
        assert bool(picture[y, x + 6].any()) == drawn


def test_nobody_is_a_black_picture():
    assert not skeleton.draw(40, 30, []).any()
    nobody = skeleton.openpose_points(*coco_person(0.1))
    assert not skeleton.draw(40, 30, [nobody]).any()


# --- through the server -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_annotators(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every annotator folder the layouts below are made of."""
    root = tmp_path_factory.mktemp("annotators")
    write_tiny_pose_model(root / "tiny-vitpose")
    write_tiny_pose_model(root / "unsure-vitpose", confidence=0.1)
    write_tiny_person_detector(root / "tiny-rt-detr")
    for name, source in (("broken-vitpose", "tiny-vitpose"), ("broken-rt-detr", "tiny-rt-detr")):
        shutil.copytree(root / source, root / name)
        weights = root / name / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:1000])
    pickled = root / "pickled-vitpose"  # as a hub folder was before safetensors: config and a pickle
    pickled.mkdir()
    shutil.copy(root / "tiny-vitpose" / "config.json", pickled / "config.json")
    shutil.copy(root / "tiny-vitpose" / "preprocessor_config.json", pickled / "preprocessor_config.json")
    torch.save({"trap": _ExplodesWhenUnpickled()}, pickled / "pytorch_model.bin")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def client(models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    """One server whose models folder each test lays out: annotators are looked for at each request."""
    config = ServerConfig(models=[models], outputs=tmp_path_factory.mktemp("outputs"))
    with running_server(config) as server, Client(url(server), name="test") as connected:
        yield connected


@pytest.fixture
def installed(models: Path, tiny_annotators: Path):
    def install(*names: str) -> None:
        folder = models / "annotators"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for name in names:
            shutil.copytree(tiny_annotators / name, folder / name)

    return install


def picture(width: int = 80, height: int = 64, x: int = 7, y: int = -5) -> Image:
    rgba = np.random.default_rng(0).integers(0, 256, (height, width, 4), np.uint8)
    rgba[..., 3] = 255
    return Image(width=width, height=height, format="rgba8", data=rgba.tobytes(), x=x, y=y)


def pose(client: Client, image: Image):
    return client.generate(Preprocess(id=uuid.uuid4().hex, kind="pose", image=image))


PALETTE = {(0, 0, 0)} | set(skeleton.COLOURS) | {shade(colour) for colour in skeleton.COLOURS}


@pytest.mark.parametrize(("annotators", "detector", "people"), [
    (("tiny-rt-detr", "tiny-vitpose"), "tiny-rt-detr", 2),  # the tiny detector finds two people
    (("tiny-vitpose",), None, 1),  # the whole picture, one figure
])
def test_pose_is_an_openpose_picture_at_the_pictures_place(client, installed, annotators, detector, people):
    installed(*annotators)
    result = pose(client, picture())
    (made,) = result.images
    assert (made.image.x, made.image.y, made.image.width, made.image.height) == (7, -5, 80, 64)
    assert result.info | {"preprocess": "pose", "model": "tiny-vitpose", "detector": detector,
                          "people": people} == result.info
    rgba = np.frombuffer(made.image.data, np.uint8).reshape(64, 80, 4)
    colours = {tuple(pixel) for pixel in rgba[..., :3].reshape(-1, 3)}
    assert colours <= PALETTE and len(colours) > 3  # black, and skeleton colours on it
    assert made.image.data == pose(client, picture()).images[0].image.data  # same picture, same pose


def test_the_detectors_people_are_posed_each(client, installed):
    installed("tiny-vitpose")
    alone = pose(client, picture()).images[0].image.data
    installed("tiny-rt-detr", "tiny-vitpose")
    assert pose(client, picture()).images[0].image.data != alone


def test_pose_is_black_where_no_point_scores_enough(client, installed):
    installed("unsure-vitpose")
    result = pose(client, picture())
    assert result.info["people"] == 0
    assert not np.frombuffer(result.images[0].image.data, np.uint8).reshape(64, 80, 4)[..., :3].any()


@pytest.mark.parametrize("annotators", [(), ("tiny-rt-detr", "pickled-vitpose")])
def test_without_a_pose_model_pose_is_unsupported(client, installed, annotators):
    """A folder with pickled weights alone is passed over: never unpickled (its pickle would raise)."""
    installed(*annotators)
    with pytest.raises(ServerError) as caught:
        pose(client, picture())
    assert (caught.value.error.code, caught.value.error.field) == ("unsupported", "kind")
    assert "pose model" in caught.value.error.message


@pytest.mark.parametrize(("annotators", "broken"), [
    (("broken-vitpose",), "pose model broken-vitpose"),
    (("broken-rt-detr", "tiny-vitpose"), "person detector broken-rt-detr"),
])
def test_a_pose_model_that_cannot_be_loaded_is_model_broken_and_the_server_goes_on(client, installed, annotators,
                                                                                    broken):
    installed(*annotators)
    with pytest.raises(ServerError) as caught:
        pose(client, picture())
    assert (caught.value.error.code, caught.value.error.field) == ("model_broken", "kind")
    assert broken in caught.value.error.message
    assert client.generate(Preprocess(id=uuid.uuid4().hex, kind="canny", image=picture())).images
