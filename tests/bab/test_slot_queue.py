import torch

from verifier.bab.slot_queue import SlotQueue


def _push(q, values, priority, extra=None):
    fields = {"x": torch.tensor(values, dtype=torch.float64).unsqueeze(1)}
    if extra is not None:
        fields["opt"] = torch.tensor(extra, dtype=torch.float64)
    q.push(fields, torch.tensor(priority, dtype=torch.float64))


def test_pops_smallest_priorities_with_their_fields_across_growth():
    q = SlotQueue()
    gen = torch.Generator().manual_seed(0)
    pri = torch.rand(500, generator=gen, dtype=torch.float64)
    pushed = {}
    for start in range(0, 500, 37):  # many pushes: the storage grows several times
        p = pri[start:start + 37]
        _push(q, (p * 10).tolist(), p.tolist())
        pushed.update({float(v): float(v * 10) for v in p})
    assert len(q) == 500
    taken = []
    while len(q):
        fields, p = q.pop_smallest(64)
        assert torch.allclose(fields["x"][:, 0], p * 10)  # rows stay with their priority
        taken.append(p)
        if len(q) > 200:  # interleave pushes into freed slots
            p2 = torch.rand(10, generator=gen, dtype=torch.float64) + 2
            _push(q, (p2 * 10).tolist(), p2.tolist())
            pushed.update({float(v): float(v * 10) for v in p2})
    got = torch.cat(taken)
    assert sorted(got.tolist()) == sorted(pushed)
    # every pop returned the smallest of what was queued then: the first batch is the global min
    assert set(taken[0].tolist()) == set(sorted(pri.tolist())[:64])


def test_optional_field_is_filled_where_a_push_leaves_it_out_and_can_be_dropped():
    q = SlotQueue(fill=lambda name: -1.0 if name == "opt" else 0.0)
    _push(q, [1.0, 2.0], [0.1, 0.2])  # before "opt" exists
    _push(q, [3.0], [0.3], extra=[7.0])
    _push(q, [4.0], [0.05])  # after: left out
    fields, p = q.pop_smallest(10)
    by_x = dict(zip(fields["x"][:, 0].tolist(), fields["opt"].tolist(), strict=True))
    assert by_x == {1.0: -1.0, 2.0: -1.0, 3.0: 7.0, 4.0: -1.0}
    q.drop(["opt"])
    _push(q, [5.0], [0.0], extra=[1.0])
    assert set(q.fields) == {"x", "opt"} and len(q) == 1


def test_infinite_priorities_are_still_popped():
    q = SlotQueue()
    _push(q, [1.0, 2.0, 3.0], [float("inf"), 0.0, float("inf")])
    fields, p = q.pop_smallest(3)
    assert sorted(fields["x"][:, 0].tolist()) == [1.0, 2.0, 3.0] and len(q) == 0
