"""A tiny Hugging Face Trainer run, shared by the integration tests and the script they run under
``otel-flops run`` (so that script imports nothing of otel_flops)."""

from __future__ import annotations

import torch
import transformers


class TokenDataset(torch.utils.data.Dataset):
    """16 sequences of 12 token ids from a fixed seed; labels are the inputs (causal LM)."""

    def __init__(self) -> None:
        self.ids = torch.randint(0, 64, (16, 12), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def hf_trainer(output_dir, callbacks=(), evaluate: bool = False) -> transformers.Trainer:
    """A tiny GPT-2 (2 layers, width 32, vocabulary 64) from its config, 3 steps of batch 4, logged every step
    (``evaluate``: and evaluated on the same 16 sequences after every step)."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64, n_positions=16,
                                     bos_token_id=0, eos_token_id=0)
    args = transformers.TrainingArguments(output_dir=str(output_dir), max_steps=3, per_device_train_batch_size=4,
                                          logging_steps=1, report_to=[], use_cpu=True, save_strategy="no",
                                          disable_tqdm=True, seed=0, eval_strategy="steps" if evaluate else "no",
                                          eval_steps=1)
    return transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args,
                                train_dataset=TokenDataset(),
                                eval_dataset=TokenDataset() if evaluate else None, callbacks=list(callbacks))
