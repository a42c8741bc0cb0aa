"""Mixed inputs reach the frozen LLM exactly as plain token ids would."""

import torch

from extok_rag.models.mixed_input import IGNORE_INDEX, EmbeddingSegment, TokenSegment


def ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 259, (n,), generator=torch.Generator().manual_seed(seed))


def test_raw_segments_give_plain_logits_exactly(tiny_llm):
    tokens = ids(40)
    plain = tiny_llm.model(input_ids=tokens[None]).logits
    row = [TokenSegment(tokens[:10]), TokenSegment(tokens[10:25]), TokenSegment(tokens[25:])]
    mixed = tiny_llm.logits(tiny_llm.batch([row]))
    assert torch.equal(mixed, plain)


def test_positions_are_contiguous_over_segments(tiny_llm):
    emb = torch.randn(5, tiny_llm.hidden_size)
    batch = tiny_llm.batch([[TokenSegment(ids(3)), EmbeddingSegment(emb), TokenSegment(ids(4))]])
    assert batch.position_ids[0].tolist() == list(range(12))
    assert torch.equal(batch.inputs_embeds[0, 3:8], emb)
    assert (batch.labels[0, 3:8] == IGNORE_INDEX).all()
    assert (batch.labels[0, 8:] != IGNORE_INDEX).all()


def test_embedding_segment_of_token_embeddings_equals_tokens(tiny_llm):
    tokens = ids(30)
    as_embeds = tiny_llm.embed_tokens(tokens[:12])
    a = tiny_llm.logits(tiny_llm.batch([[EmbeddingSegment(as_embeds), TokenSegment(tokens[12:])]]))
    b = tiny_llm.model(input_ids=tokens[None]).logits
    assert torch.equal(a, b)


def test_batched_padded_equals_unbatched(tiny_llm):
    d = tiny_llm.hidden_size
    rows = [
        [TokenSegment(ids(7, 1)), EmbeddingSegment(torch.randn(4, d)), TokenSegment(ids(9, 2))],
        [EmbeddingSegment(torch.randn(2, d)), TokenSegment(ids(3, 3))],
        [TokenSegment(ids(31, 4))],
    ]
    for side in ("left", "right"):
        batch = tiny_llm.batch(rows, padding_side=side)
        logits = tiny_llm.logits(batch)
        for b, row in enumerate(rows):
            alone = tiny_llm.logits(tiny_llm.batch([row]))[0]
            real = batch.attention_mask[b].bool()
            torch.testing.assert_close(logits[b, real], alone, atol=1e-5, rtol=1e-5)


def test_token_losses_only_where_the_next_position_is_a_token(tiny_llm):
    d = tiny_llm.hidden_size
    rows = [[EmbeddingSegment(torch.randn(4, d)), TokenSegment(ids(6))], [TokenSegment(ids(3))]]
    losses = tiny_llm.token_losses(tiny_llm.batch(rows, padding_side="left"))
    # row 0: 10 positions, targets at the 6 token positions; the first is predicted from the
    # embeddings, so 6 losses. Row 1: 3 tokens -> 2 losses (padding never predicts).
    assert (losses[0] > 0).sum() == 6
    assert (losses[1] > 0).sum() == 2


def test_all_token_segments_embedded_at_once_land_in_their_rows(tiny_llm):
    d = tiny_llm.hidden_size
    a, b, c = ids(5, 5), ids(2, 6), ids(7, 7)
    emb = torch.randn(3, d, dtype=torch.float64)  # cast to the LLM's dtype
    rows = [
        [TokenSegment(a, scored=False), EmbeddingSegment(emb), TokenSegment(b)],
        [EmbeddingSegment(emb[:1])],  # a row without tokens
        [TokenSegment(c)],
    ]
    batch = tiny_llm.batch(rows, padding_side="left")
    table = tiny_llm.embed_tokens
    assert batch.inputs_embeds.dtype == table(a).dtype
    assert torch.equal(batch.inputs_embeds[0], torch.cat([table(a), emb.float(), table(b)]))
    assert torch.equal(batch.inputs_embeds[1, -1], emb[0].float())
    assert torch.equal(batch.inputs_embeds[2, -7:], table(c))
    assert batch.labels[0].tolist() == [IGNORE_INDEX] * 8 + b.tolist()
    assert batch.labels[1].tolist() == [IGNORE_INDEX] * 10
    assert batch.labels[2].tolist() == [IGNORE_INDEX] * 3 + c.tolist()
    assert batch.attention_mask.sum(dim=1).tolist() == [10, 1, 7]
    only_embeddings = tiny_llm.batch([[EmbeddingSegment(emb)]])
    assert only_embeddings.inputs_embeds.dtype == table(a).dtype


def test_the_model_reads_a_batch_with_no_host_reads_and_the_same_numbers(tiny_llm):
    """The model gets no mask for a batch of one length and the 4D causal-and-padding mask
    otherwise, the scored positions and their targets found on the host: the same bits as the
    2D mask and boolean gathers (which make a GPU's host wait), with nothing read back."""
    import torch.nn.functional as F
    from would_sync import WouldSync

    d = tiny_llm.hidden_size
    weights = [*tiny_llm.model.parameters(), *tiny_llm.model.buffers()]
    padded = [
        [TokenSegment(ids(7, 1), scored=False), EmbeddingSegment(torch.randn(4, d))],
        [EmbeddingSegment(torch.randn(2, d)), TokenSegment(ids(12, 3))],
        [TokenSegment(ids(5, 4), scored=False), TokenSegment(ids(9, 2))],
    ]
    even = [[TokenSegment(ids(10, 5))], [EmbeddingSegment(torch.randn(4, d)), TokenSegment(ids(6))]]
    for rows, is_padded in ((padded, True), (even, False)):
        batch = tiny_llm.batch(rows)
        assert batch.padded is is_padded
        with WouldSync([*weights, batch.inputs_embeds, batch.attention_mask]) as watch:
            losses = tiny_llm.token_losses(batch)
        assert not watch.events
        # before: the 2D mask and positions, and boolean gathers
        h = tiny_llm.model.get_decoder()(
            inputs_embeds=batch.inputs_embeds,
            attention_mask=batch.attention_mask,
            position_ids=batch.position_ids,
        ).last_hidden_state
        mask = batch.next_token_targets
        logits = tiny_llm.model.get_output_embeddings()(h[:, :-1][mask]).float()
        nll = F.cross_entropy(logits, batch.labels[:, 1:][mask], reduction="none")
        assert torch.equal(losses, torch.zeros(mask.shape).masked_scatter(mask, nll))
        assert torch.equal(tiny_llm.hidden_states(batch), h)
    with WouldSync([*weights, batch.inputs_embeds]) as watch:  # the watch sees a gather
        tiny_llm.hidden_states(batch)[:, :-1][batch.next_token_targets.to(torch.bool)]
    assert sum(watch.events.values()) == 1
