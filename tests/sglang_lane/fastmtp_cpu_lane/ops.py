"""Pure-PyTorch fallbacks for the ``sgl_kernel`` CPU ops the EAGLE chain path calls.

The PyPI ``sglang-kernel`` 0.4.10 wheel ships the Python wrappers
(``sgl_kernel/speculative.py``, ``kvcacheio.py``) but not these CPU ops. Each function
below computes what the op's GPU (Triton) counterpart in SGLang computes, with the
same argument order as the wrapper, and is registered into ``torch.ops.sgl_kernel``
only when the op is missing (a real CPU build wins). Loops are per request in Python:
correct and plenty fast for the tiny lane models, not for serving.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator

import torch

from .status import record

QLEN_ONLY_BITPACKING = 2


def _segments(
    req_pool_indices: torch.Tensor, start: torch.Tensor, end: torch.Tensor
) -> Iterator[tuple[int, int, int, int]]:
    """``(row, start, end, offset)`` per request; offsets pack the segments back to back."""
    off = 0
    for r, s, e in zip(req_pool_indices.tolist(), start.tolist(), end.tolist(), strict=True):
        yield r, s, e, off
        off += e - s


def copy_all_layer_kv_cache(
    data_ptrs: torch.Tensor, strides: torch.Tensor, tgt_loc: torch.Tensor, src_loc: torch.Tensor
) -> None:
    """For every layer buffer (base address, row byte stride): row ``tgt[i]`` = row ``src[i]``."""
    for base, stride in zip(data_ptrs.tolist(), strides.tolist(), strict=True):
        for t, s in zip(tgt_loc.tolist(), src_loc.tolist(), strict=True):
            ctypes.memmove(base + t * stride, base + s * stride, stride)


def assign_req_to_token_pool(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """``req_to_token[rpi[i], start[i]:end[i]]`` = the next slots of packed ``out_cache_loc``."""
    for r, s, e, off in _segments(req_pool_indices, start_offset, end_offset):
        req_to_token[r, s:e] = out_cache_loc[off : off + e - s].to(req_to_token.dtype)


def assign_draft_cache_locs_contiguous(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    seq_lens: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
    topk: int,
    num_steps: int,
) -> None:
    """``out[i*w:(i+1)*w] = req_to_token[rpi[i], seq_lens[i]:seq_lens[i]+w]``, w = topk*steps."""
    w = topk * num_steps
    for i, (r, s) in enumerate(zip(req_pool_indices.tolist(), seq_lens.tolist(), strict=True)):
        out_cache_loc[i * w : (i + 1) * w] = req_to_token[r, s : s + w].to(out_cache_loc.dtype)


def assign_extend_cache_locs(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """``out`` = concatenation over i of ``req_to_token[rpi[i], start[i]:end[i]]``."""
    for r, s, e, off in _segments(req_pool_indices, start_offset, end_offset):
        out_cache_loc[off : off + e - s] = req_to_token[r, s:e].to(out_cache_loc.dtype)


def build_tree_kernel_efficient(
    parent_list: torch.Tensor,
    selected_index: torch.Tensor,
    verified_seq_len: torch.Tensor,
    tree_mask: torch.Tensor,
    positions: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    topk: int,
    depth: int,
    draft_token_num: int,
    tree_mask_mode: int,
) -> None:
    """SGLang's ``sgl_build_tree_kernel_efficient_triton``, one request at a time.

    Builds the draft tree's retrieval links (next token / next sibling), positions and
    attention mask (mode 0 FULL_MASK over prefix + tree, mode 1 QLEN_ONLY over the
    tree). For topk=1 the tree is a chain: positions ``seq_len + j``, ``next[j] = j+1``.
    """
    if tree_mask_mode == QLEN_ONLY_BITPACKING:
        raise NotImplementedError("QLEN_ONLY_BITPACKING is not supported (as in SGLang's Triton)")
    d = draft_token_num
    seq_lens = verified_seq_len.tolist()
    prefix = [sum(seq_lens[:b]) for b in range(len(seq_lens))]
    parents = parent_list.reshape(len(seq_lens), -1).tolist()
    selected = selected_index.reshape(len(seq_lens), -1).tolist()
    mask = tree_mask.view(-1)
    pos = positions.view(-1)
    r_index = retrive_index.view(-1)
    r_next = retrive_next_token.view(-1)
    r_sib = retrive_next_sibling.view(-1)

    def parent_position(b: int, sel_pos: int) -> tuple[bool, int]:
        """(found, index in the draft window) of the parent of ``selected[b][sel_pos]``."""
        tb = selected[b][sel_pos] // topk
        if tb == 0:
            return True, -1  # the root
        token = parents[b][tb]
        for pp in range(d - 1):
            if selected[b][pp] == token:
                return True, pp
        return False, 0

    for b, seq_len in enumerate(seq_lens):
        pos[b * d] = seq_len
        for i in range(d - 1, 0, -1):
            r_index[b * d + i] = b * d + i
            found, pp = parent_position(b, i - 1)
            if found:
                parent = pp + 1  # -1 (root) -> 0
                nxt = int(r_next[b * d + parent])
                r_next[b * d + parent] = i
                if nxt != -1:
                    r_sib[b * d + i] = nxt
        r_index[b * d] = b * d
        for x in range(d):
            if tree_mask_mode == 0:
                base = d * d * b + prefix[b] * d + (seq_len + d) * x + seq_len + 1
            else:
                base = d * d * b + d * x + 1
            mask[base - 1] = True
            mask[base : base + d - 1] = False
            if x == 0:
                continue
            cur, depth_seen = x - 1, 0
            for _ in range(depth):
                depth_seen += 1
                mask[base + cur] = True
                found, pp = parent_position(b, cur)
                if not found or pp == -1:
                    break
                cur = pp
            pos[b * d + x] = depth_seen + seq_len


def verify_tree_greedy(
    predicts: torch.Tensor,
    accept_index: torch.Tensor,
    accept_token_num: torch.Tensor,
    candidates: torch.Tensor,
    retrive_index: torch.Tensor,
    retrive_next_token: torch.Tensor,
    retrive_next_sibling: torch.Tensor,
    target_predict: torch.Tensor,
) -> None:
    """SGLang's ``verify_tree_greedy_kernel_triton``, one request at a time.

    From the root, accept the child whose draft token equals the target's argmax at
    the last accepted node (siblings in order); write that target token into
    ``predicts`` at every accepted node and, at the end, the target token after the
    last accepted node (the bonus).
    """
    bs, d = candidates.shape
    steps = accept_index.shape[1]
    flat_pred = predicts.view(-1)
    flat_target = target_predict.reshape(-1)
    for b in range(bs):
        last = int(retrive_index[b, 0])
        accept_index[b, 0] = last
        n_accept = 0
        cur = 0
        for _j in range(1, steps):
            cur = int(retrive_next_token[b, cur])
            target = int(flat_target[last])
            matched = False
            while cur != -1:
                if int(candidates[b, cur]) == target:
                    flat_pred[last] = target
                    n_accept += 1
                    accept_index[b, n_accept] = int(retrive_index[b, cur])
                    last = int(retrive_index[b, cur])
                    matched = True
                    break
                cur = int(retrive_next_sibling[b, cur])
            if not matched:
                break
        accept_token_num[b] = n_accept
        flat_pred[last] = flat_target[last]


def fill_bonus_tokens(
    accept_tokens: torch.Tensor,
    accept_lens: torch.Tensor,
    bonus_tokens: torch.Tensor,
    accept_stride: int,
) -> None:
    """``bonus[i] = accept_tokens.flat[i * stride + accept_lens[i] - 1]`` (the last accepted)."""
    flat = accept_tokens.reshape(-1)
    for i, n in enumerate(accept_lens.tolist()):
        bonus_tokens[i] = flat[i * accept_stride + n - 1]


#: op name -> (schema, implementation); schemas follow the sgl_kernel wrappers
FALLBACKS: dict[str, tuple[str, Callable[..., None]]] = {
    "copy_all_layer_kv_cache_cpu": (
        "(Tensor data_ptrs, Tensor strides, Tensor tgt_loc, Tensor src_loc) -> ()",
        copy_all_layer_kv_cache,
    ),
    "assign_req_to_token_pool_cpu": (
        "(Tensor req_pool_indices, Tensor(a!) req_to_token, Tensor start_offset, "
        "Tensor end_offset, Tensor out_cache_loc, int pool_len) -> ()",
        assign_req_to_token_pool,
    ),
    "assign_draft_cache_locs_contiguous_cpu": (
        "(Tensor req_pool_indices, Tensor req_to_token, Tensor seq_lens, "
        "Tensor(a!) out_cache_loc, int pool_len, int topk, int num_steps) -> ()",
        assign_draft_cache_locs_contiguous,
    ),
    "assign_extend_cache_locs_cpu": (
        "(Tensor req_pool_indices, Tensor req_to_token, Tensor start_offset, "
        "Tensor end_offset, Tensor(a!) out_cache_loc, int pool_len) -> ()",
        assign_extend_cache_locs,
    ),
    "build_tree_kernel_efficient_cpu": (
        "(Tensor parent_list, Tensor selected_index, Tensor verified_seq_len, "
        "Tensor(a!) tree_mask, Tensor(b!) positions, Tensor(c!) retrive_index, "
        "Tensor(d!) retrive_next_token, Tensor(e!) retrive_next_sibling, int topk, "
        "int depth, int draft_token_num, int tree_mask_mode) -> ()",
        build_tree_kernel_efficient,
    ),
    "verify_tree_greedy_cpu": (
        "(Tensor(a!) predicts, Tensor(b!) accept_index, Tensor(c!) accept_token_num, "
        "Tensor candidates, Tensor retrive_index, Tensor retrive_next_token, "
        "Tensor retrive_next_sibling, Tensor target_predict) -> ()",
        verify_tree_greedy,
    ),
    "fill_bonus_tokens_cpu": (
        "(Tensor accept_tokens, Tensor accept_lens, Tensor(a!) bonus_tokens, "
        "int accept_stride) -> ()",
        fill_bonus_tokens,
    ),
}

_library: torch.library.Library | None = None


def _exists(name: str) -> bool:
    try:
        getattr(torch.ops.sgl_kernel, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _recorded(name: str, fn: Callable[..., None]) -> Callable[..., None]:
    def impl(*args: object) -> None:
        record(f"called:{name}")
        fn(*args)

    return impl


def register_fallbacks() -> list[str]:
    """Define every missing op in ``torch.ops.sgl_kernel``; returns the names defined."""
    global _library
    import sgl_kernel  # noqa: F401  (loads the real library first, so real ops win)

    if _library is None:
        _library = torch.library.Library("sgl_kernel", "FRAGMENT")
    defined = []
    for name, (schema, fn) in FALLBACKS.items():
        if _exists(name):
            record(f"native:{name}")
            continue
        _library.define(name + schema)
        _library.impl(name, _recorded(name, fn), "CPU")
        defined.append(name)
        record(f"registered:{name}")
    return defined
