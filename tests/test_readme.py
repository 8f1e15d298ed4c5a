"""The README stays true: its commands match CI, and its flag table matches train.py."""
import dataclasses
import re

from vae.config import Config

from conftest import ROOT, run_script


def readme():
    return (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"^    (python3 -m venv .*)$", readme(), flags=re.M)
    assert len(commands) >= 2
    test_command = commands[1].split(" && ", 2)[2]  # after creating and activating the venv
    assert "pytest" in test_command
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci


def test_first_command_trains_on_default_data_then_samples():
    first = re.findall(r"^    (python3 -m venv .*)$", readme(), flags=re.M)[0]
    assert "python train.py &&" in first and "--data" not in first
    assert "python sample.py --model runs/default" in first
    assert Config().out == "runs/default" and Config().data is None


def test_flag_table_lists_every_setting():
    table = readme().split("<!-- flags:start -->")[1].split("<!-- flags:end -->")[0]
    for field in dataclasses.fields(Config):
        assert f"`--{field.name}`" in table or f"`--no_{field.name}`" in table, field.name


def test_flag_table_is_what_config_generates():
    from vae.config import flags_markdown

    table = readme().split("<!-- flags:start -->\n")[1].split("\n<!-- flags:end -->")[0]
    assert table == flags_markdown()  # defaults and help included; regenerate with python -m vae.config


def test_the_in_your_own_code_example_runs(trained):
    code = readme().split("## In your own code")[1].split("```python\n")[1].split("```")[0]
    result = run_script("-c", code.replace('"runs/mine"', repr(str(trained[1]))))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "(16, 32, 32, 3) (16, 8)"
