"""Cut trees: short searches from the root that split other neurons first, run only to learn
nogoods that the main search can use as cuts (``verifier.bab.cuts``).

A nogood learned inside the main tree holds the literals of its own branch, and each domain
still open in that tree contradicts one of them (its branch parted from the nogood's at some
split that strengthening could not drop): on oval21 base img590, 54 nogoods learned in 40 s
tightened no domain's bound. In the spirit of BICCOS's multi-tree search (Zhou et al. 2024),
trees that split a different top-scored neuron first learn nogoods over neurons the main tree
has not split, which stay free (and so usable as cuts) in its domains. Each tree is a few
ordinary search steps from a copy of the root whose only branching candidate is its first
neuron; its open domains are dropped when its time is up (the main search covers the region).
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from verifier.bab.domain_queue import DomainQueue
from verifier.bab.neuron_domains import NeuronDomains

CUT_TREES = 4  # trees, each first splitting one of the root's next-best candidates
CUT_TREE_SHARE = 0.1  # of the search's time, for all the trees


def grow_cut_trees(search, root: NeuronDomains, kink_inputs: dict, firsts: list[int],
                   share: float = CUT_TREE_SHARE) -> tuple[int, bool]:
    """Run the cut trees of ``search`` from ``root``, one per first split in ``firsts``
    (global neuron indices; its nogood learner observes every domain they verify); returns
    (the steps taken, whether a tree closed: each tree is a complete search of the root's
    region, so one whose queue empties with no domain left unsplittable proves it)."""
    if len(root) != 1 or not firsts:
        return 0, False
    end = time.monotonic() + share * max(0.0, search.deadline - time.monotonic())
    steps = 0
    for t, neuron in enumerate(firsts):
        stop = time.monotonic() + (end - time.monotonic()) / (len(firsts) - t)
        queue = DomainQueue()
        queue.kink_inputs = kink_inputs
        only = torch.full_like(root.candidates, -1)
        only[0, 0] = neuron
        queue.push(replace(root.select(torch.tensor([0], device=root.margin.device)),
                           candidates=only))
        stuck = search.counters.stuck
        while len(queue) and time.monotonic() < stop:
            size = search._step_size(len(queue))
            if size == 0:
                return steps, False
            search._step(queue, size)
            steps += 1
        if not len(queue) and search.counters.stuck == stuck:
            return steps, True
    return steps, False
