"""GRU_FACTS.md items 1 to 5, checked on the package's own encoder with padded batches.

Each test runs for uni- and bidirectional encoders with 1 to 3 layers. The batch mixes
lengths so that most sentences are shorter than the batch (and one is a single token).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seq2seq.model.encoder import Encoder, join_directions

VOCAB, EMB, HIDDEN = 13, 5, 4
LENGTHS = [7, 4, 1, 7, 2]
SHAPES = [pytest.param(bidirectional, layers, id=f"{'bi' if bidirectional else 'uni'}-L{layers}")
          for bidirectional in (False, True) for layers in (1, 2, 3)]


def make_encoder(bidirectional: bool, num_layers: int) -> Encoder:
    torch.manual_seed(num_layers + 10 * bidirectional)
    embedding = nn.Embedding(VOCAB, EMB, padding_idx=0)
    encoder = Encoder(embedding=embedding, hidden_size=HIDDEN, num_layers=num_layers,
                      bidirectional=bidirectional, dropout=0.2)
    return encoder.eval()


def padded_batch(lengths: list[int], width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids 1..VOCAB-1 for the real tokens, 0 (pad) after each sentence's length."""
    width = width or max(lengths)
    generator = torch.Generator().manual_seed(7)
    src_ids = torch.randint(1, VOCAB, (len(lengths), width), generator=generator)
    src_lengths = torch.tensor(lengths)
    src_ids[torch.arange(width)[None, :] >= src_lengths[:, None]] = 0
    return src_ids, src_lengths


def per_layer(h_n: torch.Tensor, num_layers: int, bidirectional: bool) -> torch.Tensor:
    """h_n (L*D, B, H) -> (L, D, B, H), the layout GRU_FACTS item 2 describes."""
    return h_n.view(num_layers, 2 if bidirectional else 1, h_n.size(1), HIDDEN)


@pytest.mark.parametrize("bidirectional,num_layers", SHAPES)
def test_output_and_h_n_are_laid_out_as_nn_gru(bidirectional: bool, num_layers: int) -> None:
    encoder = make_encoder(bidirectional, num_layers)
    src_ids, src_lengths = padded_batch(LENGTHS, width=9)  # padded beyond the longest sentence
    output, h_n = encoder(src_ids, src_lengths)
    directions = 2 if bidirectional else 1
    assert output.shape == (len(LENGTHS), 9, directions * HIDDEN)
    assert h_n.shape == (num_layers * directions, len(LENGTHS), HIDDEN)


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_unidirectional_unpadded_last_output_is_top_layer_of_h_n(num_layers: int) -> None:
    encoder = make_encoder(False, num_layers)
    src_ids, src_lengths = padded_batch([6, 6, 6])
    output, h_n = encoder(src_ids, src_lengths)
    torch.testing.assert_close(output[:, -1], h_n[-1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bidirectional,num_layers", SHAPES)
def test_h_n_holds_every_layer_which_output_does_not(bidirectional: bool, num_layers: int) -> None:
    """Item 3: layer k of h_n is what a GRU of only the first k+1 layers (same weights) ends in."""
    encoder = make_encoder(bidirectional, num_layers)
    src_ids, src_lengths = padded_batch(LENGTHS)
    _, h_n = encoder(src_ids, src_lengths)
    for k in range(num_layers):
        lower = Encoder(embedding=encoder.embedding, hidden_size=HIDDEN, num_layers=k + 1,
                        bidirectional=bidirectional, dropout=0.0).eval()
        lower.gru.load_state_dict({name: value for name, value in encoder.gru.state_dict().items()
                                   if int(name.split("_l")[1][0]) <= k})
        lower_output, lower_h_n = lower(src_ids, src_lengths)
        torch.testing.assert_close(per_layer(h_n, num_layers, bidirectional)[k],
                                   per_layer(lower_h_n, k + 1, bidirectional)[k], rtol=0, atol=1e-6)
        if k < num_layers - 1:
            assert not torch.allclose(lower_output, encoder(src_ids, src_lengths)[0])


@pytest.mark.parametrize("bidirectional,num_layers", SHAPES)
def test_final_states_sit_at_each_sentences_own_last_and_first_token(bidirectional: bool, num_layers: int) -> None:
    """Items 3-5: forward final state at the real last token; backward final state at the first step."""
    encoder = make_encoder(bidirectional, num_layers)
    src_ids, src_lengths = padded_batch(LENGTHS)
    output, h_n = encoder(src_ids, src_lengths)
    top = per_layer(h_n, num_layers, bidirectional)[-1]  # (D, B, H)
    for b, length in enumerate(LENGTHS):
        torch.testing.assert_close(output[b, length - 1, :HIDDEN], top[0, b], rtol=0, atol=1e-6)
        if bidirectional:
            torch.testing.assert_close(output[b, 0, HIDDEN:], top[1, b], rtol=0, atol=1e-6)
            # h_n[-1] alone is the backward direction of the top layer, not "the top layer".
            torch.testing.assert_close(h_n[-1, b], top[1, b], rtol=0, atol=0)


@pytest.mark.parametrize("bidirectional,num_layers", SHAPES)
def test_padding_is_zero_in_output_and_last_column_is_not_h_n(bidirectional: bool, num_layers: int) -> None:
    encoder = make_encoder(bidirectional, num_layers)
    src_ids, src_lengths = padded_batch(LENGTHS)
    output, h_n = encoder(src_ids, src_lengths)
    forward_final = per_layer(h_n, num_layers, bidirectional)[-1, 0]
    for b, length in enumerate(LENGTHS):
        assert torch.all(output[b, length:] == 0)
        if length < max(LENGTHS):
            assert not torch.allclose(output[b, -1, :HIDDEN], forward_final[b], atol=1e-3)


@pytest.mark.parametrize("bidirectional,num_layers", SHAPES)
def test_sentence_encodes_the_same_alone_or_in_a_padded_batch(bidirectional: bool, num_layers: int) -> None:
    encoder = make_encoder(bidirectional, num_layers)
    src_ids, src_lengths = padded_batch(LENGTHS)
    output, h_n = encoder(src_ids, src_lengths)
    for b, length in enumerate(LENGTHS):
        alone_output, alone_h_n = encoder(src_ids[b:b + 1, :length], src_lengths[b:b + 1])
        torch.testing.assert_close(h_n[:, b:b + 1], alone_h_n, rtol=0, atol=1e-5)
        # The backward direction starts at the real last token, so even its states agree.
        torch.testing.assert_close(output[b:b + 1, :length], alone_output, rtol=0, atol=1e-5)


@pytest.mark.parametrize("bidirectional,num_layers", SHAPES)
def test_without_packing_the_gru_reads_padding(bidirectional: bool, num_layers: int) -> None:
    """The contrast that makes packing necessary: an unpacked GRU's h_n depends on the padding."""
    encoder = make_encoder(bidirectional, num_layers)
    src_ids, src_lengths = padded_batch(LENGTHS)
    _, h_n = encoder(src_ids, src_lengths)
    _, unpacked_h_n = encoder.gru(encoder.embedding(src_ids))
    short = [b for b, length in enumerate(LENGTHS) if length < max(LENGTHS)]
    full = [b for b, length in enumerate(LENGTHS) if length == max(LENGTHS)]
    assert not torch.allclose(h_n[:, short], unpacked_h_n[:, short], atol=1e-3)
    torch.testing.assert_close(h_n[:, full], unpacked_h_n[:, full], rtol=0, atol=1e-6)


@pytest.mark.parametrize("bidirectional,num_layers", SHAPES)
def test_join_directions_puts_forward_then_backward_per_layer(bidirectional: bool, num_layers: int) -> None:
    encoder = make_encoder(bidirectional, num_layers)
    src_ids, src_lengths = padded_batch(LENGTHS)
    output, h_n = encoder(src_ids, src_lengths)
    joined = join_directions(h_n, num_layers, bidirectional)
    assert joined.shape == (num_layers, len(LENGTHS), encoder.output_size)
    layers = per_layer(h_n, num_layers, bidirectional)
    torch.testing.assert_close(joined, torch.cat(list(layers.unbind(1)), dim=-1), rtol=0, atol=0)
    # The joined top layer is the output at the forward and backward ends of each sentence.
    for b, length in enumerate(LENGTHS):
        torch.testing.assert_close(joined[-1, b, :HIDDEN], output[b, length - 1, :HIDDEN], rtol=0, atol=1e-6)
        if bidirectional:
            torch.testing.assert_close(joined[-1, b, HIDDEN:], output[b, 0, HIDDEN:], rtol=0, atol=1e-6)


def test_int32_lengths_give_the_same_states() -> None:
    encoder = make_encoder(True, 2)
    src_ids, src_lengths = padded_batch(LENGTHS)
    _, h_n = encoder(src_ids, src_lengths)
    _, h_n_int32 = encoder(src_ids, src_lengths.int())
    torch.testing.assert_close(h_n, h_n_int32, rtol=0, atol=0)
