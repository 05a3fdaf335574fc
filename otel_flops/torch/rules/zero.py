"""Ops that do no arithmetic: copies, conversions, allocation, filling, indexing, selection, sorting.

They count 0 FLOPs and are still seen (listed in ``by_op``), so ``uncounted_ops`` keeps only ops
that truly lack a rule. Views, ``*_copy`` view variants, in-place stride changes and random
sampling are classified generically in ``resolve``; the ops here carry no such tag.
"""

from __future__ import annotations

import torch

from .registry import flop_rule, packets, zero

ZERO_FLOP = [
    # copies, conversions and layout changes
    "_to_copy", "copy_", "clone", "_copy_from", "_copy_from_and_resize", "lift_fresh", "lift_fresh_copy", "detach",
    "alias", "_unsafe_view", "contiguous", "set_", "resize_", "resize_as_", "_local_scalar_dense", "item", "cat",
    "stack", "constant_pad_nd", "flip", "roll", "rot90", "repeat", "tril", "triu", "block_diag", "diag_embed",
    "diagonal_backward", "diagonal_scatter", "as_strided_scatter", "pixel_shuffle", "pixel_unshuffle",
    "channel_shuffle", "native_channel_shuffle", "complex", "_chunk_cat", "unsafe_split", "unsafe_split_with_sizes",
    "unsafe_chunk", "broadcast_tensors", "im2col", "max_unpool2d", "max_unpool3d", "lu_unpack",
    "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
    "replication_pad3d", "_to_sparse", "_to_sparse_csr", "_to_sparse_csc", "_to_sparse_bsr", "_to_sparse_bsc",
    "to_sparse", "_to_dense", "to_dense", "sparse_mask", "_nested_tensor_from_mask",
    "_nested_tensor_from_mask_left_aligned", "_nested_from_padded", "to_padded_tensor",
    "_nested_tensor_from_tensor_list", "_efficientzerotensor", "_linalg_check_errors",
    # allocation and filling
    "empty", "empty_like", "empty_strided", "empty_permuted", "new_empty", "new_empty_strided", "zeros",
    "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones", "new_full", "fill", "fill_",
    "zero_", "scalar_tensor", "arange", "linspace", "logspace", "eye", "_histogramdd_bin_edges",
    # indexing and selection
    "embedding", "index", "index_select", "gather", "masked_fill", "masked_fill_", "where",
    "select_backward", "slice_backward", "index_select_backward", "select_scatter", "slice_scatter",
    "masked_select", "masked_scatter", "masked_scatter_backward", "nonzero", "nonzero_static", "one_hot", "take",
    "index_copy", "index_fill", "_unsafe_masked_index", "_unsafe_index",
    # sorting, selection and search: comparisons, no arithmetic on the values
    "sort", "topk", "kthvalue", "median", "nanmedian", "mode", "_unique", "_unique2", "unique_dim",
    "unique_consecutive", "searchsorted", "bucketize", "isin",
    # bookkeeping
    "_foreach_copy_", "_foreach_zero_", "is_same_size", "_has_compatible_shallow_copy_type", "sym_size",
    "sym_numel", "sym_stride", "sym_storage_offset", "is_nonzero", "equal",
]

flop_rule("zero", *packets(*ZERO_FLOP))(zero)
flop_rule("zero", torch.ops.profiler._record_function_enter_new, torch.ops.profiler._record_function_exit)(zero)
# Metadata queries that fake tensors answer as ops.
flop_rule("zero", "prim::device", "prim::layout")(zero)
# FSDP2's copy-ins and copy-outs (registered when torch.distributed.fsdp loads), and functional
# collectives' waits and autograd wrappers (tensor parallel): the collectives are counted apart.
flop_rule("zero", "fsdp::all_gather_copy_in", "fsdp::split_with_sizes_copy", "fsdp::chunk_cat",
          "_c10d_functional::wait_tensor", "_c10d_functional::_wrap_tensor_autograd")(zero)
