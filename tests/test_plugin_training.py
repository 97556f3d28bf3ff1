"""Training from the Train dialog without Krita or Qt (plugin/underpaint_krita/training.py): the
request built from the artist's choices, a run as the dialog shows it, and the controller routing
the server's answers to it and listing the new model when it is done."""

from __future__ import annotations

import pytest
from plugin_support import WELCOME, FakeDocument, connected_controller
from underpaint_krita.connection import Failed
from underpaint_krita.errors import UserError
from underpaint_krita.training import (
    CANCELLED,
    LOST,
    MAX_LOSSES,
    STOPPED,
    Picture,
    TrainingRun,
    TrainingSettings,
    build_train,
    caption_file,
    curve,
    fitted_size,
    model_name,
    picture_files,
    thinned,
    training_side,
)

from shared import codec
from shared.messages import (
    Cancelled,
    Error,
    Image,
    Limits,
    ListModels,
    ModelDefaults,
    ModelInfo,
    ModelList,
    Progress,
    Queued,
    Result,
    ResultImage,
)
from shared.training import MAX_TRAINING_IMAGES, Train, TrainingImage


def _picture(width: int = 8, height: int = 8, caption: str = "", label: str = "Layer") -> Picture:
    return Picture(label, Image(width=width, height=height, format="rgba8", data=bytes(width * height * 4)), caption)


def _settings(**fields) -> TrainingSettings:
    return TrainingSettings(**{"model": "tiny-sd15", "trigger": "mycat", "steps": 40, **fields})


@pytest.mark.parametrize(("size", "side", "expected"), [
    ((512, 512), 512, (512, 512)),  # fits: as it is
    ((100, 60), 512, (100, 60)),  # smaller: never enlarged
    ((1024, 1024), 512, (512, 512)),
    ((4096, 4096), 512, (512, 512)),  # a 4k canvas: 1 MB sent, not 64 MB
    ((2048, 1024), 512, (724, 362)),  # the area, not the sides: the aspect is kept
    ((4096, 2), 64, (2896, 1)),
    ((100000, 1), 16, (256, 1)),
    ((1, 100000), 16, (1, 256)),
])
def test_pictures_shrink_to_the_training_area(size: tuple[int, int], side: int, expected: tuple[int, int]) -> None:
    width, height = fitted_size(*size, side)
    assert (width, height) == expected
    assert width * height <= side * side


@pytest.mark.parametrize(("model", "side"), [
    (None, 512),
    (ModelInfo(name="a", kind="checkpoint", family="sd15"), 512),
    (ModelInfo(name="a", kind="checkpoint", family="sdxl"), 1024),
    (ModelInfo(name="a", kind="checkpoint", family="flux"), 512),  # a family this plugin does not know
    (ModelInfo(name="a", kind="checkpoint", family="sdxl", defaults=ModelDefaults(width=832, height=1216)), 1005),
    (ModelInfo(name="a", kind="checkpoint", family="sd15", defaults=ModelDefaults(steps=20)), 512),
])
def test_the_training_side_follows_the_models_size(model: ModelInfo | None, side: int) -> None:
    assert training_side(model) == side


@pytest.mark.parametrize(("name", "trigger", "taken", "expected"), [
    ("", "mycat", [], "mycat"),
    ("My cat", "mycat", [], "My cat"),
    ("", "mycat", ["mycat"], "mycat-2"),  # no space: an embedding is written in prompts by its name
    ("", "mycat", ["MyCat", "mycat-2"], "mycat-3"),
    ("cat/../../etc", "x", [], "cat....etc"),  # never a path: only a name's characters are kept
    ("..hidden", "x", [], "hidden"),
    ("", "猫", [], "trained"),
    ("a" * 80, "x", ["a" * 64], "a" * 62 + "-2"),
])
def test_the_new_models_name(name: str, trigger: str, taken: list[str], expected: str) -> None:
    assert model_name(name, trigger, taken) == expected


def test_a_folders_pictures_and_their_caption_files() -> None:
    names = ["b.PNG", "notes.txt", "a.jpg", "c.webp", "d.gif", "e.jpeg", "f.bmp", "g"]
    assert picture_files(names) == ["a.jpg", "b.PNG", "c.webp", "e.jpeg", "f.bmp"]
    assert len(picture_files(f"{i:04}.png" for i in range(MAX_TRAINING_IMAGES + 5))) == MAX_TRAINING_IMAGES
    assert caption_file("/art/cats/one.png") == "/art/cats/one.txt"


def test_the_request_says_what_the_dialog_says() -> None:
    models = [*WELCOME.models, ModelInfo(name="mycat", kind="lora", family="sd15")]
    request = build_train(_settings(subject="character", steps=40), [_picture(caption="  a cat, sitting "),
                                                                     _picture(6, 4)], "job", models, Limits())
    assert (request.id, request.kind, request.model, request.trigger) == ("job", "lora", "tiny-sd15", "mycat")
    assert request.name == "mycat-2"  # the trigger, numbered past the LoRA of that name
    assert [(i.image.width, i.image.height, i.caption) for i in request.images] == [(8, 8, "a cat, sitting"),
                                                                                    (6, 4, None)]
    # The server trains at its own size for the model: the pictures were shrunk to it already.
    assert (request.steps, request.resolution, request.sample_every) == (40, None, 10)
    server_steps = build_train(_settings(steps=None), [_picture()], "j", models, Limits())
    assert (server_steps.steps, server_steps.sample_every) == (None, None)  # the server's choice
    assert build_train(_settings(subject="concept"), [_picture()], "j", models, Limits()).kind == "embedding"
    assert build_train(_settings(subject="style", steps=2), [_picture()], "j", models, Limits()).sample_every == 1
    assert codec.decode_client(codec.encode(request)) == request  # what goes on the wire is a valid `train`


@pytest.mark.parametrize(("settings", "pictures", "limits", "says"), [
    (_settings(model=""), [_picture()], Limits(), "Pick a model"),
    (_settings(), [], Limits(), "at least one picture"),
    (_settings(trigger="  "), [_picture()], Limits(), "trigger word"),
    (_settings(trigger="my cat"), [_picture()], Limits(), "one word"),
    (_settings(trigger="x" * 65), [_picture()], Limits(), "one word"),
    (_settings(), [_picture(1, 1)] * (MAX_TRAINING_IMAGES + 1), Limits(), "257 pictures, at most 256"),
    (_settings(), [_picture(8, 8)] * 3, Limits(max_pixels=40), "192 pixels, at most 160"),
])
def test_choices_that_make_no_request_say_what_to_fix(settings: TrainingSettings, pictures: list[Picture],
                                                      limits: Limits, says: str) -> None:
    with pytest.raises(UserError, match=says):
        build_train(settings, pictures, "job", WELCOME.models, limits)


def test_a_lora_is_used_by_its_trigger() -> None:
    run = TrainingRun(build_train(_settings(subject="style"), [_picture()], "t", [], Limits()))
    run.receive(Result(id="t", images=[], info={}, elapsed=1.0, name="mycat"))
    assert run.message == "Done: the LoRA “mycat” is in the LoRA menu; pick it there and write “mycat” in the prompt."


def _run(steps: int = 4) -> TrainingRun:
    return TrainingRun(build_train(_settings(steps=steps, subject="concept"), [_picture()], "t", [], Limits()))


SAMPLE = Image(width=2, height=2, format="rgba8", data=bytes(16))


@pytest.mark.parametrize(("messages", "state", "says"), [
    ([], "waiting", "Waiting for the server"),
    ([Queued(id="t", position=0)], "queued", "starts next"),
    ([Queued(id="t", position=2)], "queued", "2 jobs before it"),
    ([Queued(id="t", position=0), Progress(id="t", step=1, total=4, loss=0.25)], "running",
     "step 1 of 4 · loss 0.2500"),
    ([Progress(id="t", step=2, total=4)], "running", "step 2 of 4"),
    ([Progress(id="t", step=4, total=4, loss=0.1),
      Result(id="t", images=[], info={}, elapsed=1.0, name="mycat", file="mycat.safetensors")], "done",
     "Done: the embedding “mycat” is in the LoRA menu; pick it there to put it in the prompt."),
    ([Progress(id="t", step=1, total=4), Cancelled(id="t")], "cancelled", CANCELLED),
    ([Cancelled(id="t", reason="cancelled at step 1 of 4; saved as mycat")], "cancelled",
     "Training cancelled: cancelled at step 1 of 4; saved as mycat."),
    ([Cancelled(id="t", reason="server stopping: training mycat resumes from its last checkpoint")], "detached",
     STOPPED),
    ([Error(code="unsupported", message="train is not supported", id="t")], "failed",
     "Training failed: The server cannot do this with the chosen model. (Train is not supported.)"),
    ([Error(code="out_of_memory", message="CUDA", id="t"), Progress(id="t", step=1, total=4)], "failed",
     "ran out of memory"),  # nothing after the end counts
])
def test_a_run_says_where_it_stands(messages: list, state: str, says: str) -> None:
    run = _run()
    for message in messages:
        run.receive(message)
    assert run.state == state
    assert says in run.message


def test_a_run_keeps_the_loss_curve_the_newest_sample_and_the_new_models_name() -> None:
    run = _run()
    run.receive(Progress(id="t", step=1, total=4, loss=0.5, preview=SAMPLE))
    run.receive(Progress(id="t", step=2, total=4, loss=float("nan")))  # a diverged step draws nothing
    run.receive(Progress(id="t", step=3, total=4, loss=0.3))
    assert run.losses == [(1, 0.5), (3, 0.3)] and run.sample is SAMPLE and run.trained is None
    last = Image(width=1, height=1, format="rgba8", data=bytes(4))
    run.receive(Result(id="t", images=[ResultImage(image=last, seed=1)], info={}, elapsed=3.0, name="mycat"))
    assert (run.state, run.trained, run.sample, run.step, run.total) == ("done", "mycat", last, 4, 4)
    assert run.finished


def test_a_lost_connection_ends_the_run_with_a_sentence_for_it() -> None:
    run = _run()
    run.fail("connection_lost")
    assert (run.state, run.message) == ("detached", LOST) and run.finished
    assert "goes on with this training" in LOST
    other = _run()
    other.fail("unreachable", address="127.0.0.1:9")
    assert other.message == "Training failed: Cannot reach the server at 127.0.0.1:9. Is it running?"


@pytest.mark.parametrize(("count", "limit", "kept"), [(3, 4, 3), (4, 4, 4), (5, 4, 3), (2001, 1000, 1001)])
def test_the_loss_history_is_thinned_past_its_limit(count: int, limit: int, kept: int) -> None:
    points = [(i, float(i)) for i in range(1, count + 1)]
    thin = thinned(points, limit)
    assert len(thin) == kept
    assert thin[-1][0] == count  # the newest step stays the curve's end
    assert all(1 <= loss <= count for _, loss in thin)


def test_thinning_keeps_the_mean_of_each_pair() -> None:
    assert thinned([(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0)], 4) == [(2, 1.5), (4, 6.0), (5, 16.0)]


def test_a_long_run_keeps_at_most_max_losses_points() -> None:
    run = _run(steps=10_000)
    for step in range(1, 10_001):
        run.receive(Progress(id="t", step=step, total=10_000, loss=1.0 / step))
    assert len(run.losses) <= MAX_LOSSES and run.losses[-1][0] == 10_000


@pytest.mark.parametrize(("points", "total", "expected"), [
    ([], 10, []),
    ([(5, 0.2)], 10, [(50.0, 10.0)]),  # a flat curve runs through the middle
    ([(0, 1.0), (10, 0.0)], 10, [(0.0, 0.0), (100.0, 20.0)]),  # highest loss at the top
    ([(2, 0.5), (4, 0.25), (8, 0.75)], 8, [(25.0, 10.0), (50.0, 20.0), (100.0, 0.0)]),
    ([(20, 1.0), (40, 0.5)], 10, [(50.0, 0.0), (100.0, 20.0)]),  # a total passed: the last step is the end
])
def test_the_loss_curve_fills_its_box(points: list, total: int, expected: list) -> None:
    assert curve(points, 100.0, 20.0, total) == expected


# --- the controller ------------------------------------------------------------------------------------


def test_the_controller_sends_the_training_routes_its_answers_and_lists_the_new_lora() -> None:
    controller, connection, _, _ = connected_controller(FakeDocument(16, 16), "")
    changes = []
    controller.subscribe(lambda: changes.append(controller.training.state))
    run = controller.train(_settings(steps=2), [_picture()])
    (sent,) = connection.sent
    assert isinstance(sent, Train) and sent.id == run.id and run.message == "Sent to the server…"
    assert sent.images == [TrainingImage(image=_picture().image)]
    with pytest.raises(UserError, match="training is running"):
        controller.train(_settings(), [_picture()])
    connection.reply(Queued(id=run.id, position=0), Progress(id=run.id, step=1, total=2, loss=0.4))
    controller.poll()
    assert run.state == "running" and run.losses == [(1, 0.4)] and changes[-1] == "running"
    connection.reply(Result(id=run.id, images=[], info={}, elapsed=1.0, name="mycat", file="mycat.safetensors"))
    controller.poll()
    assert run.state == "done" and isinstance(connection.sent[-1], ListModels)
    assert "mycat" not in [m.name for m in controller.networks()]
    lora = ModelInfo(name="mycat", kind="lora", family="sd15", trigger_words=["mycat"])
    connection.reply(ModelList(models=[*WELCOME.models, lora]))
    controller.poll()
    assert lora in controller.networks()  # what the picker lists
    assert controller.server.models == ["tiny-sd15", "tiny-sd15-inpaint"]
    # Done: another training may start.
    assert controller.train(_settings(), [_picture()]).id != run.id


def test_cancelling_and_a_failed_connection_end_the_controllers_run() -> None:
    controller, connection, _, document = connected_controller(FakeDocument(16, 16), "")
    run = controller.train(_settings(), [_picture()])
    controller.cancel_training()
    assert connection.cancelled == [run.id]
    connection.reply(Cancelled(id=run.id, reason="cancelled at step 3 of 40; saved as mycat"))
    controller.poll()
    assert run.state == "cancelled" and isinstance(connection.sent[-1], ListModels)  # what it learnt is listed
    controller.cancel_training()  # nothing left to cancel
    assert connection.cancelled == [run.id]
    again = controller.train(_settings(), [_picture()])
    connection.reply(Failed(again.id, "connection_lost"))
    controller.poll()
    assert (again.state, again.message) == ("detached", LOST)
    assert controller.message == ""  # the document's own message is not the training's
