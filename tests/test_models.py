"""The full item table, SASRec with the soft-attention readout, and the registries."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ecbench import backbones
from ecbench import compressors
from ecbench.backbones import SASRec, SASRecConfig
from ecbench.backbones.packing import PackedSessions
from ecbench.backbones.sasrec import TransformerBlock
from ecbench.backbones.dropout import set_dropout
from ecbench.backbones.readout import SoftAttentionReadout
from ecbench.compressors import Registry, UnknownEntryError
from ecbench.compressors.full import FullConfig, FullTable
from helpers import padded

NUM_ITEMS, DIM = 31, 8


@pytest.fixture
def table():
    torch.manual_seed(0)
    return FullTable(NUM_ITEMS, DIM)


@pytest.fixture
def sasrec():
    torch.manual_seed(0)
    model = SASRec(FullTable(NUM_ITEMS, DIM), SASRecConfig(layers=2, heads=2, dropout=0.3),
                   max_len=12)
    return model.eval()


# -- FullTable -------------------------------------------------------------------------------

def test_full_table_shapes(table):
    assert table.weight().shape == (NUM_ITEMS, DIM)
    assert table(torch.tensor([[1, 2, 0]])).shape == (1, 3, DIM)
    assert table.score(torch.randn(4, DIM)).shape == (4, NUM_ITEMS)


def test_padding_row_is_zero(table):
    assert torch.count_nonzero(table.weight()[0]) == 0
    assert torch.count_nonzero(table(torch.tensor([0, 0]))) == 0


def test_padding_row_stays_zero_after_an_adam_step_with_weight_decay(table):
    optimizer = torch.optim.Adam(table.parameters(), lr=0.1, weight_decay=0.01)
    before = table.weight().detach().clone()
    ids = torch.tensor([[3, 7, 0, 0], [1, 2, 5, 0]])
    session = table(ids).sum(1)
    loss = F.cross_entropy(table.score(session)[:, 1:], torch.tensor([4, 9]) - 1)
    loss.backward()
    assert table.table.grad is not None
    assert table.table.grad[1:].abs().sum() > 0  # gradients reach the real rows
    optimizer.step()
    assert torch.count_nonzero(table.weight()[0]) == 0
    assert not torch.equal(table.weight()[1:], before[1:])


def test_full_table_storage_is_the_dense_float32_table(table):
    report = table.storage()
    assert report.total_bytes == NUM_ITEMS * DIM * 4
    assert report.full_bytes == NUM_ITEMS * DIM * 4
    assert report.byte_ratio == 1.0 and report.paper_ratio == 1.0
    assert report.to_dict()["tensors"] == [
        {"name": "table", "shape": [NUM_ITEMS, DIM], "dtype": "float32", "bytes": NUM_ITEMS * DIM * 4}]


@pytest.mark.parametrize("num_items,dim", [(1, 8), (10, 0)])
def test_degenerate_table_shapes_are_rejected(num_items, dim):
    with pytest.raises(ValueError):
        FullTable(num_items, dim)


# -- SASRec ----------------------------------------------------------------------------------

def test_encode_gives_one_vector_per_session(sasrec):
    seq = padded([[1, 2, 3], [4], [5, 6, 7, 8, 9]])
    assert sasrec.encode(seq, (seq > 0).sum(1)).shape == (3, DIM)
    assert sasrec.score(seq, (seq > 0).sum(1)).shape == (3, NUM_ITEMS)


def test_trailing_padding_does_not_change_the_encoding(sasrec):
    rows = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    with torch.no_grad():
        tight = sasrec.encode(padded(rows))
        loose = sasrec.encode(padded(rows, width=12))
    torch.testing.assert_close(loose, tight, atol=1e-5, rtol=1e-5)


def test_a_session_is_encoded_the_same_alone_or_in_a_batch(sasrec):
    rows = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    with torch.no_grad():
        together = sasrec.encode(padded(rows))
        alone = torch.cat([sasrec.encode(padded([r])) for r in rows])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)


def test_every_position_as_a_token_encodes_each_session_as_it_is_alone(sasrec):
    """The ExecuTorch form's layout (padding tokens included, read out apart) against each
    session packed alone, where no padding exists."""
    rows = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    hot = torch.zeros(NUM_ITEMS, dtype=torch.bool)
    hot[1:6] = True
    with torch.no_grad():
        alone = torch.cat([sasrec.encode(padded([r])) for r in rows])
        alone_views = [torch.cat(v) for v in zip(*(sasrec.encode_views(padded([r]), None, hot)
                                                  for r in rows))]
        alone_hidden = [sasrec.hidden_states(padded([r]))[0] for r in rows]
        sasrec.every_position = True
        grid = sasrec.encode(padded(rows, width=12))
        grid_views = sasrec.encode_views(padded(rows, width=12), None, hot)
        grid_hidden = sasrec.hidden_states(padded(rows, width=12))
    torch.testing.assert_close(grid, alone, atol=1e-5, rtol=1e-5)
    for got, expected in zip(grid_views, alone_views):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    for i, row in enumerate(rows):
        torch.testing.assert_close(grid_hidden[i, :len(row)], alone_hidden[i], atol=1e-5,
                                   rtol=1e-5)
        assert torch.count_nonzero(grid_hidden[i, len(row):]) == 0


def test_sessions_longer_than_max_len_are_rejected(sasrec):
    with pytest.raises(ValueError, match="exceed max_len"):
        sasrec.encode(torch.ones(1, 13, dtype=torch.long))


def test_hot_and_cold_subsession_readouts(sasrec):
    hot = torch.zeros(NUM_ITEMS, dtype=torch.bool)
    hot[1:6] = True  # items 1..5 are hot
    seq = padded([[1, 2, 3], [10, 11], [1, 10, 2, 12]])  # hot-only, cold-only, mixed
    with torch.no_grad():
        whole, hot_out, cold_out = sasrec.encode_views(seq, None, hot)
        hidden = sasrec.hidden_states(seq)
        valid = seq > 0
        hot_mask = hot[seq] & valid
        direct_hot = sasrec.readout(hidden, hot_mask)
        direct_cold = sasrec.readout(hidden, valid & ~hot_mask)
    assert torch.count_nonzero(cold_out[0]) == 0  # hot-only session has no cold readout
    assert torch.count_nonzero(hot_out[1]) == 0  # cold-only session has no hot readout
    assert torch.count_nonzero(hot_out[0]) > 0 and torch.count_nonzero(cold_out[1]) > 0
    torch.testing.assert_close(hot_out[2], direct_hot[2])
    torch.testing.assert_close(cold_out[2], direct_cold[2])
    assert not torch.allclose(hot_out[2], cold_out[2])
    # a session that is all hot reads out like the whole session
    torch.testing.assert_close(hot_out[0], sasrec.encode(seq)[0].detach())
    torch.testing.assert_close(whole, sasrec.encode(seq))


def test_training_mode_applies_dropout_and_eval_mode_is_deterministic(sasrec):
    seq = padded([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(sasrec.encode(seq), sasrec.encode(seq))
        sasrec.train()
        assert not torch.equal(sasrec.encode(seq), sasrec.encode(seq))


def test_set_dropout_switches_dropout_alone(sasrec):
    seq = padded([[1, 2, 3, 4]])
    sasrec.train()
    set_dropout(sasrec, False)
    with torch.no_grad():
        assert torch.equal(sasrec.encode(seq), sasrec.encode(seq))  # attention dropout too
    assert sasrec.training and sasrec.compressor.training  # everything else still training
    set_dropout(sasrec, True)
    with torch.no_grad():
        assert not torch.equal(sasrec.encode(seq), sasrec.encode(seq))


def test_ffn_residual_scales_the_feed_forward_skip_connection():
    torch.manual_seed(0)
    block = TransformerBlock(DIM, heads=1, inner=DIM, dropout=0.0, ffn_residual=4.0).eval()
    x = torch.randn(7, DIM)
    packed = PackedSessions.from_items(padded([[1, 2, 3, 4], [5, 6, 7]]))
    h = block.attention_norm(x + block.attention(x, packed))
    torch.testing.assert_close(block(x, packed), block.ffn_norm(4.0 * h + block.ffn(h)))
    with pytest.raises(ValueError, match="ffn_residual"):
        SASRecConfig(ffn_residual=0.0)


def test_key_tanh_readout_gates_on_tanh_of_each_position_and_sums_the_positions_themselves():
    """The released code's readout: alpha_t = f^T sigmoid(W1 x_s* + W2 tanh(x_t) + c), the
    session vector still sum_t alpha_t x_t, and x_s* the mean of the untransformed x_t."""
    torch.manual_seed(0)
    readout = SoftAttentionReadout(DIM, key_tanh=True)
    tokens, session_of = 3 * torch.randn(5, DIM), torch.tensor([0, 0, 0, 1, 1])
    query = torch.stack([tokens[:3].mean(0), tokens[3:].mean(0)])
    gate = torch.sigmoid(readout.w1(query)[session_of] + readout.w2(torch.tanh(tokens)))
    alpha = readout.f(gate)
    expected = torch.stack([(alpha * tokens)[:3].sum(0), (alpha * tokens)[3:].sum(0)])
    torch.testing.assert_close(readout.packed(tokens, session_of, 2), expected)
    plain = SoftAttentionReadout(DIM)
    plain.load_state_dict(readout.state_dict())  # same weights: only the key differs
    assert not torch.allclose(plain.packed(tokens, session_of, 2), expected)
    assert SASRec(FullTable(NUM_ITEMS, DIM),
                  SASRecConfig(readout_tanh=True), max_len=10).readout.key_tanh


def test_uniform_init_draws_encoder_weights_from_the_paper_range():
    torch.manual_seed(0)
    model = SASRec(FullTable(NUM_ITEMS, DIM), SASRecConfig(weight_init="uniform", init_range=0.1), 10)
    for name, p in model.named_parameters():
        if "norm" not in name:
            assert p.abs().max() <= 0.1, name
    assert torch.all(model.blocks[0].attention_norm.weight == 1)


def test_non_item_parameters_exclude_the_table(sasrec):
    ids = {id(p) for p in sasrec.non_item_parameters()}
    assert id(sasrec.compressor.table) not in ids
    assert len(ids) == len(list(sasrec.parameters())) - 1


@pytest.mark.parametrize("options,message", [({"layers": 0}, "layers"), ({"heads": 0}, "heads"),
                                             ({"dropout": 1.0}, "dropout"),
                                             ({"weight_init": "zeros"}, "weight_init")])
def test_bad_sasrec_options_are_rejected(options, message):
    with pytest.raises(ValueError, match=message):
        SASRecConfig(**options)


def test_dim_not_divisible_by_heads_is_rejected():
    with pytest.raises(ValueError, match="divisible"):
        SASRec(FullTable(NUM_ITEMS, 10), SASRecConfig(heads=3), 5)


# -- soft-attention readout (Eq. 3) ----------------------------------------------------------

def eq3_loop(readout: SoftAttentionReadout, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """theta = sum_t alpha_t x_t, alpha_t = f^T sigmoid(W1 mean + W2 x_t + c), per session."""
    w1, w2, c, f = readout.w1.weight, readout.w2.weight, readout.w2.bias, readout.f.weight[0]
    out = []
    for x, m in zip(hidden, mask):
        chosen = [x[t] for t in range(len(x)) if m[t]]
        if not chosen:
            out.append(torch.zeros(x.shape[1]))
            continue
        mean = torch.stack(chosen).mean(0)
        theta = torch.zeros(x.shape[1])
        for xt in chosen:
            alpha = f @ torch.sigmoid(w1 @ mean + w2 @ xt + c)
            theta = theta + alpha * xt
        out.append(theta)
    return torch.stack(out)


def test_soft_attention_readout_matches_a_direct_loop_of_eq3():
    torch.manual_seed(3)
    readout = SoftAttentionReadout(6)
    hidden = torch.randn(5, 7, 6)
    mask = torch.rand(5, 7) > 0.4
    mask[0] = False  # an empty selection
    mask[1] = True  # everything selected
    with torch.no_grad():
        torch.testing.assert_close(readout(hidden, mask), eq3_loop(readout, hidden, mask),
                                   atol=1e-5, rtol=1e-5)


def test_readout_ignores_hidden_states_outside_the_mask():
    torch.manual_seed(4)
    readout = SoftAttentionReadout(4)
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    changed = hidden.clone()
    changed[~mask] = 1e3
    with torch.no_grad():
        torch.testing.assert_close(readout(changed, mask), readout(hidden, mask))


# -- registries ------------------------------------------------------------------------------

def test_builtins_are_registered():
    assert "full" in compressors.registry.names()
    assert "sasrec" in backbones.registry.names()


def test_unknown_compressor_names_the_known_ones():
    with pytest.raises(UnknownEntryError) as info:
        compressors.build("nosuch", num_items=10, dim=4)
    message = str(info.value)
    assert "unknown compressor 'nosuch'" in message
    assert "full" in message.split("known:")[1]


def test_unknown_backbone_names_the_known_ones():
    with pytest.raises(UnknownEntryError, match=r"unknown backbone 'nosuch'; known: .*sasrec"):
        backbones.registry.get("nosuch")


def test_registry_builds_with_default_config():
    table = compressors.build("full", num_items=12, dim=4)
    assert isinstance(table, FullTable) and table.weight().shape == (12, 4)
    model = backbones.build("sasrec", compressor=table, max_len=7)
    assert isinstance(model, SASRec) and model.config == SASRecConfig()


def test_registering_a_different_builder_under_a_taken_name_fails():
    registry = Registry("widget", "ecbench.tests-no-such-group")

    @registry.register("w", config=FullConfig)
    def first(config, **context):
        return "first"

    with pytest.raises(ValueError, match="widget 'w' is registered twice"):
        @registry.register("w", config=FullConfig)
        def second(config, **context):
            return "second"
    assert registry.build("w") == "first"


def test_registry_configs_must_be_dataclasses():
    registry = Registry("widget", "ecbench.tests-no-such-group")
    with pytest.raises(TypeError, match="must be a dataclass"):
        registry.register("w", config=dict)


def test_a_training_step_and_an_evaluation_pass_build_the_table_once(tiny_synthetic):
    from ecbench.bench.data.batching import Examples
    from ecbench.bench.training.train import evaluate, training_loss

    model = SASRec(compressors.build("tt", num_items=tiny_synthetic.num_items, dim=16),
                   SASRecConfig(), 50)
    calls = []
    weight = model.compressor.weight
    model.compressor.weight = lambda: calls.append(1) or weight()
    examples = Examples.from_sessions(tiny_synthetic.train)
    batch = next(examples.batches(64, 50))
    model.train()
    training_loss(model, batch).backward()
    assert len(calls) == 1  # the lookup and the scoring share one reconstruction
    calls.clear()
    evaluate(model, examples, 50)
    assert len(calls) == 1 and examples.num_batches(500) > 1
