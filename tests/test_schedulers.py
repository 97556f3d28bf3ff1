"""Samplers and noise schedules: names, labels, diffusers settings, and every combination run by the server."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from server.errors import RequestError
from server.models import schedulers
from server.models.loading import CONFIGS
from shared.messages import Error, Generate, Progress, Queued

COMBINATIONS = [
    (name, schedule)
    for name, sampler in schedulers.SAMPLERS.items()
    for schedule in ("default", "karras", "exponential")
    if schedule == "default" or schedulers.takes(sampler, schedulers.SCHEDULE_FLAGS[schedule])
]


def base_config(family: str):
    import diffusers

    return diffusers.EulerDiscreteScheduler.load_config(CONFIGS / family, subfolder="scheduler")


@pytest.mark.parametrize(("name", "label"), [
    ("euler", "Euler"), ("euler_a", "Euler a"), ("dpmpp_2m", "DPM++ 2M"), ("dpmpp_2m_sde", "DPM++ 2M SDE"),
    ("dpmpp_sde", "DPM++ SDE"), ("ddim", "DDIM"), ("unipc", "UniPC"), ("lms", "LMS"), ("heun", "Heun"),
    ("lcm", "LCM"), ("tcd", "TCD"),
])
def test_names_artists_know(name, label):
    assert schedulers.labels()[name] == label


@pytest.mark.parametrize(("name", "schedule", "label"), [
    ("dpmpp_2m", "karras", "DPM++ 2M Karras"),
    ("dpmpp_2m_karras", "default", "DPM++ 2M Karras"),
    ("dpmpp_2m_karras", "karras", "DPM++ 2M Karras"),
    ("dpmpp_sde", "exponential", "DPM++ SDE Exponential"),
    ("euler", "default", "Euler"),
])
def test_labels_carry_the_schedule(name, schedule, label):
    assert schedulers.label(name, schedule) == label


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize(("name", "schedule"), COMBINATIONS)
def test_schedule_flags(family, name, schedule):
    scheduler = schedulers.make_scheduler(name, base_config(family), schedule, seeds=[5])
    assert type(scheduler).__name__ == schedulers.SAMPLERS[name].scheduler
    effective = schedulers.SAMPLERS[name].schedule if schedule == "default" else schedule
    for kind, flag in schedulers.SCHEDULE_FLAGS.items():
        if flag in scheduler.config:
            assert scheduler.config[flag] == (effective == kind)


def test_a_schedule_overrides_the_model_config():
    config = {**base_config("sd15"), "use_karras_sigmas": True}
    assert not schedulers.make_scheduler("euler", config).config.use_karras_sigmas


@pytest.mark.parametrize("name", ["euler_a", "ddim", "lcm", "tcd"])
def test_samplers_without_a_schedule_choice_refuse_one(name):
    with pytest.raises(RequestError) as caught:
        schedulers.check(name, "karras")
    assert (caught.value.code, caught.value.field) == ("unsupported", "noise_schedule")
    assert "dpmpp_2m" in caught.value.message


def test_unknown_sampler():
    with pytest.raises(RequestError) as caught:
        schedulers.check("k_euler_magic")
    assert (caught.value.code, caught.value.field) == ("bad_request", "scheduler")


# --- the server ------------------------------------------------------------------------------------------


def request(**fields) -> Generate:
    defaults = {"id": uuid.uuid4().hex, "mode": "txt2img", "model": "tiny-sd15", "prompt": "a red circle",
                "width": 64, "height": 64, "steps": 3, "seed": 1}
    return Generate(**{**defaults, **fields})


def test_welcome_lists_every_sampler_with_its_display_name(client):
    assert client.welcome.schedulers == list(schedulers.SAMPLERS)
    assert client.welcome.scheduler_labels["dpmpp_2m_sde"] == "DPM++ 2M SDE"


@pytest.mark.parametrize(("name", "schedule"), COMBINATIONS)
def test_every_sampler_and_schedule_runs(client, name, schedule):
    result = client.generate(request(scheduler=name, noise_schedule=schedule))
    assert (result.info["scheduler"], result.info["noise_schedule"]) == (name, schedule)
    assert result.info["sampler"] == schedulers.label(name, schedule)
    assert len(result.images[0].image.data) == 64 * 64 * 4


def pixels(result, index: int = 0) -> np.ndarray:
    return np.frombuffer(result.images[index].image.data, np.uint8).astype(int)


@pytest.mark.parametrize("name", ["dpmpp_sde", "dpmpp_2m_sde", "euler_a"])
def test_stochastic_samplers_reproduce_from_the_seed(client, name):
    first = pixels(client.generate(request(scheduler=name, seed=10)))
    assert np.array_equal(pixels(client.generate(request(scheduler=name, seed=10))), first)
    # Each image of a batch follows its own seed. (A batch runs the UNet at another batch size,
    # which moves a rare pixel by one level on CPUs.)
    batch = client.generate(request(scheduler=name, seed=10, batch_size=2))
    second = pixels(client.generate(request(scheduler=name, seed=11)))
    assert np.abs(pixels(batch, 0) - first).max() <= 2 and np.abs(pixels(batch, 1) - second).max() <= 2
    assert np.abs(first - second).mean() > 1


def test_a_schedule_the_sampler_lacks_is_refused_before_queueing(client):
    client.send(request(scheduler="ddim", noise_schedule="karras"))
    for reply in client.messages(timeout=30):
        assert not isinstance(reply, (Queued, Progress))
        if isinstance(reply, Error):
            assert (reply.code, reply.field) == ("unsupported", "noise_schedule")
            break


def test_guidance_rescale_changes_the_picture(client):
    plain = client.generate(request(steps=4)).images[0].image.data
    rescaled = client.generate(request(steps=4, guidance_rescale=0.7))
    assert rescaled.images[0].image.data != plain and rescaled.info["guidance_rescale"] == 0.7
