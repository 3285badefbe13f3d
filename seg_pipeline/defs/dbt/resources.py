"""The dbt CLI resource, minus two per-run costs that our in-process dbt-core does not need."""

from functools import cached_property

from dagster_dbt import DbtCliResource
from packaging import version


class LocalDbtCliResource(DbtCliResource):
    """dagster-dbt's ``DbtCliResource`` for a dbt-core installed beside this Python.

    Before every ``dbt`` command the stock resource runs ``dbt --version`` in a subprocess (which
    also asks PyPI for the latest release) and opens a dbt adapter in this process that only
    ``fetch_row_counts`` and ``fetch_column_metadata`` use, which we do not call. The version is
    read from the installed package instead and no adapter is opened. Both overrides are of
    private members: if dagster-dbt renames them, the stock behaviour simply returns.
    """

    @cached_property
    def _cli_version(self) -> version.Version:
        from dbt.version import __version__

        return version.parse(__version__)

    def _initialize_dbt_core_adapter(self, args):
        return None
