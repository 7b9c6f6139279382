"""scripts/flops.py counts the decoder's matrix-product FLOPs as torch's own FLOP counter sees them run."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from flops import batch_work, count_flops
from seq2seq.config import ModelConfig
from seq2seq.model.seq2seq import Seq2Seq


@pytest.mark.parametrize("num_layers", [1, 2])
def test_the_bahdanau_decoders_count_matches_torchs_flop_counter(num_layers: int) -> None:
    # All sizes different, so that a transposed or misplaced size shows.
    cfg = ModelConfig(embedding_size=8, hidden_size=6, num_layers=num_layers, bidirectional=True,
                      decoder_hidden_size=10, attention="bahdanau", dropout=0.0)
    vocab, batch, src_len, tgt_len = 30, 4, 5, 7
    torch.manual_seed(0)
    model = Seq2Seq.from_config(cfg, vocab, vocab).eval()
    enc = model.encode(torch.randint(4, vocab, (batch, src_len)), torch.full((batch,), src_len))
    state = model.init_state(enc)
    with FlopCounterMode(display=False) as counter:
        model.decoder(torch.randint(4, vocab, (batch, tgt_len)), state, enc).logits  # the output layer runs when asked for
    # The score v^T tanh(.) is a matrix-vector product, which torch's counter leaves out.
    measured = counter.get_total_flops() + 2 * cfg.decoder_hidden_size * batch * tgt_len * src_len
    count = count_flops(cfg, vocab)
    src_tokens, tgt_tokens, pairs = batch_work(torch.full((batch,), src_len), torch.full((batch,), tgt_len))
    assert (src_tokens, tgt_tokens, pairs) == (batch * src_len, batch * tgt_len, batch * tgt_len * src_len)
    assert count.per_tgt_token * tgt_tokens + count.per_pair * pairs == measured


def test_the_reference_model_needs_about_50_mflop_per_target_token_in_training() -> None:
    count = count_flops(ModelConfig(embedding_size=256, hidden_size=256, num_layers=2, bidirectional=True,
                                    decoder_hidden_size=512, attention="bahdanau"), 8000)
    # Multi30k de-en: about 1.05 source tokens and 13 source positions per target token.
    per_target = 3 * (count.per_tgt_token + 1.05 * count.per_src_token + 13 * count.per_pair)
    assert 45e6 < per_target < 55e6
