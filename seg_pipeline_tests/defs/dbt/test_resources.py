"""The dbt resource reads dbt's version in-process and still runs real dbt commands; a parse
started ahead for a run is what that run's dbt command reads, and the next run's re-parses only
the models that stamp the run id."""

from importlib.metadata import version as installed

from packaging import version

from seg_pipeline.defs.dbt.assets import dbt_project
from seg_pipeline.defs.dbt.invocation import (
    dbt_executable,
    dbt_vars,
    run_id_in_environ,
    start_parse,
    target_path,
    wait_for_parse,
)
from seg_pipeline.defs.dbt.resources import LocalDbtCliResource


def test_version_comes_from_the_installed_dbt_core_and_commands_still_run(tmp_path):
    dbt = LocalDbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())
    assert dbt._cli_version == version.parse(installed("dbt-core"))
    assert dbt._initialize_dbt_core_adapter(["ls"]) is None
    invocation = dbt.cli(["ls", "--resource-type", "model"], target_path=tmp_path).wait()
    assert invocation.is_successful()
    nodes = invocation.get_artifact("manifest.json")["nodes"]
    assert "model.seg_pipeline.customer_rfm" in nodes


def _partial_parse_messages(target) -> list[str]:
    log = (target / "dbt.log").read_text()
    return [line for line in log.splitlines() if "partial pars" in line.lower()]


def test_a_parse_started_for_a_run_is_reused_by_that_runs_dbt_command(tmp_path):
    work = tmp_path / "pub_work.duckdb"
    target = target_path(work)
    start_parse(work, "run-1")
    wait_for_parse(work)
    assert (target / "partial_parse.msgpack").exists()
    dbt = LocalDbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())

    def ls(run_id: str) -> list[str]:
        before = len(_partial_parse_messages(target))
        args = ["ls", "--resource-type", "model", "--vars", dbt_vars(work)]
        with run_id_in_environ(run_id):
            assert dbt.cli(args, target_path=target).wait().is_successful()
        return _partial_parse_messages(target)[before:]

    # The same run: dbt reads the saved parse instead of parsing the project again.
    assert any("Nothing changed, skipping partial parsing" in m for m in ls("run-1"))
    # The next run's id is an environment variable: dbt re-parses the models that read it
    # (those stamping run_id), not the whole project.
    changed = ls("run-2")
    assert not any("Unable to do partial parsing" in m for m in changed)
    assert any("Partial parsing enabled" in m and "files changed" in m for m in changed)
