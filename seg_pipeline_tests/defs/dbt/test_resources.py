"""The dbt resource reads dbt's version in-process and still runs real dbt commands."""

from importlib.metadata import version as installed

from packaging import version

from seg_pipeline.defs.dbt.assets import dbt_executable, dbt_project
from seg_pipeline.defs.dbt.resources import LocalDbtCliResource


def test_version_comes_from_the_installed_dbt_core_and_commands_still_run(tmp_path):
    dbt = LocalDbtCliResource(project_dir=dbt_project, dbt_executable=dbt_executable())
    assert dbt._cli_version == version.parse(installed("dbt-core"))
    assert dbt._initialize_dbt_core_adapter(["ls"]) is None
    invocation = dbt.cli(["ls", "--resource-type", "model"], target_path=tmp_path).wait()
    assert invocation.is_successful()
    nodes = invocation.get_artifact("manifest.json")["nodes"]
    assert "model.seg_pipeline.customer_rfm" in nodes
