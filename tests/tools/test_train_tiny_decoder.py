"""The tiny-decoder training tool on the tiny test pipeline: seeded bent latents, resumable training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bendbridge.tools import train_tiny_decoder as ttd


def test_bent_latents_are_seeded_and_keep_their_shape():
    z = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(0))
    a = ttd.bend_latent(z, np.random.default_rng((1, 2)))
    b = ttd.bend_latent(z, np.random.default_rng((1, 2)))
    assert a.shape == z.shape and torch.equal(a, b)
    assert any(not torch.equal(ttd.bend_latent(z, np.random.default_rng(k)), z) for k in range(8))


def test_training_resumes_from_its_checkpoint_to_the_same_weights(tiny_pipe, tmp_path, monkeypatch):
    cfg = ttd.TinyConfig()
    cfg.views, cfg.chunk, cfg.batch, cfg.warmup, cfg.steps, cfg.checkpoint_every = 2, 8, 4, 1, 4, 1
    base = torch.randn(6, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    for run in ("straight", "interrupted"):
        (tmp_path / run).mkdir()
    data = ttd.stage_latents(tmp_path / "straight", tiny_pipe.vae, base, cfg)
    assert data["z"].shape == (12, 4, 16, 16) and data["images"].dtype == torch.uint8
    assert data["bent"].tolist() == [False, True] * 6  # the first view of each latent is unbent
    straight = ttd.stage_student(tmp_path / "straight", data, 8, cfg, log=lambda _r: None)

    calls = []

    def interrupt_at_the_third_step(pairs, decay):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        ema_update(pairs, decay)

    ema_update = ttd._ema_update
    monkeypatch.setattr(ttd, "_ema_update", interrupt_at_the_third_step)
    with pytest.raises(KeyboardInterrupt):
        ttd.stage_student(tmp_path / "interrupted", data, 8, cfg, log=lambda _r: None)
    monkeypatch.setattr(ttd, "_ema_update", ema_update)
    resumed = ttd.stage_student(tmp_path / "interrupted", data, 8, cfg, log=lambda _r: None)
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    report = ttd.held_out_error(resumed, data, 8)
    assert set(report) == {"unbent", "bent"} and report["unbent"]["frames"] == 2
