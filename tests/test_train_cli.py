"""`lpgb-train`'s choices are read from the single definitions of the allowed values."""

from typing import get_type_hints

from lpgb.runtime.config import COMBINE_RULES, FLOW_PRESETS, PRESETS, PROPOSAL_SOURCES
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
    assert _values(cli.FlowPreset) == list(FLOW_PRESETS)


def test_flow_preset_is_set_for_a_new_run_and_refused_outside_calibrate(tmp_path):
    import pytest

    from lpgb.runtime.errors import LpgbError
    from lpgb.trainer.pipeline import TrainRequest, make_configs, prepare_run

    cfg, _ = make_configs(TrainRequest(data=tmp_path, out=tmp_path / "run", preset="tiny", flow="ultrafast"))
    assert cfg.flow.preset == "ultrafast"
    run = tmp_path / "run"
    prepare_run(TrainRequest(data=tmp_path, out=run, preset="tiny"))
    with pytest.raises(LpgbError, match="--stage calibrate"):
        prepare_run(TrainRequest(data=tmp_path, out=run, stage="spatial", flow="fast"))
    _, saved, _ = prepare_run(TrainRequest(data=tmp_path, out=run, stage="calibrate", flow="fast"))
    assert saved.flow.preset == "fast"
    with pytest.raises(LpgbError, match="flow.preset"):
        make_configs(TrainRequest(data=tmp_path, out=tmp_path / "x", flow="slow"))


def test_train_config_literals_are_the_tuples():
    from typing import get_args

    assert get_args(get_type_hints(RPNTrainConfig)["targets"]) == RPN_TARGETS == ("motion", "boxes", "single")
    assert get_args(get_type_hints(SpatialTrainConfig)["captioner"]) == CAPTIONERS == ("clip", "attributes", "file")
