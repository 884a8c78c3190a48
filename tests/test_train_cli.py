"""`lpgb-train`'s choices are read from the single definitions of the allowed values."""

from typing import get_type_hints

from lpgb.runtime.config import COMBINE_RULES, PRESETS, PROPOSAL_SOURCES
from lpgb.trainer import cli
from lpgb.trainer.config import CAPTIONERS, RPN_TARGETS, STAGES, RPNTrainConfig, SpatialTrainConfig


def _values(enum) -> list[str]:
    return [m.value for m in enum]


def test_cli_choices_are_the_config_definitions():
    assert _values(cli.Preset) == list(PRESETS)
    assert _values(cli.Stage) == ["all", *STAGES]
    assert _values(cli.CaptionerName) == list(CAPTIONERS)
    assert _values(cli.RpnTargets) == list(RPN_TARGETS)
    assert _values(cli.Combine) == list(COMBINE_RULES)
    assert _values(cli.Proposals) == list(PROPOSAL_SOURCES)


def test_train_config_literals_are_the_tuples():
    from typing import get_args

    assert get_args(get_type_hints(RPNTrainConfig)["targets"]) == RPN_TARGETS == ("motion", "boxes")
    assert get_args(get_type_hints(SpatialTrainConfig)["captioner"]) == CAPTIONERS == ("clip", "attributes", "file")
