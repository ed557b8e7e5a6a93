import pytest

from selfsynth.cli import main
from selfsynth.config import RunConfig, load_config, parse_overrides
from selfsynth.errors import ConfigError


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_precedence_defaults_yaml_cli(tmp_path):
    p = write(tmp_path, "rounds: 3\nfinetune:\n  lr: 0.01\n  lora_r: 8\n")
    cfg = load_config(p, ["finetune.lr=2e-4", "data.root=/d", "model.path=/m"])
    assert cfg.rounds == 3
    assert cfg.finetune.lr == pytest.approx(2e-4)
    assert cfg.finetune.lora_r == 8
    assert cfg.finetune.lora_alpha == RunConfig().finetune.lora_alpha


def test_unknown_key_did_you_mean(tmp_path):
    p = write(tmp_path, "finetune:\n  lora_rank: 8\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'finetune.lora_rank'.*did you mean 'lora_r'"):
        load_config(p, require=())


def test_unknown_override_and_bad_type():
    with pytest.raises(ConfigError, match="did you mean 'rounds'"):
        load_config(None, ["round=2"], require=())
    with pytest.raises(ConfigError, match=r"rounds: expected int"):
        load_config(None, ["rounds=two"], require=())
    with pytest.raises(ConfigError, match="expected true or false"):
        load_config(None, ["finetune.augment=maybe"], require=())


def test_choices_and_required():
    with pytest.raises(
        ConfigError, match=r"sample.negatives='class' is not one of .*did you mean 'class_rest'"
    ):
        load_config(None, ["sample.negatives=class", "data.root=a", "model.path=b"])
    with pytest.raises(ConfigError, match="data.root is required"):
        load_config(None, ["model.path=b"])
    with pytest.raises(ConfigError, match=r"model.attention='fast' is not one of"):
        load_config(None, ["model.attention=fast", "data.root=a", "model.path=b"])


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "rounds: 2\nfinetune: [1,\n")
    with pytest.raises(ConfigError, match=r"c.yaml:\d+: not valid YAML"):
        load_config(p, require=())


def test_parse_overrides_nested_and_lists():
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}
    with pytest.raises(ConfigError, match="not of the form"):
        parse_overrides(["oops"])
    cfg = load_config(None, ["synthesize.pool_weights=[1, 0, 2]"], require=())
    assert cfg.synthesize.pool_weights == [1.0, 0.0, 2.0]


def test_every_recipe_loads():
    from pathlib import Path

    recipes = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert len(recipes) >= 7
    for r in recipes:
        cfg = load_config(r, ["data.root=/d", "model.path=/m"])
        assert cfg.select.tau == pytest.approx(0.1) and cfg.select.k == pytest.approx(0.4)


def test_gpu_recipes_need_model_and_data():
    from pathlib import Path

    recipe = Path(__file__).parents[2] / "configs" / "llava15_cub.yaml"
    with pytest.raises(ConfigError, match="is required"):
        load_config(recipe)
    cfg = load_config(recipe, ["data.root=/d", "model.path=/m"])
    assert (cfg.finetune.lora_r, cfg.finetune.lora_alpha, cfg.rounds) == (128, 256, 4)
    assert (cfg.describe.prompts, cfg.describe.samples, cfg.sample.top_p) == (3, 10, 0.6)


def test_cli_env_and_errors(capsys, tmp_path):
    assert main(["env", "--json"]) == 0
    assert '"torch"' in capsys.readouterr().out
    p = write(tmp_path, "bogus: 1\n")
    assert main(["run", str(p), "--run-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("selfsynth: error: unknown setting 'bogus'") and "Traceback" not in err


def test_extends_layers_a_recipe_on_its_parent(tmp_path):
    write(tmp_path, "rounds: 3\nselect:\n  k: 0.5\n  min_keep: 2\n", name="base.yaml")
    sub = tmp_path / "sub"
    sub.mkdir()
    child = write(sub, "extends: ../base.yaml\nselect:\n  min_keep: 5\n", name="child.yaml")
    cfg = load_config(child, ["rounds=2"], require=())
    # the child's key wins, the parent's sibling key stays, the command line wins over both
    assert (cfg.select.min_keep, cfg.select.k, cfg.rounds) == (5, 0.5, 2)


def test_extends_loop_missing_parent_and_bad_value(tmp_path):
    a = write(tmp_path, "extends: b.yaml\n", name="a.yaml")
    write(tmp_path, "extends: a.yaml\n", name="b.yaml")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(a, require=())
    c = write(tmp_path, "extends: nowhere.yaml\n", name="c.yaml")
    with pytest.raises(ConfigError, match="nowhere.yaml: config file not found"):
        load_config(c, require=())
    d = write(tmp_path, "extends: [a.yaml]\n", name="d.yaml")
    with pytest.raises(ConfigError, match="'extends' must be the path"):
        load_config(d, require=())


def test_the_grounded_world_recipe_changes_only_what_it_names():
    from pathlib import Path

    from selfsynth.config import to_dict
    from selfsynth.tracking.base import flat

    configs = Path(__file__).parents[2] / "configs"
    base = flat(to_dict(load_config(configs / "world.yaml", require=())))
    grounded = flat(to_dict(load_config(configs / "world_grounded.yaml", require=())))
    changed = {k for k in grounded if grounded[k] != base[k]}
    assert changed == {
        "name",
        "select.min_keep",
        "synthesize.answers",
        "sample.max_new_tokens",
        "sample.replay_first",
        "evaluate.max_new_tokens",
    }
