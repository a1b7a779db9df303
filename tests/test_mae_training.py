"""Vision-module training: the from-scratch MAE script, decoder-only fine-tuning, the optional LPIPS loss."""

import json

import pytest
import torch

from conftest import build_tiny


def test_mae_finetune_script_from_scratch(tmp_path, capsys):
    from lm4lv.commands.mae_finetune import main as mae_main
    from lm4lv.modeling_lm4lv import MAEVisionModule

    mae_main(["--from_scratch", "--mode", "masked", "--then_decoder", "--steps", "3", "--batch_size", "8",
              "--warmup_steps", "1", "--max_images", "16", "--output_dir", str(tmp_path / "mae")])
    out = capsys.readouterr().out
    assert "before: PSNR" in out and "after:  PSNR" in out
    report = json.loads((tmp_path / "mae" / "reconstruction.json").read_text())
    assert report["stages"] == ["masked", "decoder"]
    model = MAEVisionModule.from_pretrained(tmp_path / "mae")
    assert model.config.mask_ratio == 0.0  # saved ready for unmasked use


def test_decoder_only_training_freezes_the_encoder():
    from lm4lv.trainers.mae_training import train_vision_module

    model, _ = build_tiny()
    mae = model.vision_model
    encoder = {k: v.clone() for k, v in mae.vit.state_dict().items()}
    decoder = {k: v.clone() for k, v in mae.decoder.state_dict().items()}
    images = torch.rand(8, 3, 32, 32)
    losses = train_vision_module(mae, images, mode="decoder", steps=15, batch_size=8, learning_rate=3e-3,
                                 warmup_steps=1, progress=False)
    assert losses[-1] < losses[0]
    assert all(torch.equal(v, mae.vit.state_dict()[k]) for k, v in encoder.items())
    assert any(not torch.equal(v, mae.decoder.state_dict()[k]) for k, v in decoder.items())
    assert not any(p.requires_grad for p in mae.parameters())  # frozen again afterwards


def test_lpips_unavailable_is_a_clear_error(monkeypatch):
    import builtins

    from lm4lv.trainers.mae_training import train_vision_module

    real_import = builtins.__import__

    def no_lpips(name, *args, **kwargs):
        if name == "lpips":
            raise ImportError("No module named 'lpips'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_lpips)
    model, _ = build_tiny()
    with pytest.raises(RuntimeError, match="LPIPS needs the optional `lpips` package.*lpips_weight=0"):
        train_vision_module(model.vision_model, torch.rand(4, 3, 32, 32), lpips_weight=1.0, steps=1)
