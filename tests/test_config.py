import json

import pytest

from lpgb.runtime.config import CONFIG_VERSION, FlowConfig, ScoringConfig, PRESETS, LpgbConfig, config_differences, preset, with_overrides
from lpgb.runtime.errors import LpgbError
from lpgb.trainer.config import TrainConfig, train_preset


@pytest.mark.parametrize("name", PRESETS)
def test_presets_round_trip(name, tmp_path):
    cfg = preset(name)
    assert LpgbConfig.from_json(cfg.to_json()) == cfg
    cfg.save(tmp_path / "config.json")
    assert LpgbConfig.load(tmp_path / "config.json") == cfg
    tcfg = train_preset(name)
    assert TrainConfig.from_dict(json.loads(tcfg.to_json())) == tcfg


def test_box_target_rpn_schedule():
    from lpgb.trainer.config import BOX_TARGET_RPN

    motion, boxes = train_preset("tiny"), train_preset("tiny", "boxes")
    assert motion.rpn.targets == "motion" and boxes.rpn.targets == "boxes"
    assert (boxes.rpn.epochs, boxes.rpn.frames_per_video) == (BOX_TARGET_RPN["epochs"], BOX_TARGET_RPN["frames_per_video"])
    assert boxes.spatial == motion.spatial and boxes.temporal == motion.temporal
    # a train_config.json written before the field existed reads as motion targets
    data = json.loads(motion.to_json())
    del data["rpn"]["targets"]
    assert TrainConfig.from_dict(data) == motion
    with pytest.raises(LpgbError, match="unknown RPN targets"):
        train_preset("tiny", "labels")


def test_box_target_runs_serve_with_their_own_nms(tmp_path):
    from lpgb.trainer.config import BOX_TARGET_NMS_IOU
    from lpgb.trainer.pipeline import TrainRequest, make_configs

    motion_cfg, motion_train = make_configs(TrainRequest(data=tmp_path, out=tmp_path / "a", preset="tiny"))
    box_cfg, box_train = make_configs(TrainRequest(data=tmp_path, out=tmp_path / "b", preset="tiny", rpn_targets="boxes"))
    assert motion_train.rpn.targets == "motion" and motion_cfg == preset("tiny")
    assert box_train.rpn.targets == "boxes" and box_cfg.proposals.nms_iou == BOX_TARGET_NMS_IOU
    assert config_differences(motion_cfg, box_cfg) == ["proposals.nms_iou"]


def test_unknown_key_rejected():
    data = preset("tiny").to_dict()
    data["spatial"]["nonsense"] = 3
    with pytest.raises(LpgbError, match="unknown key.*nonsense"):
        LpgbConfig.from_dict(data)


def test_version_mismatch_rejected():
    data = preset("tiny").to_dict()
    data["version"] = 999
    with pytest.raises(LpgbError, match="version 999"):
        LpgbConfig.from_dict(data)


def test_configs_are_frozen():
    cfg = preset("edge")
    with pytest.raises(Exception):
        cfg.spatial.num_queries = 3  # type: ignore[misc]


def test_unknown_preset():
    with pytest.raises(LpgbError, match="unknown preset"):
        preset("huge")


def test_missing_config_file(tmp_path):
    with pytest.raises(LpgbError, match="no config"):
        LpgbConfig.load(tmp_path / "config.json")


def test_config_differences_names_changed_fields():
    base = preset("tiny")
    changed = with_overrides(base, proposals=with_overrides(base.proposals, merge_min_overlap=0.3, top_k=7))
    assert config_differences(base, base) == []
    assert config_differences(base, changed) == ["proposals.merge_min_overlap", "proposals.top_k"]
    # a key missing on one side (a config written by an older lpgb) counts as a difference
    old = base.to_dict()
    del old["proposals"]["merge_min_overlap"]
    assert config_differences(old, base.to_dict()) == ["proposals.merge_min_overlap"]


def test_version_1_config_keeps_its_motion_and_union_settings():
    """A run written before config version 2 serves as it was made, whatever the current defaults."""
    old = preset("tiny").to_dict()
    old["version"] = 1
    for key in ("motion_open", "motion_close", "motion_dilate", "union_priority"):
        del old["proposals"][key]
    cfg = LpgbConfig.from_dict(old)
    assert cfg.version == CONFIG_VERSION
    p = cfg.proposals
    assert (p.motion_open, p.motion_close, p.motion_dilate, p.union_priority) == (3, 7, 3, "score")
    assert p == preset("tiny").proposals  # nothing else moved (today's defaults are the version-1 values)
    # a version-1 file that does carry a value keeps it
    old["proposals"]["motion_close"] = 5
    assert LpgbConfig.from_dict(old).proposals.motion_close == 5
    with pytest.raises(LpgbError, match="version"):
        LpgbConfig.from_dict(dict(old, version=CONFIG_VERSION + 1))


def test_version_2_config_scores_with_the_smm_error_alone():
    """A run written before score terms serves with the paper's prediction error, as it was calibrated."""
    old = preset("edge").to_dict()
    old["version"] = 2
    for key in ("terms", "combine", "knn_k", "bank_size"):
        del old["scoring"][key]
    cfg = LpgbConfig.from_dict(old)
    assert cfg.version == CONFIG_VERSION and cfg.scoring.terms == ("smm",)
    assert preset("edge").scoring.terms != ("smm",)  # today's default differs, so the pin matters


def test_version_3_config_keeps_the_ultrafast_flow_it_was_fitted_with():
    """Velocity banks fitted on DIS-ultrafast flow are served with that flow, not today's default."""
    old = preset("edge").to_dict()
    old["version"] = 3
    del old["flow"]
    cfg = LpgbConfig.from_dict(old)
    assert cfg.version == CONFIG_VERSION and cfg.flow.preset == "ultrafast"
    assert preset("edge").flow.preset != "ultrafast"


def test_flow_config_is_validated_at_construction():
    with pytest.raises(LpgbError, match="flow.preset"):
        FlowConfig(preset="slow")
    with pytest.raises(LpgbError, match="max_width"):
        FlowConfig(max_width=4)


@pytest.mark.parametrize("changes, match", [
    ({"terms": ()}, "at least one term"), ({"terms": ("smm", "smm")}, "each once"),
    ({"combine": "mean"}, "combine"), ({"causal_smoothing": False}, "causal_smoothing"), ({"knn_k": 0}, "knn_k"), ({"threshold_quantile": 0.0}, "threshold_quantile"),
])
def test_scoring_config_is_validated_at_construction(changes, match):
    with pytest.raises(LpgbError, match=match):
        ScoringConfig(**changes)
