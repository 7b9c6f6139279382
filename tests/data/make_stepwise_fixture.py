"""Writes bahdanau_nn_gru.pt: a small trained Bahdanau model and what the nn.GRU-per-step decoder made of it.

Run once with the package as it was before the fused step-wise decoder (commit a38f493)::

    PYTHONPATH=<that checkout> python tests/data/make_stepwise_fixture.py

tests/test_fused_decoder.py loads the state dict into today's model and checks that the
teacher-forced log-probabilities, greedy and beam-5 search come out the same.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from seq2seq.config import DecodeConfig, ModelConfig
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.search import search

VOCAB = 23
CFG = ModelConfig(embedding_size=12, hidden_size=10, num_layers=2, bidirectional=True, decoder_hidden_size=16,
                  bridge="linear", attention="bahdanau", dropout=0.3, tied_embeddings=True, share_embeddings=True)


def main() -> None:
    torch.manual_seed(0)
    model = Seq2Seq.from_config(CFG, VOCAB, VOCAB)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    # Copy task on random sentences, so that the weights are trained rather than at their initial values.
    for _ in range(60):
        lengths = torch.randint(2, 8, (16,))
        src = torch.randint(4, VOCAB, (16, 8))
        src[torch.arange(8)[None, :] >= lengths[:, None]] = 0
        tgt_in = torch.cat([torch.full((16, 1), 2), src], 1)
        tgt_out = torch.cat([src, torch.zeros(16, 1, dtype=torch.long)], 1)
        tgt_out[torch.arange(16), lengths] = 3
        loss = torch.nn.functional.cross_entropy(model(src, lengths, tgt_in).transpose(1, 2), tgt_out, ignore_index=0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    generator = torch.Generator().manual_seed(5)
    lengths = torch.tensor([7, 3, 5, 1, 6, 2])
    src = torch.randint(4, VOCAB, (6, 7), generator=generator)
    src[torch.arange(7)[None, :] >= lengths[:, None]] = 0
    tgt_in = torch.cat([torch.full((6, 1), 2), src], 1)
    with torch.no_grad():
        log_probs = torch.log_softmax(model(src, lengths, tgt_in), -1)
    fixture = {"model_config": dataclasses.asdict(CFG), "vocab": VOCAB, "state_dict": model.state_dict(),
               "src_ids": src, "src_lengths": lengths, "tgt_in_ids": tgt_in, "log_probs": log_probs}
    for beam in (1, 5):
        options = DecodeConfig(beam_size=beam, amp="off")
        hypotheses = search(model, src, lengths, options)
        fixture[f"beam{beam}_ids"] = [h[0].tgt_ids for h in hypotheses]
        fixture[f"beam{beam}_scores"] = [h[0].score for h in hypotheses]
    torch.save(fixture, Path(__file__).with_name("bahdanau_nn_gru.pt"))


if __name__ == "__main__":
    main()
