"""The CPU lane's sgl_kernel op fallbacks: documented semantics, and SGLang's own kernels.

Each fallback is checked against expectations written from the op's documented
behaviour (hand-built chains, slices), and the three tree/verify ops additionally
against SGLang's Triton kernels executed by Triton's CPU interpreter on random cases.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from ..sglang_lane import crosscheck
from ..sglang_lane.fastmtp_cpu_lane import ops
from ..sglang_lane.server import lane_env, sglang_import_problem


def test_chain_tree_matches_the_documented_chain() -> None:
    """topk=1, 3 steps, 2 requests: positions seq_len+j, next j->j+1, causal mask."""
    bs, steps, d = 2, 3, 4
    seq = torch.tensor([5, 9])
    parent = torch.tensor([[-1, 0, 1]] * bs)
    selected = torch.tensor([[0, 1, 2]] * bs)
    mask = torch.zeros(bs * d * d, dtype=torch.bool)
    pos = torch.zeros(bs * d, dtype=torch.int64)
    ri = torch.zeros(bs, d, dtype=torch.int64)
    rn = torch.full((bs, d), -1, dtype=torch.int64)
    rs = torch.full((bs, d), -1, dtype=torch.int64)
    ops.build_tree_kernel_efficient(parent, selected, seq, mask, pos, ri, rn, rs, 1, steps, d, 1)
    assert pos.tolist() == [5, 6, 7, 8, 9, 10, 11, 12]
    assert ri.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert rn.tolist() == [[1, 2, 3, -1]] * bs
    assert rs.tolist() == [[-1] * d] * bs
    tril = torch.tril(torch.ones(d, d, dtype=torch.bool))
    assert torch.equal(mask.view(bs, d, d), tril.expand(bs, d, d))


def test_full_mask_mode_sees_the_prefix() -> None:
    seq = torch.tensor([3])
    d = 3
    # SGLang allocates the full mask as ones; the kernel writes only the tree columns
    mask = torch.ones(3 * d + d * d, dtype=torch.bool)
    ops.build_tree_kernel_efficient(
        torch.tensor([[-1, 0]]), torch.tensor([[0, 1]]), seq, mask,
        torch.zeros(d, dtype=torch.int64), torch.zeros(1, d, dtype=torch.int64),
        torch.full((1, d), -1), torch.full((1, d), -1), 1, 2, d, 0,
    )  # fmt: skip
    rows = mask.view(d, 3 + d)  # each row: 3 prefix columns, then the tree
    assert rows[:, :3].all()
    assert torch.equal(rows[:, 3:], torch.tril(torch.ones(d, d, dtype=torch.bool)))


def test_verify_accepts_the_matching_prefix_and_writes_the_bonus() -> None:
    # chain of 4: root + drafts [7, 8, 9]; target argmax after each node: [7, 8, 5, 4]
    ri = torch.tensor([[0, 1, 2, 3]])
    rn = torch.tensor([[1, 2, 3, -1]])
    rs = torch.full((1, 4), -1)
    candidates = torch.tensor([[1, 7, 8, 9]])
    target = torch.tensor([[7, 8, 5, 4]])
    predicts = torch.full((4,), -1)
    accept_index = torch.full((1, 4), -1)
    accept_num = torch.zeros(1, dtype=torch.int64)
    ops.verify_tree_greedy(predicts, accept_index, accept_num, candidates, ri, rn, rs, target)
    assert accept_num.tolist() == [2]  # 7 and 8 accepted, 9 != 5 rejected
    assert accept_index.tolist() == [[0, 1, 2, -1]]
    assert predicts.tolist() == [7, 8, 5, -1]  # target tokens on the path, 5 the bonus


def test_fill_bonus_takes_the_last_accepted() -> None:
    out = torch.zeros(2, dtype=torch.int64)
    ops.fill_bonus_tokens(torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]), torch.tensor([2, 4]), out, 4)
    assert out.tolist() == [2, 8]


def test_cache_location_ops() -> None:
    req_to_token = torch.zeros(3, 10, dtype=torch.int32)
    ops.assign_req_to_token_pool(
        torch.tensor([2, 0]), req_to_token, torch.tensor([1, 4]), torch.tensor([3, 7]),
        torch.tensor([11, 12, 13, 14, 15]), 10,
    )  # fmt: skip
    assert req_to_token[2, 1:3].tolist() == [11, 12]
    assert req_to_token[0, 4:7].tolist() == [13, 14, 15]
    assert int(req_to_token.count_nonzero()) == 5

    table = torch.arange(30, dtype=torch.int32).view(3, 10)
    out = torch.zeros(6, dtype=torch.int64)
    ops.assign_draft_cache_locs_contiguous(
        torch.tensor([1, 2]), table, torch.tensor([4, 0]), out, 10, 1, 3
    )
    assert out.tolist() == [14, 15, 16, 20, 21, 22]

    out = torch.zeros(5, dtype=torch.int64)
    ops.assign_extend_cache_locs(
        torch.tensor([0, 2]), table, torch.tensor([2, 7]), torch.tensor([4, 10]), out, 10
    )
    assert out.tolist() == [2, 3, 27, 28, 29]


def test_copy_all_layer_kv_cache_moves_rows_in_every_layer() -> None:
    layers = [torch.arange(20, dtype=torch.float32).view(5, 4) + 100 * i for i in range(2)]
    before = [t.clone() for t in layers]
    ptrs = torch.tensor([t.data_ptr() for t in layers])
    strides = torch.tensor([t.stride(0) * t.element_size() for t in layers])
    ops.copy_all_layer_kv_cache(ptrs, strides, torch.tensor([0, 3]), torch.tensor([4, 1]))
    for t, b in zip(layers, before, strict=True):
        assert torch.equal(t[0], b[4])
        assert torch.equal(t[3], b[1])
        assert torch.equal(t[[1, 2, 4]], b[[1, 2, 4]])


def test_fallbacks_match_sglang_triton_kernels_in_the_interpreter() -> None:
    problem = sglang_import_problem()
    assert problem is None, f"SGLang 0.5.23 is needed for this check: {problem}"
    r = subprocess.run(
        [sys.executable, crosscheck.__file__, "16"],
        env=lane_env(), capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["cases"] == 16 * 4
    assert result["mismatches"] == []


def test_fallbacks_register_as_torch_ops_with_the_wrappers_signatures() -> None:
    """Through sgl_kernel's own Python wrappers, as SGLang calls them."""
    code = """
import torch, sys
sys.path.insert(0, sys.argv[1])
from fastmtp_cpu_lane.ops import FALLBACKS, register_fallbacks
defined = register_fallbacks()
assert sorted(defined) == sorted(FALLBACKS), defined
from sgl_kernel import fill_bonus_tokens_cpu
out = torch.zeros(1, dtype=torch.int64)
fill_bonus_tokens_cpu(torch.tensor([[3, 4, 5]]), torch.tensor([2]), out, 3)
assert out.tolist() == [4], out
print("ok")
"""
    lane_dir = str(crosscheck.__file__).rsplit("/", 1)[0]
    r = subprocess.run(
        [sys.executable, "-c", code, lane_dir], env=lane_env(), capture_output=True, text=True,
        check=False, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")
