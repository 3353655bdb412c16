"""Shared fixtures: a tiny random-weight Stable Diffusion pipeline (fast), offline hub, the demo song,
a render server on loopback in a thread."""

from __future__ import annotations

import gc
import json
import os
import threading
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest
import torch

from bendbridge.server.model import EMBEDDED_MODEL, LoadedModel

# one thread: tiny models gain nothing from more, and it avoids OpenMP oversubscription
# when anything else (a training run, a parallel test worker) shares the cores
torch.set_num_threads(1)


def make_tiny_pipeline(seed: int = 0):
    """A StableDiffusionPipeline with tiny random weights (latent 4×16×16, 64 px images)."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 16, 16),
        layers_per_block=1,
        norm_num_groups=4,
        mid_block_add_attention=False,
        sample_size=64,
    )
    tok = CLIPTokenizer.from_pretrained(EMBEDDED_MODEL / "tokenizer")
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=tok.model_max_length,
        )
    )
    sched = DDIMScheduler(
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    for m in (unet, vae, text):
        m.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def frozen_heap():
    """Real-time tests run as the live bridge runs (``bridge.live_run.run_live``): what was built
    before them (other tests' pipelines and models, half a million objects here) is frozen out of
    the cyclic collector, whose full pass over it would stall every thread for 0.1–0.25 s."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.fixture(scope="session")
def tiny_pipe():
    return make_tiny_pipeline()


@pytest.fixture(scope="session")
def tiny_model(tiny_pipe):
    """``tiny_pipe`` as a loaded model (the library's defaults: 25 steps, guidance 7.5)."""
    return LoadedModel(tiny_pipe)


class UNetCalls:
    """The latent rows of each U-Net call (a batch of B frames with guidance is 2B rows)."""

    def __init__(self, unet: torch.nn.Module):
        self.calls: list[int] = []
        self.handle = unet.register_forward_pre_hook(lambda _m, args: self.calls.append(args[0].shape[0]))

    @property
    def rows(self) -> int:
        return sum(self.calls)


@pytest.fixture
def unet_calls(tiny_pipe):
    """Records the rows of every call of ``tiny_pipe``'s U-Net while the test runs."""
    c = UNetCalls(tiny_pipe.unet)
    yield c
    c.handle.remove()


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """The bundled demo song, its MIDI file and bend config (read-only for tests)."""
    from bendbridge.bridge.demo_song import write_demo

    return write_demo(tmp_path_factory.mktemp("demo"))


class ServerThread:
    """A RenderServer on free loopback ports, serving from a thread."""

    def __init__(self, model: LoadedModel, root: Path, **kw):
        from bendbridge.server.net.app import RenderServer, ServerConfig

        self.server = RenderServer(
            ServerConfig(control="tcp://127.0.0.1:*", events="tcp://127.0.0.1:*", output_root=root, **kw), model
        )
        self.url, self.events = self.server.control_endpoint, self.server.events_endpoint
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.serve_forever, args=(self.stop,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.server.close()


@pytest.fixture
def start_server():
    """``start_server(model, root, **ServerConfig fields)`` → a running ServerThread, closed after the test."""
    started: list[ServerThread] = []

    def start(model: LoadedModel, root: Path, **kw) -> ServerThread:
        started.append(ServerThread(model, root, **kw))
        return started[-1]

    yield start
    for s in started:
        s.close()


class ServerProcess:
    """``bendbridge serve`` in its own process on free loopback ports (bound with ``*``, read back)."""

    def __init__(self, model: Path, root: Path, *options: str):
        from bendbridge.tools.cmd_server import spawn_server

        self.proc, self.url = spawn_server("--model", str(model), "--output-root", str(root), *options)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)


@pytest.fixture
def saved_tiny_model(tiny_pipe, tmp_path) -> Path:
    """``tiny_pipe`` saved as a diffusers folder whose defaults are 2 steps, guidance 2, 64 px."""
    model = tmp_path / "tiny_model"
    tiny_pipe.save_pretrained(model)
    (model / "bendbridge.json").write_text(json.dumps({"steps": 2, "guidance": 2.0, "size": 64}))
    return model


@pytest.fixture
def server_process():
    """``server_process(model_dir, root, *serve options)`` → a running ServerProcess, killed after the test."""
    started: list[ServerProcess] = []

    def start(model: Path, root: Path, *options: str) -> ServerProcess:
        started.append(ServerProcess(model, root, *options))
        return started[-1]

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.kill()
