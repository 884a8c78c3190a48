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


# --- every field checked once, at construction (presets, config.json, model.json, overrides) -------------

BAD_FIELDS = [  # (section, field, value, what the one line says)
    ("proposals", "top_k", -1, "proposals.top_k must be >= 1; got -1"),
    ("proposals", "motion_history", -1, "proposals.motion_history must be >= 1"),
    ("proposals", "source", "lidar", "proposals.source must be one of rpn, motion, union"),
    ("proposals", "union_priority", "first", "proposals.union_priority must be one of score, motion"),
    ("proposals", "score_threshold", float("nan"), "proposals.score_threshold must be a finite number"),
    ("proposals", "nms_iou", 1.5, "proposals.nms_iou must be >= 0 and <= 1"),
    ("proposals", "rpn_input_size", [0, 240], "proposals.rpn_input_size must be >= 1"),
    ("proposals", "rpn_input_size", [160], "proposals.rpn_input_size must have 2 values"),
    ("proposals", "top_k", 2.5, "proposals.top_k must be an integer"),
    ("proposals", "merge_overlapping", "yes", "proposals.merge_overlapping must be true or false"),
    ("scoring", "min_event_frames", -1, "scoring.min_event_frames must be >= 1"),
    ("scoring", "smoothing_sigma", 1e9, "scoring.smoothing_sigma must be >= 0 and <= 100"),
    ("scoring", "hysteresis", float("inf"), "scoring.hysteresis must be a finite number"),
    ("scoring", "terms", ["velocity", 3], "scoring.terms (each value) must be a string"),
    ("smm", "discretisation", "euler", "smm.discretisation must be one of bilinear, zoh"),
    ("smm", "window", 0, "smm.window must be >= 1"),
    ("spatial", "num_queries", 0, "spatial.num_queries must be >= 1"),
    ("spatial", "label_smoothing", 1.0, "spatial.label_smoothing must be >= 0 and < 1"),
]


@pytest.mark.parametrize("section, name, value, message", BAD_FIELDS)
def test_a_bad_value_in_config_json_is_one_line(section, name, value, message, tmp_path):
    data = preset("tiny").to_dict()
    data[section][name] = value
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(LpgbError) as exc:
        LpgbConfig.load(tmp_path / "config.json")
    assert str(exc.value).startswith(f"config: {message}") and "\n" not in str(exc.value)


def test_literal_fields_are_checked_against_their_literal_choices():
    import typing
    from dataclasses import fields

    from lpgb.runtime.config import ProposalConfig, SMMConfig, SpatialConfig

    checked = 0
    for cls in (SpatialConfig, SMMConfig, ProposalConfig):
        for f in fields(cls):
            choices = typing.get_args(typing.get_type_hints(cls)[f.name])
            if typing.get_origin(typing.get_type_hints(cls)[f.name]) is typing.Literal:
                for choice in choices:
                    cls(**{f.name: choice})  # every listed choice is accepted
                with pytest.raises(LpgbError, match=f"must be one of {', '.join(choices)}"):
                    cls(**{f.name: "not-a-choice"})
                checked += 1
    assert checked >= 4  # source, union_priority, discretisation, smm.input_form (+ spatial.input_form)


def test_defaults_and_presets_pass_and_overrides_are_checked():
    from dataclasses import replace

    for name in PRESETS:
        preset(name)  # nothing a preset sets is refused
    cfg = preset("edge")
    with pytest.raises(LpgbError, match="proposals.top_k must be >= 1"):
        replace(cfg.proposals, top_k=0)
    with pytest.raises(LpgbError, match="config: proposals must be a ProposalConfig object"):
        replace(cfg, proposals={"top_k": 3})


# --- calibration numbers, checked where calibration.json / model.json are read ----------------------------

GOOD_CALIBRATION = {"terms": {"velocity": {"mean": 1.0, "std": 0.5}}, "normal_level": 0.1, "threshold": 2.0,
                    "n_frames": 40}


@pytest.mark.parametrize("change, message", [
    ({"terms": {"velocity": {"mean": float("nan"), "std": 0.5}}}, "score term 'velocity' has mean nan"),
    ({"terms": {"velocity": {"mean": 1.0, "std": 0.0}}}, "a finite std > 0 are needed"),
    ({"terms": {"velocity": {"mean": 1.0, "std": -1.0}}}, "a finite std > 0 are needed"),
    ({"terms": {"velocity": {"mean": 1.0, "std": float("inf")}}}, "a finite std > 0 are needed"),
    ({"threshold": float("nan")}, "threshold is nan, not a finite number"),
    ({"normal_level": float("-inf")}, "normal_level is -inf, not a finite number"),
    ({"n_frames": -3}, "n_frames -3"),
])
def test_calibration_is_checked_when_read(change, message, tmp_path):
    from lpgb.runtime.bundle import ModelBundle
    from lpgb.runtime.scoring import Calibration

    Calibration.from_dict(GOOD_CALIBRATION)
    preset("tiny").save(tmp_path / "config.json")
    (tmp_path / "calibration.json").write_text(json.dumps({**GOOD_CALIBRATION, **change}))  # NaN/Infinity literals
    with pytest.raises(LpgbError) as exc:
        ModelBundle.network_free(tmp_path)
    assert str(exc.value).startswith(f"{tmp_path / 'calibration.json'}: ") and message in str(exc.value)
    assert "\n" not in str(exc.value)
