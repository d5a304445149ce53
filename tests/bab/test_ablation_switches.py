"""Every issue-18 technique has an off switch on ``verify`` and ``bench`` (BabConfig flags)."""

from __future__ import annotations

import argparse

import pytest

from verifier.cli.common import add_bab_arguments, bab_settings
from verifier.config import BabConfig, VerifyConfig


def parsed(*argv: str) -> VerifyConfig:
    p = argparse.ArgumentParser()
    add_bab_arguments(p)
    return VerifyConfig(bab=BabConfig(**bab_settings(p.parse_args(list(argv)))))


def test_defaults_turn_every_technique_on():
    config = parsed()
    assert config.attack.guided and config.bab.guided_attack
    assert config.bab.seeded_attack and config.bab.adaptive_attack


@pytest.mark.parametrize(("flag", "field"), [("--no-seeded-attack", "seeded_attack"),
                                             ("--no-adaptive-attack", "adaptive_attack"),
                                             ("--no-guided-attack", "guided_attack")])
def test_each_switch_turns_off_its_technique_alone(flag, field):
    config = parsed(flag)
    off = {name for name in ("seeded_attack", "adaptive_attack", "guided_attack")
           if not getattr(config.bab, name)}
    assert off == {field}
    assert config.attack.guided == (field != "guided_attack")  # the falsify phase follows


def test_iterations_per_step_is_a_number_flag():
    assert parsed("--bab-iterations", "7").bab.step_iterations == 7
    assert parsed().bab.step_iterations == BabConfig().step_iterations


SEARCH_SWITCHES = [("--no-bab-root-refine", "root_refine"),
                   ("--no-bab-shrink-last-steps", "shrink_last_steps"),
                   ("--no-bab-drop-hopeless", "drop_hopeless"),
                   ("--no-bab-short-cascade", "short_cascade"),
                   ("--no-bab-cascade-give-up", "cascade_give_up"),
                   ("--no-bab-lazy-certify", "lazy_certify"),
                   ("--no-bab-chain-pass", "chain_pass")]


@pytest.mark.parametrize(("flag", "field"), SEARCH_SWITCHES)
def test_each_search_switch_reaches_the_neuron_split_options_alone(flag, field):
    from verifier.strategy import neuron_split_options

    names = [f for _, f in SEARCH_SWITCHES]
    assert all(getattr(neuron_split_options(parsed()), f) for f in names)
    options = neuron_split_options(parsed(flag))
    assert {f for f in names if not getattr(options, f)} == {field}


@pytest.mark.parametrize(("flag", "field"), [("--nogoods", "nogoods"), ("--cuts", "cuts")])
def test_nogoods_and_cuts_are_off_unless_asked_and_reach_the_search(flag, field):
    from verifier.strategy import neuron_split_options

    assert not neuron_split_options(parsed()).nogoods and not neuron_split_options(parsed()).cuts
    options = neuron_split_options(parsed(flag))
    assert {f for f in ("nogoods", "cuts") if getattr(options, f)} == {field}
