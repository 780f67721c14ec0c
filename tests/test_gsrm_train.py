"""GSRM SFT through the real TRL SFTTrainer on CPU: masks, loss, the recipe's checkpoint and card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rlkd_bench.configs import GSRMTrainConfig
from rlkd_bench.gsrm_sft import build_trainer, choose_loss_mode

pytestmark = pytest.mark.slow


def _cfg(data: Path, out: Path, **kw) -> GSRMTrainConfig:
    base = dict(data=str(data), output_dir=str(out), use_cpu=True, dtype="float32", max_length=2048,
                max_train_samples=2, per_device_train_batch_size=2, logging_steps=1, report_to="none",
                eval_split=None)
    base.update(kw)
    return GSRMTrainConfig(**base)


@pytest.fixture(scope="module")
def fixed_batch(gsrm_data_dir, tiny_model_dir, tmp_path_factory):
    """An SFTTrainer on 2 rows with batch 2 (every step sees the same batch), loss mode auto."""
    out = tmp_path_factory.mktemp("sft") / "m"
    cfg = _cfg(gsrm_data_dir, out, model=str(tiny_model_dir), max_steps=6, learning_rate=5e-3,
               warmup_ratio=0.0)
    trainer, data, mode, _ = build_trainer(cfg, out.with_name("m.run"))
    return trainer, data, mode


def _with_qwen25_template(tiny_model_dir, dest):
    """The tiny model with Qwen2.5-Instruct's own chat template (no {% generation %} markers),
    as the paper's config meets it; TRL ships that template."""
    from trl.chat_template_utils import qwen2_5_chat_template

    shutil.copytree(tiny_model_dir, dest)
    (dest / "chat_template.jinja").write_text(qwen2_5_chat_template)
    return dest


@pytest.mark.parametrize("case", ["auto", "completion", "qwen2.5-template"])
def test_labels_cover_only_the_assistant_turn(fixed_batch, gsrm_data_dir, tiny_model_dir, tmp_path, case):
    if case == "auto":
        trainer, data, mode = fixed_batch
    elif case == "completion":
        cfg = _cfg(gsrm_data_dir, tmp_path / "m", model=str(tiny_model_dir), loss="completion")
        trainer, data, mode, _ = build_trainer(cfg, tmp_path / "m.run")
    else:  # TRL swaps in its training version of the template, with markers
        model = _with_qwen25_template(tiny_model_dir, tmp_path / "qwen-template")
        cfg = _cfg(gsrm_data_dir, tmp_path / "m", model=str(model))
        trainer, data, mode, _ = build_trainer(cfg, tmp_path / "m.run")
        from trl.chat_template_utils import has_generation_markers, qwen2_5_chat_template

        tok_template = trainer.processing_class.chat_template
        assert tok_template == qwen2_5_chat_template and not has_generation_markers(tok_template)
    assert mode == ("completion" if case == "completion" else "assistant")
    tok = trainer.processing_class
    for i in range(len(trainer.train_dataset)):
        row = trainer.train_dataset[i]
        ids, labels = row["input_ids"], row["labels"]
        trained_at = [k for k, lab in enumerate(labels) if lab != -100]
        first, last = trained_at[0], trained_at[-1]
        # nothing before the assistant turn is trained on; the turn itself is, in one piece
        # (TRL's Qwen2.5 training template puts the newline after the role inside the turn)
        assert tok.decode(ids[:first]).rstrip("\n").endswith("<|im_start|>assistant")
        assert labels[first : last + 1] == ids[first : last + 1]
        assert tok.decode(ids[last + 1 :]).strip() == ""  # at most the template's closing newline
        steps = data.train[i]["messages"][-1]["content"]
        trained = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
        assert trained.strip("\n") == steps + "<|im_end|>"  # the stop token is learned too
        system_and_user = tok.decode(ids[:first])
        assert data.train[i]["messages"][1]["content"][:200] in system_and_user


def test_template_without_markers_falls_back_to_completion_loss(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert choose_loss_mode(tok, "auto") == "assistant"
    tok.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    assert choose_loss_mode(tok, "auto") == "completion"
    from rlkd_bench.errors import ConfigError

    with pytest.raises(ConfigError, match="generation"):
        choose_loss_mode(tok, "assistant")


def test_loss_goes_down_on_a_fixed_batch(fixed_batch):
    trainer, _, _ = fixed_batch
    before = trainer.evaluate(eval_dataset=trainer.train_dataset)["eval_loss"]
    trainer.train()
    after = trainer.evaluate(eval_dataset=trainer.train_dataset)["eval_loss"]
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 6
    assert after < before - 1.0, (before, after)
    assert losses[-1] < losses[0]


def test_recipe_writes_a_checkpoint_that_loads_and_generates(gsrm_checkpoint, gsrm_data_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ckpt = gsrm_checkpoint
    names = {p.name for p in ckpt.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md", "manifest.json"} <= names
    assert "training_args.bin" not in names  # pickles stay out of the product
    assert not (ckpt.parent / "gsrm.run" / "final").exists()  # staged, then renamed into place

    manifest = json.loads((ckpt / "manifest.json").read_text())
    data_manifest = json.loads((gsrm_data_dir / "manifest.json").read_text())
    assert manifest["product"] == "gsrm-checkpoint"
    assert manifest["params"]["loss_mode"] == "assistant"
    assert manifest["params"]["config"]["max_steps"] == 3
    assert manifest["counts"]["steps"] == 3
    assert manifest["prompt_versions"]["gsrm"] == data_manifest["prompt_versions"]["gsrm"]
    assert manifest["params"]["data_manifest"]["counts"] == data_manifest["counts"]
    assert manifest["inputs"]["data"]["sha256"]
    card = (ckpt / "README.md").read_text()
    assert data_manifest["prompt_versions"]["gsrm"] in card
    assert "learning_rate: 0.001" in card and "| step | train loss |" in card
    assert "recipes/train_gsrm.py" in card

    tok = AutoTokenizer.from_pretrained(ckpt)
    model = AutoModelForCausalLM.from_pretrained(ckpt)
    prompt = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], add_generation_prompt=True,
                                     return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    assert out.shape[1] == prompt["input_ids"].shape[1] + 8 or tok.eos_token_id in out[0].tolist()
