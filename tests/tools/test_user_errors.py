"""Every mistake a user can make on the command line ends in one line naming the field and what is
allowed, with exit status 2 — never a traceback, and before any long work.

The list below is the catalogue of mistakes we thought of; add to it when you find another.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bendbridge.server.model import EMBEDDED_MODEL
from bendbridge.tools.cli import main

BAD_RANGE = '[[bend]]\nop = "multiply"\ntarget = "mid_block"\nparams = { factor = 99 }\n'


def config(tmp: Path, text: str, prompts: bool = True) -> str:
    path = tmp / f"config{len(list(tmp.glob('config*.toml')))}.toml"
    path.write_text(('[render]\nprompts = ["a red circle"]\n' if prompts else "") + text)
    return str(path)


def bounce(
    demo,
    tmp: Path,
    *extra: str,
    config_file: str | None = None,
    out: str = "v.mp4",
    audio: str | None = None,
    midi: str | None = None,
) -> list[str]:
    tempo = [] if midi == "" else ["--midi", midi or str(demo["midi"])]  # midi="": no --midi
    return [
        "bounce",
        "--audio",
        audio or str(demo["audio"]),
        *tempo,
        "--config",
        config_file or str(demo["config"]),
        "--out",
        str(tmp / out),
        *extra,
    ]


def _sdxl_folder(tmp: Path) -> str:
    """An SDXL refiner's layout: the second text encoder only."""
    folder = tmp / "sdxl"
    (folder / "text_encoder_2").mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionXLPipeline"}')
    return str(folder)


def not_a(tmp: Path, name: str, content: bytes = b"this is not what it says it is") -> str:
    path = tmp / name
    path.write_bytes(content)
    return str(path)


def steer_build(
    tmp: Path, *extra: str, positive: str = "a red star", target: str = "#8", out: str = "v.safetensors"
) -> list[str]:
    return ["steer", "build", "--positive", positive, "--negative", "a blue star", "--target", target,
            *extra, "--out", str(tmp / out)]  # fmt: skip


def adapt_zork(tmp: Path, *extra: str, out: str = "z.safetensors") -> list[str]:
    """``adapt`` of the concept ``zork`` from the images in ``tmp`` with ``extra`` options."""
    return ["adapt", "--images", str(tmp), "--token", "zork", *extra, "--out", str(tmp / out)]


def steer_toward(tmp: Path, *extra: str) -> list[str]:
    """``steer build --toward fg=red`` (scene pairs of the embedded model) with ``extra`` options."""
    return ["steer", "build", "--toward", "fg=red", *extra, "--target", "#8", "--out", str(tmp / "v.safetensors")]


def patch(tmp: Path, *extra: str) -> list[str]:
    return ["patch", "--clean", "a red star", "--corrupt", "a blue star", *extra, "--out", str(tmp / "m.png")]


# (what the user got wrong, the command line, what the one line must say)
MISTAKES = [
    (
        "video extension",
        lambda d, t: bounce(d, t, out="x.avi"),
        "--out: cannot write 'x.avi': bendbridge writes .mp4 (H.264 + AAC), .mov (ProRes + PCM, for editors)",
    ),
    ("demo video extension", lambda d, t: ["demo", "--out", str(t / "x.webm")], "--out: cannot write 'x.webm'"),
    ("missing audio", lambda d, t: bounce(d, t, audio=str(t / "no.wav")), "--audio: no such file"),
    ("audio that is not audio", lambda d, t: bounce(d, t, audio=not_a(t, "song.wav")), "song.wav: cannot read audio"),
    ("missing config", lambda d, t: bounce(d, t, config_file=str(t / "none.toml")), "--config: no such file"),
    (
        "config not TOML",
        lambda d, t: bounce(d, t, config_file=not_a(t, "c.toml", b"[render\nprompts=")),
        "not valid TOML",
    ),
    (
        "unknown render field",
        lambda d, t: bounce(d, t, config_file=config(t, "[render]\nsed = 1\n", prompts=False)),
        "render.sed: unknown field; did you mean seed",
    ),
    (
        "unknown table",
        lambda d, t: bounce(d, t, config_file=config(t, "[rendr]\n")),
        "rendr: unknown table; did you mean render",
    ),
    ("no prompts", lambda d, t: bounce(d, t, config_file=config(t, "", prompts=False)), "render.prompts:"),
    (
        "negative seed in the config",
        lambda d, t: bounce(d, t, config_file=config(t, '[render]\nprompts = ["x"]\nseed = -1\n', prompts=False)),
        "render.seed: -1 is out of range",
    ),
    (
        "unknown operator",
        lambda d, t: bounce(d, t, config_file=config(t, '[[bend]]\nop = "rotat"\ntarget = "latent"\n')),
        "bend[0].op: unknown operator 'rotat'; did you mean rotate",
    ),
    (
        "parameter out of range",
        lambda d, t: bounce(d, t, config_file=config(t, BAD_RANGE)),
        "bend[0].params.factor: 99 is out of range; allowed [-10, 10]",
    ),
    (
        "mapping to an unknown lane",
        lambda d, t: bounce(
            d,
            t,
            config_file=config(
                t,
                '[[bend]]\nid = "a"\nop = "add"\ntarget = "latent"\n[[param]]\nbend = "a"\nname = "value"\n'
                '[[param.source]]\nkind = "lane"\nname = "cc:1:7"\n',
            ),
        ),
        "param[0].source[0].name: unknown lane 'cc:1:7'",
    ),
    (
        "two tempo sources",
        lambda d, t: bounce(d, t, "--rpp", str(d["midi"])),
        "--rpp: give one tempo source (--midi, --rpp were given), not several",
    ),
    (
        "DAWproject that is not a zip",
        lambda d, t: bounce(d, t, "--dawproject", not_a(t, "s.dawproject"), midi=""),
        "s.dawproject: not a DAWproject: not a zip archive",
    ),
    (
        "Live set that is not gzip",
        lambda d, t: bounce(d, t, "--als", not_a(t, "s.als"), midi=""),
        "s.als: not an Ableton Live set: not gzip-compressed",
    ),
    (
        "a Live set and a MIDI file",
        lambda d, t: bounce(d, t, "--als", not_a(t, "s.als")),
        "--als: give one tempo source (--midi, --als were given), not several",
    ),
    (
        "Ardour session that is not XML",
        lambda d, t: bounce(d, t, "--ardour", not_a(t, "s.ardour"), midi=""),
        "not a valid session file",
    ),
    (
        "Ardour session from a future Ardour",
        lambda d, t: bounce(
            d, t, "--ardour", not_a(t, "s.ardour", b'<Session version="9001" sample-rate="48000"/>'), midi=""
        ),
        "session format 9001 is newer than Ardour 8, which this reader knows",
    ),
    (
        "MIDI file that is not MIDI",
        lambda d, t: bounce(d, t, midi=not_a(t, "x.mid")),
        "x.mid: header: expected 'MThd' at byte 0, found b'this': not a Standard MIDI File",
    ),
    ("zero frame rate", lambda d, t: bounce(d, t, "--fps", "0"), "--fps: frame rate 0 out of range"),
    ("frame rate as text", lambda d, t: bounce(d, t, "--fps", "fast"), "--fps: frame rate 'fast': expected a number"),
    ("empty range", lambda d, t: bounce(d, t, "--start", "3", "--end", "2"), "--end: the range is empty"),
    ("range past the song", lambda d, t: bounce(d, t, "--end", "999"), "--end: 999.000 s is past the end of the audio"),
    (
        "position that is neither seconds nor bar:beat",
        lambda d, t: bounce(d, t, "--start", "x:y"),
        "--start: 'x:y': expected seconds",
    ),
    ("image size too small", lambda d, t: bounce(d, t, "--size", "8"), "--size: 8 is out of range; allowed [16, 4096]"),
    (
        "image size the model cannot take",
        lambda d, t: bounce(d, t, "--size", "100", "--end", "0.2"),
        "render.width: 100 is not a multiple of 16, which this model needs",
    ),
    ("no steps", lambda d, t: bounce(d, t, "--steps", "0"), "--steps: 0 is out of range; allowed [1, 1000]"),
    ("negative seed", lambda d, t: bounce(d, t, "--seed", "-1"), "--seed: -1 is out of range"),
    ("empty batch", lambda d, t: bounce(d, t, "--batch", "0"), "--batch: 0 is out of range; allowed [1, 1024]"),
    (
        "server and a local model",
        lambda d, t: bounce(d, t, "--server", "tcp://127.0.0.1:9", "--model", str(t)),
        "--model: a bounce through --server renders with the server's model",
    ),
    (
        "server address that is not one",
        lambda d, t: bounce(d, t, "--server", "my-gpu-box"),
        "--server: cannot connect to 'my-gpu-box'",
    ),
    (
        "no server timeout",
        lambda d, t: bounce(d, t, "--server", "tcp://127.0.0.1:9", "--server-timeout", "0"),
        "--server-timeout: 0.0 is out of range",
    ),
    ("missing lane file", lambda d, t: bounce(d, t, "--lanes", str(t / "lanes.csv")), "--lanes: no such file"),
    (
        "lane file without a header",
        lambda d, t: bounce(d, t, "--lanes", not_a(t, "lanes.csv", b"1,2\n")),
        "lanes.csv: line 1: expected a header",
    ),
    (
        "video beside a file, not a folder",
        lambda d, t: bounce(d, t, out=f"{not_a(t, 'file')}/v.mp4"),
        "cannot create the folder",
    ),
    (
        "image format",
        lambda d, t: ["render", "--prompt", "x", "--out", str(t / "x.gif")],
        "--out: cannot write 'x.gif'",
    ),
    (
        "prompt weights as text",
        lambda d, t: ["render", "--prompt", "x", "--prompt-weights", "a,b", "--out", str(t / "x.png")],
        "--prompt-weights: 'a,b': expected comma-separated numbers",
    ),
    (
        "prompt weights for other prompts",
        lambda d, t: ["render", "--prompt", "x", "--prompt-weights", "1,1", "--out", str(t / "x.png")],
        "--prompt-weights: '1,1': expected 1 finite weights",
    ),
    (
        "unknown scheduler",
        lambda d, t: ["render", "--prompt", "x", "--scheduler", "fast", "--out", str(t / "x.png")],
        "--scheduler: 'fast' is not valid; allowed: default, ddim",
    ),
    (
        "missing plan file",
        lambda d, t: ["render", "--prompt", "x", "--plan", str(t / "p.toml"), "--out", str(t / "x.png")],
        "p.toml: no such plan file",
    ),
    (
        "bad bend spec",
        lambda d, t: ["render", "--prompt", "x", "--bend", "add:value=1", "--out", str(t / "x.png")],
        "expected OP[:param=value…]@TARGET",
    ),
    (
        "render steps",
        lambda d, t: ["render", "--prompt", "x", "--steps", "0", "--out", str(t / "x.png")],
        "--steps: 0 is out of range",
    ),
    ("model folder that does not exist", lambda d, t: ["layers", "--model", str(t / "nope")], "--model: model folder"),
    ("model folder that is not a pipeline", lambda d, t: ["layers", "--model", str(t)], "has no model_index.json"),
    (
        "missing sweep file",
        lambda d, t: ["sweep", "--config", str(t / "s.toml"), "--out", str(t / "s.png")],
        "no such sweep file",
    ),
    (
        "binding beyond loopback without keys",
        lambda d, t: ["serve", "--bind", "tcp://0.0.0.0:5555"],
        "--bind: refusing to bind tcp://0.0.0.0:5555 without authentication",
    ),
    ("endpoint that is not one", lambda d, t: ["serve", "--bind", "localhost:5555"], "expected tcp://HOST:PORT"),
    (
        "missing key folder",
        lambda d, t: ["serve", "--bind", "tcp://0.0.0.0:5555", "--keys", str(t / "keys")],
        "--keys:",
    ),
    ("server batch", lambda d, t: ["serve", "--max-batch", "0"], "--max-batch: 0 is out of range"),
    ("server lanes", lambda d, t: ["serve", "--lanes", "0"], "--lanes: 0 is out of range"),
    ("server decoder", lambda d, t: ["serve", "--decoder", str(t)], "is not a diffusers AutoencoderTiny folder"),
    (
        "client key name",
        lambda d, t: ["keys", "--dir", str(t / "k"), "--client", "my laptop"],
        "--client: 'my laptop': letters",
    ),
    ("client keys missing", lambda d, t: ["ping", "--keys", str(t), "--client", "me"], "--keys:"),
    (
        "live config missing",
        lambda d, t: ["bridge", "--config", str(t / "live.toml")],
        "live.toml: no such config file",
    ),
    (
        "live link beyond loopback",
        lambda d, t: ["bridge", "--config", str(d["config"]), "--link", "tcp://192.0.2.1:5557"],
        "--link: tcp://192.0.2.1:5557: the plugin link listens on loopback only",
    ),
    (
        "live link and MIDI clock at once",
        lambda d, t: ["bridge", "--config", str(d["config"]), "--link", "tcp://127.0.0.1:5557", "--clock"],
        "--clock: give --link (the plugin's transport) or --clock (MIDI clock), not both",
    ),
    (
        "demo fast and a model at once",
        lambda d, t: ["demo", "--fast", "--model", str(t), "--out", str(t / "x.mp4")],
        "--fast: --fast is the fast model: give --fast or --model, not both",
    ),
    (
        "fp16 on the CPU",
        lambda d, t: [
            "render",
            "--prompt",
            "a red circle",
            "--device",
            "cpu",
            "--precision",
            "fp16",
            "--out",
            str(t / "x.png"),
        ],  # fmt: skip
        "--precision: fp16 runs only on a GPU; on the CPU use fp32 or bf16",
    ),
    (
        "live frame rate",
        lambda d, t: ["bridge", "--config", str(d["config"]), "--fps", "0"],
        "--fps: frame rate 0 out of range",
    ),
    (
        "live audio input that is not one",
        lambda d, t: ["bridge", "--config", str(d["config"]), "--audio-in", "jack"],
        "--audio-in: 'jack': expected jack:PORT, device:NAME or plugin",
    ),
    (
        "live audio from JACK and the plugin link at once",
        lambda d, t: ["bridge", "--config", str(d["config"]), "--link", "tcp://127.0.0.1:5557", "--audio-in", "jack:x"],
        "--audio-in: with --link the features hear the plugin's audio: drop one of them",
    ),
    (
        "viewer beyond loopback without asking",
        lambda d, t: ["bridge", "--config", str(d["config"]), "--osc-port", "0", "--view-host", "0.0.0.0"],
        "--view-host: '0.0.0.0' is not a loopback address; add --view-remote",
    ),
    (
        "viewer port out of range",
        lambda d, t: ["bridge", "--config", str(d["config"]), "--view-port", "70000"],
        "--view-port: 70000 is out of range",
    ),
    (
        "MIDI learn for an unknown bend",
        lambda d, t: ["midi-learn", "--config", str(d["config"]), "--param", "spn.angle"],
        "midi[0].bend: no bend with id 'spn'; did you mean spin",
    ),
    (
        "MIDI learn for a parameter that is not per frame",
        lambda d, t: ["midi-learn", "--config", str(d["config"]), "--param", "spin.plane"],
        "'plane' is not a per-frame parameter",
    ),
    ("recording to a WAV", lambda d, t: ["record", "--out", str(t / "x.wav")], "--out: 'x.wav': a recording is a .bbs"),
    (
        "recording link beyond loopback",
        lambda d, t: ["record", "--out", str(t / "x.bbs"), "--link", "tcp://0.0.0.0:5557"],
        "--link: tcp://0.0.0.0:5557: the plugin link listens on loopback only",
    ),
    (
        "recording for no time",
        lambda d, t: ["record", "--out", str(t / "x.bbs"), "--seconds", "0"],
        "--seconds: 0",
    ),
    (
        "bounce of a file that is not a recording",
        lambda d, t: [
            "bounce",
            "--recorded",
            not_a(t, "take.bbs"),
            "--config",
            str(d["config"]),
            "--out",
            str(t / "v.mp4"),
        ],
        "--recorded: take.bbs is not a bendbridge recording",
    ),
    (
        "bounce of a recording with a second tempo source",
        lambda d, t: [
            "bounce",
            "--recorded",
            not_a(t, "take.bbs"),
            "--midi",
            str(d["midi"]),
            "--config",
            str(d["config"]),
            "--out",
            str(t / "v.mp4"),
        ],
        "--midi: a recording brings its own tempo map",
    ),
    (
        "bounce without a song",
        lambda d, t: ["bounce", "--config", str(d["config"]), "--out", str(t / "v.mp4")],
        "--audio: the song is required (or --recorded FILE.bbs, which holds it)",
    ),
    (
        "plugin built to a folder and installed",
        lambda d, t: ["plugin", "build", "--out", str(t), "--install"],
        "--install: give either --out DIR or --install",
    ),
    (
        "random block sizes",
        lambda d, t: [
            "host-sim",
            str(d["audio"]),
            "--config",
            str(d["config"]),
            "--out",
            str(t / "v.mp4"),
            "--random-blocks",
            "big",
        ],
        "--random-blocks: 'big': expected LO-HI",
    ),
    (
        "host-sim video extension",
        lambda d, t: ["host-sim", str(d["audio"]), "--config", str(d["config"]), "--out", str(t / "v.mkv")],
        "--out: cannot write 'v.mkv'",
    ),
    (
        "steer build broadcast",
        lambda d, t: steer_build(t, "--broadcast", "everywhere"),
        "--broadcast: 'everywhere' is not valid; allowed: channel, spatial",
    ),
    ("steer build seeds", lambda d, t: steer_build(t, "--seeds", "0"), "--seeds: 0 is out of range [1, 256]"),
    (
        "steer build token vector at a module",
        lambda d, t: steer_build(t, "--broadcast", "token"),
        "--target: a token vector (--broadcast token) steers --target text, and only it",
    ),
    (
        "steer build text target without token",
        lambda d, t: steer_build(t, target="text"),
        "--target: a token vector (--broadcast token) steers --target text, and only it",
    ),
    (
        "steer build tokens",
        lambda d, t: steer_build(t, "--broadcast", "token", "--tokens", "0", target="text"),
        "--tokens: 0 is out of range [1, 16]",
    ),
    (
        "steer build token vector unpaired",
        lambda d, t: steer_build(t, "--broadcast", "token", positive="a red star|a red ring", target="text"),
        "--negative: a token vector pairs the prompts one to one: 2 positive, 1 negative",
    ),
    (
        "steer build empty prompts",
        lambda d, t: steer_build(t, positive="|"),
        "--positive: expected prompts separated by '|'",
    ),
    ("steer build output", lambda d, t: steer_build(t, out="v.pt"), "--out: 'v.pt': expected a .safetensors file"),
    (
        "steer build unknown module",
        lambda d, t: steer_build(t, target="up_blocks.9"),
        "--target: unknown layer 'up_blocks.9'",
    ),
    (
        "steer build toward and prompts",
        lambda d, t: steer_build(t, "--toward", "fg=red"),
        "--toward: give either --toward or --positive/--negative, not both",
    ),
    (
        "steer build from without toward",
        lambda d, t: steer_build(t, "--from", "blue"),
        "--from: goes with --toward (scene pairs of the embedded model)",
    ),
    (
        "steer build from the label steered toward",
        lambda d, t: steer_toward(t, "--from", "red"),
        "--from: 'red' is the label steered toward; name another",
    ),
    (
        "steer build from an unknown class",
        lambda d, t: steer_toward(t, "--from", "mauve"),
        "--from: 'fg=mauve': fg is one of red, orange",
    ),
    (
        "steer build toward an unknown class",
        lambda d, t: ["steer", "build", "--toward", "fg=mauve", "--target", "#8", "--out", str(t / "v.safetensors")],
        "--toward: 'fg=mauve': fg is one of red, orange",
    ),
    (
        "steer build pairs",
        lambda d, t: [
            "steer",
            "build",
            "--toward",
            "fg=red",
            "--pairs",
            "0",
            "--target",
            "#8",
            "--out",
            str(t / "v.safetensors"),
        ],
        "--pairs: 0 is out of range [1, 256]",
    ),
    (
        "steer build without prompts",
        lambda d, t: ["steer", "build", "--target", "#8", "--out", str(t / "v.safetensors")],
        "--positive: give --positive and --negative prompt sets, or --toward ATTR=LABEL",
    ),
    (
        "steer sweep seeds",
        lambda d, t: [
            "steer",
            "sweep",
            "--bend",
            "steer:vector=red.safetensors@#45",
            "--watch",
            "fg=red",
            "--seeds",
            "0",
            "--out",
            str(t / "c.png"),
        ],
        "--seeds: 0 is out of range [1, 64]",
    ),
    (
        "steer sweep watch",
        lambda d, t: [
            "steer",
            "sweep",
            "--bend",
            "steer:vector=red_blue.safetensors@#45",
            "--watch",
            "fg=mauve",
            "--out",
            str(t / "c.png"),
        ],
        "--watch: 'fg=mauve': fg is one of red, orange",
    ),
    (
        "steer sweep values",
        lambda d, t: [
            "steer",
            "sweep",
            "--bend",
            "steer:vector=red_blue.safetensors@#45",
            "--watch",
            "fg=red",
            "--values",
            "0,lots",
            "--out",
            str(t / "c.png"),
        ],
        "--values: '0,lots': expected comma-separated numbers",
    ),
    (
        "steer vector missing",
        lambda d, t: [
            "render",
            "--prompt",
            "a blue ring",
            "--bend",
            "steer:vector=nope.safetensors:alpha=1@#45",
            "--out",
            str(t / "x.png"),
        ],
        "bend[0].params.vector: no such file 'nope.safetensors'; "
        "the model ships dotted.safetensors, red.safetensors, red_blue.safetensors, red_blue_token.safetensors, "
        "sae_up1_attn0.safetensors",
    ),
    (
        "steer vector on another model",
        lambda d, t: [
            "render",
            "--model",
            "fast",
            "--prompt",
            "a blue ring",
            "--bend",
            "steer:vector=red_blue.safetensors:alpha=1@up_blocks.1.attentions.1",
            "--out",
            str(t / "x.png"),
        ],
        "red_blue.safetensors is a steering vector made on model 'embedded'",
    ),
    (
        "sae feature out of range",
        lambda d, t: [
            "render",
            "--prompt",
            "a blue ring",
            "--bend",
            "sae_feature:sae=sae_up1_attn0.safetensors:feature=512@up_blocks.1.attentions.0",
            "--out",
            str(t / "x.png"),
        ],
        "bend[0].params.feature: 512 out of range; sae_up1_attn0.safetensors has features [0, 511]",
    ),
    (
        "patch metric",
        lambda d, t: patch(t, "--metric", "redness"),
        "--metric: 'redness' is not valid; allowed: colour, shape, background, latent, pixels",
    ),
    ("patch seeds", lambda d, t: patch(t, "--seeds", "1,x"), "--seeds: '1,x': expected comma-separated integers"),
    (
        "patch steps",
        lambda d, t: patch(t, "--steps", "4-9"),
        "--steps: '4-9' is not a step range within [0, 5] (6 steps)",
    ),
    (
        "patch region",
        lambda d, t: patch(t, "--metric", "pixels", "--region", "0.5,0,0.2,1"),
        "--region: x1 must exceed x0 and y1 must exceed y0",
    ),
    (
        "sae train k",
        lambda d, t: ["sae", "train", "--target", "#8", "--k", "0", "--out", str(t / "s.safetensors")],
        "--k: 0 is out of range [1, 512] (at most --features)",
    ),
    (
        "sae features missing file",
        lambda d, t: ["sae", "features", "--sae", str(t / "none.safetensors"), "--out", str(t / "s.png")],
        "--sae: no such file",
    ),
    (
        "demo steer with fast",
        lambda d, t: ["demo", "--steer", "--fast", "--out", str(t / "d.mp4")],
        "--steer: the steering demo's files are made for the embedded model",
    ),
    (
        "adapter demo on the fast model",
        lambda d, t: ["demo", "--adapter", "--fast", "--out", str(t / "d.mp4")],
        "--adapter: the adapter demo's files are made for the embedded model",
    ),
    (
        "two special demos",
        lambda d, t: ["demo", "--adapter", "--steer", "--out", str(t / "d.mp4")],
        "--adapter: give one of --steer, --adapter, --footage, not --steer and --adapter",
    ),
    (
        "footage demo with other footage",
        lambda d, t: ["demo", "--footage", "--init-video", str(t / "x.mp4"), "--out", str(t / "d.mp4")],
        "--init-video: --footage is the demo with the bundled clip: give --footage or --init-video",
    ),
    (
        "adapt without images",
        lambda d, t: ["adapt", "--token", "zork", "--out", str(t / "z.safetensors")],
        "--images: give --images DIR and --token WORD (or --report)",
    ),
    (
        "adapt token",
        lambda d, t: ["adapt", "--images", str(t), "--token", "two words", "--out", str(t / "z.safetensors")],
        "--token: 'two words': expected one word",
    ),
    (
        "adapt output",
        lambda d, t: adapt_zork(t, out="z.pt"),
        "--out: 'z.pt': expected a .safetensors file",
    ),
    (
        "adapt strategy",
        lambda d, t: adapt_zork(t, "--after", str(t / "a.safetensors"), "--strategy", "hope"),
        "--strategy: 'hope' is not valid; allowed: naive, merge, orthogonal, relevant",
    ),
    (
        "adapt after a missing adapter",
        lambda d, t: adapt_zork(t, "--after", str(t / "a.safetensors")),
        "--after: no such adapter",
    ),
    (
        "adapt replay",
        lambda d, t: adapt_zork(t, "--replay", "-4"),
        "--replay: -4 is out of range [0, 10000]",
    ),
    (
        "adapt report output",
        lambda d, t: ["adapt", "--report", "--out", str(t / "table.png")],
        "--out: 'table.png': with --report, expected a .json file",
    ),
    (
        "lora on a module",
        lambda d, t: [
            "render",
            "--prompt",
            "a red star",
            "--bend",
            "lora:adapter=dotted.safetensors@up_blocks.1",
            "--out",
            str(t / "x.png"),
        ],
        "bend[0].op: 'lora' (adapters) does not apply to the module target; it acts on the whole denoiser",
    ),
    (
        "render on a file that is not a checkpoint",
        lambda d, t: [
            "render",
            "--prompt",
            "a star",
            "--model",
            not_a(t, "model.safetensors"),
            "--out",
            str(t / "x.png"),
        ],
        "--model: model.safetensors is not a readable safetensors file (SafetensorError: Error while deserializing",
    ),
    (
        "render on a .ckpt that is not a checkpoint",
        lambda d, t: ["render", "--prompt", "a star", "--model", not_a(t, "m.ckpt"), "--out", str(t / "x.png")],
        "--model: m.ckpt is not a readable PyTorch checkpoint file",
    ),
    (
        "render on an SDXL refiner folder",
        lambda d, t: ["render", "--prompt", "a star", "--model", _sdxl_folder(t), "--out", str(t / "x.png")],
        "is an SDXL refiner (one text encoder, aesthetic-score conditioning); bendbridge renders SDXL base and",
    ),
    (
        "bounce on an unknown cluster",
        lambda d, t: bounce(d, t, "--cluster", "spark"),
        "--cluster: 'spark' is not valid; allowed: ray (a private local Ray), ray://HOST:PORT, auto",
    ),
    (
        "bounce on a cluster with no workers",
        lambda d, t: bounce(d, t, "--cluster", "ray", "--workers", "0"),
        "--workers: 0 is outside 1…256",
    ),
    (
        "bounce on a cluster in a chosen precision",
        lambda d, t: bounce(d, t, "--cluster", "ray", "--precision", "fp32"),
        "--precision: with --cluster, its workers use the model's own",
    ),
    (
        "bounce from missing footage",
        lambda d, t: bounce(d, t, "--init-video", str(t / "nope.mp4")),
        "--init-video: no such file",
    ),
    (
        "bounce from footage that is not a video",
        lambda d, t: bounce(d, t, "--init-video", not_a(t, "clip.mp4")),
        "--init-video: clip.mp4 is not a readable video",
    ),
    (
        "bounce from a song instead of footage",
        lambda d, t: bounce(d, t, "--init-video", str(d["audio"])),
        "--init-video: song.wav has no video stream",
    ),
    (
        "bounce from a missing still",
        lambda d, t: bounce(d, t, "--init-image", str(t / "nope.png")),
        "--init-image: no such file",
    ),
    (
        "bounce from a still that is not a picture",
        lambda d, t: bounce(d, t, "--init-image", not_a(t, "still.png")),
        "--init-image: still.png is not a readable image",
    ),
    (
        "bounce inverted past its steps",
        lambda d, t: bounce(d, t, "--init-video", str(d["audio"]), "--steps", "6", "--invert-to", "7"),
        "--invert-to: 7 is not a step of this render: 0…6",
    ),
    (
        "render from a missing picture",
        lambda d, t: ["render", "--prompt", "a red star", "--init-image", str(t / "no.png"), "--out", str(t / "x.png")],
        "--init-image: no such file",
    ),
    (
        "render from a picture that is not one",
        lambda d, t: ["render", "--prompt", "a star", "--init-image", not_a(t, "p.png"), "--out", str(t / "x.png")],
        "--init-image: p.png is not a readable image",
    ),
    (
        "render from a picture with another scheduler",
        lambda d, t: [
            "render",
            "--prompt",
            "a red star",
            "--init-image",
            not_a(t, "p.png"),
            "--scheduler",
            "euler",
            "--out",
            str(t / "x.png"),
        ],  # fmt: skip
        "--scheduler: --init-image denoises with ddim (its inversion's), not euler",
    ),
    (
        "invert too many iterations",
        lambda d, t: ["invert", "--image", not_a(t, "p.png"), "--invert-iterations", "99", "--out", str(t / "s.png")],
        "--invert-iterations: 99 is outside 1…50",
    ),
    (
        "invert to a step the render does not have",
        lambda d, t: ["invert", "--image", not_a(t, "p.png"), "--invert-to", "9", "--out", str(t / "s.png")],
        "--invert-to: 9 is not a step of this render: 0…6",
    ),
    (
        "analyse pca with two prompts",
        lambda d, t: ["analyse", "pca", "a red star", "a blue star", "--out", str(t / "p.png")],
        "PROMPT: 2 prompts; a PCA plane needs 3 to 64",
    ),
    (
        "analyse pca grid",
        lambda d, t: ["analyse", "pca", "a", "b", "c", "--grid", "40", "--out", str(t / "p.png")],
        "--grid: 40 is outside 2…12",
    ),
    (
        "analyse figure format",
        lambda d, t: ["analyse", "pca", "a", "b", "c", "--out", str(t / "p.svg")],
        "--out: 'p.svg': the figure is a .png",
    ),
    (
        "analyse noise on a prompt the classifier cannot judge",
        lambda d, t: ["analyse", "noise", "a teapot", "--out", str(t / "n.png")],
        "PROMPT: 'a teapot' names no colour or shape the scene classifier knows",
    ),
    (
        "analyse noise with a missing clip folder",
        lambda d, t: ["analyse", "noise", "a teapot", "--clip", str(t / "clip"), "--out", str(t / "n.png")],
        "--clip: no such folder",
    ),
    (
        "analyse noise seeds",
        lambda d, t: ["analyse", "noise", "a red star", "--seeds", "1", "--out", str(t / "n.png")],
        "--seeds: 1 is outside 2…1024",
    ),
    (
        "analyse perturb delta",
        lambda d, t: ["analyse", "perturb", "a red star", "--delta", "0", "--out", str(t / "p.png")],
        "--delta: 0.0 is outside [-2, 0) ∪ (0, 2]",
    ),
    (
        "analyse attention on a prompt too long",
        lambda d, t: ["analyse", "attention", " ".join(["red"] * 60), "--out", str(t / "a.png")],
        "PROMPT: 60 tokens; the text encoder reads at most 30",
    ),
    (
        "pca bend with too few prompts",
        lambda d, t: [
            "render",
            "--prompt",
            "a red star",
            "--bend",
            "pca_move:prompts=a red star|a blue star:x=1@text",
            "--out",
            str(t / "x.png"),
        ],  # fmt: skip
        "bend[0].params.prompts: 2 prompts; a PCA plane needs 3 to 64",
    ),
    (
        "invert sheet format",
        lambda d, t: ["invert", "--image", not_a(t, "p.png"), "--out", str(t / "s.jpg")],
        "--out: 's.jpg': the sheet is a .png",
    ),
]


@pytest.mark.parametrize("what,argv,says", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_a_mistake_is_one_line_and_exit_status_2(what, argv, says, demo, tmp_path, capsys):
    if (
        any(
            a in ("render", "layers", "sweep", "steer", "patch", "sae", "adapt", "invert")
            for a in argv(demo, tmp_path)[:1]
        )
        and not (EMBEDDED_MODEL / "model_index.json").exists()
    ):
        pytest.skip("embedded model not exported")
    code = main(argv(demo, tmp_path))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("bendbridge ") and ": error: " in lines[0], err
    assert says in lines[0]


def test_a_wrong_video_extension_is_refused_at_once_without_the_render_side(demo, tmp_path):
    """``bounce --out x.avi`` exits 2 with one line before reading the song or importing torch."""
    blocked = (
        "import sys\nclass B:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'diffusers', 'transformers'):\n"
        "            raise ModuleNotFoundError(name, name=name)\n"
        "sys.meta_path.insert(0, B())\nfrom bendbridge.tools.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    t = time.perf_counter()
    r = subprocess.run(
        [sys.executable, "-c", blocked, *bounce(demo, tmp_path, out="x.avi")],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=60,
    )
    elapsed = time.perf_counter() - t
    print(f"bounce --out x.avi answered in {elapsed:.2f} s")
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1
    assert "bendbridge bounce: error: --out: cannot write 'x.avi'" in r.stderr and "Traceback" not in r.stderr
