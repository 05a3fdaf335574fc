"""The op families of issue 15, one exact expected value each: inference_mode composites, fused
attention, RNNs, resampling, FFT, complex, sparse, linear algebra, zero-FLOP classification."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_rules import _unfused
from torch import nn

import otel_flops
from otel_flops.torch.rules import resolve


def _report(fn):
    with otel_flops.track(mode="full", energy=False) as tracker:
        fn()
    return tracker.report()


def _by_op(fn):
    return {op: c["flops"] for op, c in _report(fn)["by_op"].items()}


def _total(fn):
    report = _report(fn)
    assert report["uncounted_ops"] == {} and report["errors"] == {}, report
    return report["totals"]["flops"]


# ---------------------------------------------------------------- inference_mode composites
def test_linear_under_inference_mode_is_two_flops():
    layer, x = nn.Linear(1, 1), torch.ones(1, 1)
    with torch.inference_mode():
        counts = _by_op(lambda: layer(x))
    assert counts == {"aten.linear": 2}


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, groups=2), nn.GroupNorm(4, 16), nn.GELU(), nn.Dropout(0.1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10), nn.LogSoftmax(-1),
    ).eval()


MODULES = {
    "cnn": (_cnn, (2, 3, 16, 16)),
    "lstm": (lambda: nn.LSTM(4, 6, num_layers=2, bidirectional=True), (5, 2, 4)),
    "lstm-proj": (lambda: nn.LSTM(4, 6, proj_size=3), (5, 2, 4)),
    "gru": (lambda: nn.GRU(4, 6, num_layers=2), (5, 2, 4)),
    "gru-batch-first": (lambda: nn.GRU(4, 6, num_layers=2, bidirectional=True, batch_first=True), (2, 5, 4)),
    "gru-batch-first-no-bias": (lambda: nn.GRU(4, 6, batch_first=True, bias=False), (2, 5, 4)),
    "linear-on-a-transposed-input": (lambda: _Transposed(nn.Linear(4, 6)), (5, 2, 4)),
    "rnn": (lambda: nn.RNN(4, 6), (5, 2, 4)),
    "lstm-cell": (lambda: nn.LSTMCell(4, 6), (2, 4)),
    "gru-cell": (lambda: nn.GRUCell(4, 6), (2, 4)),
    "layer-norm": (lambda: nn.LayerNorm(6), (2, 3, 6)),
    "rms-norm": (lambda: nn.RMSNorm(6), (2, 3, 6)),
    "instance-norm": (lambda: nn.InstanceNorm1d(3, affine=True), (2, 3, 6)),
    "bilinear": (lambda: _Pair(nn.Bilinear(6, 6, 4)), (2, 3, 6)),
    "conv-transpose": (lambda: nn.ConvTranspose1d(3, 2, 3, stride=2), (2, 3, 6)),
    "embedding-bag": (lambda: _Indices(nn.EmbeddingBag(10, 4, mode="mean")), (3, 2)),
}


class _Transposed(nn.Module):
    """A non-contiguous 3-D input: ATen's linear runs a matmul and a separate bias add_."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.transpose(0, 1))


class _Pair(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x, x)


class _Indices(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner((x.abs() * 3).long() % 10)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_inference_mode_counts_what_no_grad_counts(name):
    build, shape = MODULES[name]
    torch.manual_seed(0)
    module, x = build(), torch.randn(shape)
    with torch.no_grad():
        no_grad = _total(lambda: module(x))
    with torch.inference_mode():
        inference = _total(lambda: module(x))
    assert inference == no_grad > 0


def test_small_cnn_under_inference_mode_matches_no_grad_exactly():
    model, x = _cnn(), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        no_grad = _total(lambda: model(x))
    with torch.inference_mode():
        inference = _total(lambda: model(x))
    # convs 2*2*16*16*8*27 + 2*2*6*6*16*36 = 304128; batch norm (running stats) 4 x 4096; group norm
    # 7 x 1152; relu 4096; max pool 1024 x 4; gelu and mean 1152 each; linear 2*2*16*10; log-softmax 5 x 20
    assert inference == no_grad == 339812


@pytest.mark.parametrize("call", ["matmul", "einsum", "einsum3", "sdpa", "cross_entropy", "cosine", "pad"])
def test_composite_functions_under_inference_mode(call):
    a, b, c = torch.randn(3, 4, 5), torch.randn(3, 5, 6), torch.randn(6, 2)
    q = torch.randn(2, 2, 4, 8)
    logits, target = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    calls = {
        "matmul": lambda: a @ b,
        "einsum": lambda: torch.einsum("bij,bjk->bik", a, b),
        "einsum3": lambda: torch.einsum("bij,bjk,kl->bil", a, b, c),
        "sdpa": lambda: F.scaled_dot_product_attention(q, q, q),
        "cross_entropy": lambda: F.cross_entropy(logits, target),
        "cosine": lambda: F.cosine_similarity(a, a, dim=-1),
        "pad": lambda: F.pad(a, (1, 1), mode="reflect"),
    }
    with torch.no_grad():
        no_grad = _total(calls[call])
    with torch.inference_mode():
        inference = _total(calls[call])
    assert inference == no_grad


def test_matmul_and_einsum_exact_under_inference_mode():
    a, b = torch.randn(3, 4, 5), torch.randn(3, 5, 6)
    with torch.inference_mode():
        counts = _by_op(lambda: (a @ b, torch.einsum("bij,bjk->bik", a, b)))
    assert counts["aten.matmul"] == counts["aten.einsum"] == 2 * 3 * 4 * 5 * 6


def test_counting_a_decomposition_leaves_the_random_stream_alone():
    dropout = nn.Dropout(0.5).train()
    x = torch.randn(64)

    def run():
        torch.manual_seed(3)
        with torch.inference_mode():
            return dropout(x), torch.rand(4)

    bare = run()
    with otel_flops.track(mode="full", energy=False) as tracker:
        counted = run()
    assert all(torch.equal(u, v) for u, v in zip(bare, counted))
    assert tracker.report()["by_op"]["aten.dropout"]["flops"] == 64  # native_dropout's scaled mask multiply


# ---------------------------------------------------------------- fused attention
def test_multihead_attention_fast_path_equals_its_unfused_path():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(2, 2, batch_first=True).eval()
    x = torch.randn(1, 1, 2)
    with torch.no_grad():
        fused = _by_op(lambda: mha(x, x, x))
        unfused = _unfused(lambda: mha(x, x, x))
        no_weights = _by_op(lambda: mha(x, x, x, need_weights=False))
    matmuls = {op: n for op, n in unfused.items() if op in ("aten.addmm", "aten.bmm", "aten.mm")}
    assert sum(matmuls.values()) == 40  # in-projection 24, out-projection 8, Q K^T 4, P V 4
    assert fused["aten._native_multi_head_attention"] == sum(unfused.values()) == 54  # + scale, softmax, mean
    assert no_weights["aten._native_multi_head_attention"] == 40


def test_multihead_attention_fast_path_on_a_batch_equals_unfused():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = torch.randn(3, 5, 8)
    with torch.no_grad():
        for options in ({}, {"need_weights": False}, {"average_attn_weights": False}):
            call = lambda options=options: mha(x, x, x, **options)  # noqa: E731
            fused = _by_op(call)["aten._native_multi_head_attention"]
            assert fused == sum(_unfused(call).values())


def test_nested_encoder_counts_the_real_tokens():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=True).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[False] * 5, [False, False, True, True, True]])
    with torch.no_grad():
        report = _report(lambda: encoder(x, src_key_padding_mask=mask))
        alone = sum(sum(_unfused(lambda s=s: encoder(s)).values()) for s in (x[:1], x[1:, :2]))
    assert report["errors"] == {} and report["uncounted_ops"] == {}
    # each real sequence alone (batch 1: torch folds the in-projection bias into addmm), plus the
    # in-projection bias add that the batched unfused path does over the 7 real tokens
    assert report["by_op"]["aten._transformer_encoder_layer_fwd"]["flops"] == alone + 7 * 3 * 16 == 32880


# ---------------------------------------------------------------- recurrent layers
def test_lstm_one_step_exact_and_equal_to_the_unfused_cell():
    torch.manual_seed(0)
    lstm = nn.LSTM(1, 1)
    x = torch.randn(1, 1, 1, requires_grad=True)
    with torch.no_grad():
        mkldnn = _by_op(lambda: lstm(x))
        with torch.backends.mkldnn.flags(enabled=False):
            unfused = _by_op(lambda: lstm(x))
    # products 2*1*4 + 2*1*4 = 16, gate arithmetic 13 per hidden unit
    assert mkldnn["aten.mkldnn_rnn_layer"] == sum(unfused.values()) == 29
    training = _by_op(lambda: lstm(x)[0].sum().backward())
    assert training["aten.mkldnn_rnn_layer_backward"] == 58


def test_gru_and_rnn_steps():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 1)
    with torch.no_grad():
        assert sum(_by_op(lambda: nn.GRU(1, 1)(x)).values()) == 12 + 10
        assert sum(_by_op(lambda: nn.RNN(1, 1)(x)).values()) == 4 + 2


# ---------------------------------------------------------------- resampling
@pytest.mark.parametrize(
    ("mode", "shape", "forward", "backward"),
    [("nearest", (1, 1, 2, 2), 0, 1), ("bilinear", (1, 1, 2, 2), 9, 8), ("bicubic", (1, 1, 2, 2), 35, 32),
     ("linear", (1, 1, 2), 3, 4), ("trilinear", (1, 1, 2, 2, 2), 21, 16)],
)
def test_interpolate_counts_per_output_element(mode, shape, forward, backward):
    x = torch.randn(shape, requires_grad=True)
    counts = _by_op(lambda: F.interpolate(x, scale_factor=2, mode=mode).sum().backward())
    outputs = x.numel() * 2 ** (len(shape) - 2)
    ops = {op: n for op, n in counts.items() if "upsample" in op}
    assert sorted(ops.values()) == sorted([forward * outputs, backward * outputs])


def test_grid_sample_bilinear():
    x = torch.randn(1, 2, 4, 4, requires_grad=True)
    grid = torch.rand(1, 3, 3, 2) * 2 - 1
    counts = _by_op(lambda: F.grid_sample(x, grid, align_corners=False).sum().backward())
    values = 2 * 3 * 3
    assert counts["aten.grid_sampler_2d"] == 7 * values + 2 * grid.numel()
    assert counts["aten.grid_sampler_2d_backward"] == 8 * values + 2 * grid.numel()  # input gradient only


# ---------------------------------------------------------------- FFT and complex
def test_fft_counts_follow_the_5n_log2n_convention():
    x = torch.randn(4, 8)
    counts = _by_op(lambda: torch.fft.irfft2(torch.fft.rfft2(x), s=(4, 8)))
    assert counts["aten._fft_r2c"] == counts["aten._fft_c2r"] == 400  # 2.5 x 32 x log2(32)
    z = torch.randn(3, 8, dtype=torch.complex64)
    assert _by_op(lambda: torch.fft.fft(z))["aten._fft_c2c"] == 3 * 5 * 8 * 3


def test_complex_matmul_is_eight_real_flops_per_multiply_add():
    a, b = torch.randn(1, 1, dtype=torch.complex64), torch.randn(1, 1, dtype=torch.complex64)
    assert _by_op(lambda: a @ b) == {"aten.mm": 8}
    c, d = torch.randn(2, 3, 4, dtype=torch.complex64), torch.randn(2, 4, 5, dtype=torch.complex64)
    assert _by_op(lambda: torch.bmm(c, d))["aten.bmm"] == 8 * 2 * 3 * 4 * 5


@pytest.mark.parametrize(("dtype", "bits"), [(torch.complex64, 32), (torch.complex128, 64)])
def test_complex_bops_use_the_width_of_one_real_part(dtype, bits):
    """Complex FLOPs are real FLOPs on one real part each: complex64's are 32-bit FLOPs."""
    a, b = torch.randn(1, 1, dtype=dtype), torch.randn(1, 1, dtype=dtype)
    op = _report(lambda: a @ b)["by_op"]["aten.mm"]
    assert (op["flops"], op["bops"]) == (8, 8 * bits)


def test_complex_elementwise_ops_count_real_flops():
    a, b = torch.randn(3, dtype=torch.complex64), torch.randn(3, dtype=torch.complex64)
    counts = _by_op(lambda: (a * b, a + b, a / b, torch.exp(a), a.sum()))
    assert counts["aten.mul"] == 6 * 3
    assert counts["aten.add"] == 2 * 3
    assert counts["aten.div"] == 11 * 3
    assert counts["aten.exp"] == 6 * 3
    assert counts["aten.sum"] == 2 * 3


# ---------------------------------------------------------------- sparse
def _sparse(layout: str) -> torch.Tensor:
    dense = torch.zeros(4, 6)
    dense[0, 1], dense[2, 3], dense[3, 5] = 1.0, 2.0, 3.0
    return {"coo": dense.to_sparse(), "csr": dense.to_sparse_csr(), "csc": dense.to_sparse_csc(),
            "bsr": dense.to_sparse_bsr((2, 2))}[layout]


@pytest.mark.parametrize("layout", ["coo", "csr", "csc", "bsr"])
def test_sparse_times_dense_counts_stored_elements(layout):
    a, b = _sparse(layout), torch.randn(6, 5)
    stored = 3 if layout != "bsr" else 3 * 4  # BSR stores whole 2x2 blocks
    assert sum(_by_op(lambda: a @ b).values()) == 2 * stored * 5


def test_torch_sparse_mm():
    a, b = _sparse("coo"), torch.randn(6, 5)
    assert _by_op(lambda: torch.sparse.mm(a, b))["aten._sparse_addmm"] == 2 * 3 * 5


# ---------------------------------------------------------------- linear algebra
def test_linear_algebra_textbook_counts():
    torch.manual_seed(0)
    a = torch.randn(6, 6)
    spd = a @ a.T + 6 * torch.eye(6)
    b = torch.randn(6, 2)
    n3 = 6**3
    counts = _by_op(lambda: (torch.linalg.qr(a), torch.linalg.lu_factor(a), torch.linalg.cholesky(spd),
                             torch.linalg.svd(a, full_matrices=False), torch.linalg.eigh(spd), torch.linalg.solve(a, b),
                             torch.linalg.inv(a), torch.linalg.det(a)))
    assert counts["aten.linalg_qr"] == 4 * n3 // 3  # Householder, square
    assert counts["aten.linalg_lu_factor_ex"] == 2 * n3 // 3
    assert counts["aten.linalg_cholesky_ex"] == n3 // 3
    assert counts["aten._linalg_svd"] == 14 * n3 + 8 * n3  # Golub-Reinsch, thin U and V
    assert counts["aten._linalg_eigh"] == 9 * n3
    assert counts["aten._linalg_solve_ex"] == 2 * n3 // 3 + 2 * 36 * 2
    assert counts["aten.linalg_inv_ex"] == 2 * n3
    assert counts["aten._linalg_det"] == 2 * n3 // 3


def test_rectangular_qr():
    assert _by_op(lambda: torch.linalg.qr(torch.randn(8, 3)))["aten.linalg_qr"] == 2 * 8 * 9 - 2 * 27 // 3


# ---------------------------------------------------------------- in-place forms and zero-FLOP classes
def test_in_place_forms_count_like_their_functional_ops():
    acc, a, b = torch.randn(2, 4), torch.randn(2, 3), torch.randn(3, 4)
    counts = _by_op(lambda: (acc.addmm_(a, b), torch.rsub(torch.ones(3), 2), torch.arange(6.0).cumsum(0)))
    assert counts["aten.addmm_"] == 2 * 2 * 3 * 4
    assert counts["aten.rsub"] == 3
    assert counts["aten.cumsum"] == 6


def test_copies_and_stride_ops_are_classified_zero():
    import torch.distributed.fsdp._fully_shard._fsdp_collectives  # noqa: F401  (registers torch.ops.fsdp)

    ops = [torch.ops.aten.as_strided_.default, torch.ops.aten.view_copy.default, torch.ops.aten.squeeze_.dim,
           torch.ops.aten.t_copy.default, torch.ops.fsdp.all_gather_copy_in.default,
           torch.ops.fsdp.split_with_sizes_copy.default, torch.ops.fsdp.chunk_cat.default]
    assert [resolve(op).family for op in ops] == ["zero"] * len(ops)
    x = torch.randn(2, 3)
    report = _report(lambda: (x.clone().as_strided_((3, 2), (1, 3)), torch.permute_copy(x, (1, 0))))
    assert report["uncounted_ops"] == {}
    assert report["by_op"]["aten.as_strided_"]["flops"] == report["by_op"]["aten.permute_copy"]["flops"] == 0
